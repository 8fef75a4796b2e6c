"""Fault controls for a running lab: stop, freeze, reload a gateway, kill one of its workers.

The fault tests (tests/integration/test_faults.py, test_reload.py) use these
to make the failures nginx and gunicorn are meant to survive, on either target
(``target`` is the string ``lab status --json`` reports: "native" or "docker").

Two ways for a gateway to fail, because nginx answers them differently:

- ``stop_gateway`` / ``start_gateway``: the gateway is gone. Nothing listens on
  its port, a connection is refused, nginx answers 502 at once. Natively the
  gateway's process group is terminated and later started again with the same
  command and environment ``lab up`` uses; the new process group is written to
  ``native.json`` so ``lab down`` still stops exactly what runs. Under Docker:
  ``docker compose stop`` / ``start``, then an nginx reload (a restarted
  container may come back on another address; nginx resolves upstream names
  when it loads its config).
- ``kill_gateway``: gone at once, whatever it was doing (SIGKILL; works on a
  frozen gateway too); ``start_gateway`` brings it back.
- ``freeze_gateway`` / ``thaw_gateway``: the gateway hangs. Its processes are
  stopped (SIGSTOP to the process group; ``docker compose pause`` uses the
  cgroup freezer), the kernel still accepts connections on its listening
  socket, nobody answers: nginx waits ``proxy_read_timeout`` and answers 504.
  Nothing is restarted, so no state changes.

``restart_nginx`` stops nginx and starts it again (what a crash and a restart
policy, or a host reboot, would do): the active mode of "/" must survive it.

``reload_gateway`` sends SIGHUP to the gunicorn master (gracefully replaces
its workers); ``worker_family`` and ``kill_worker`` find and SIGKILL one worker
by the pid a response named in X-Gateway-Worker. The same small Python
program reads ``/proc`` on the host or inside the container, so both targets
answer the same question the same way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from lab import native
from lab.config import LabConfig, Limits
from lab.docker import NGINX, SERVICES, compose_args
from lab.target import LabError, is_healthy, wait_until

START_DEADLINE_S: Final = 30.0
COMMAND_TIMEOUT_S: Final = 60.0

# Given a worker pid: its master (the parent) and every worker of that master.
# Runs as ``python -c`` on the host or in a gateway container; stdlib only.
_FAMILY_PROGRAM: Final = """
import json, os, sys
def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()
worker = int(sys.argv[1])
try:
    master = int(stat(worker)[1])
except OSError:
    print(json.dumps(None)); sys.exit(0)
kids = []
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            fields = stat(name)
        except OSError:
            continue
        if int(fields[1]) == master and fields[0] != "Z":
            kids.append(int(name))
print(json.dumps({"master": master, "workers": sorted(kids)}))
"""


@dataclass(frozen=True)
class Family:
    """A gunicorn master and its live workers."""

    master: int
    workers: tuple[int, ...]


# -- small helpers -----------------------------------------------------------------


def _service(mode: str) -> str:
    if mode not in SERVICES:
        raise LabError(f"unknown mode {mode!r}")
    return SERVICES[mode]


def _run(args: list[str], timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise LabError(f"`{' '.join(args[:6])} …` failed: {proc.stderr.strip() or proc.stdout}")
    return proc


def _compose(*args: str, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return _run(compose_args(*args), timeout=timeout)


def _native_state(cfg: LabConfig) -> native.RunState:
    state = native.load_state(cfg)
    if state is None:
        raise LabError(f"no native lab recorded in {cfg.state_dir}: `lab up` first")
    return state


def _native_group(cfg: LabConfig, mode: str) -> int:
    return _native_state(cfg).groups[_service(mode)]


def _gateway_url(cfg: LabConfig, mode: str) -> str:
    return f"http://127.0.0.1:{cfg.gateway_ports[mode]}/healthz"


def _running_config(cfg: LabConfig, state: native.RunState) -> LabConfig:
    """``cfg`` with the limits the running lab was started with (native.json)."""
    if not state.limits:
        return cfg
    return replace(cfg, limits=Limits(**state.limits))


# -- gone: stop and start -------------------------------------------------------------


def stop_gateway(cfg: LabConfig, target: str, mode: str) -> None:
    """Stop one gateway: its port refuses connections until ``start_gateway``."""
    if target == "docker":
        _compose("stop", "--timeout", "10", _service(mode))
        return
    native.stop_groups({_service(mode): _native_group(cfg, mode)})


def kill_gateway(cfg: LabConfig, target: str, mode: str) -> None:
    """SIGKILL every process of one gateway, even a frozen one: gone, nothing finished.

    Docker does not restart a container killed this way (``docker kill`` counts
    as a manual stop for ``restart: unless-stopped``); ``start_gateway`` does.
    """
    if target == "docker":
        _compose("kill", "--signal", "KILL", _service(mode))
        return
    pgid = _native_group(cfg, mode)
    os.killpg(pgid, signal.SIGKILL)
    if not wait_until(lambda: not native.group_alive(pgid), 10.0, interval_s=0.05):
        raise LabError(f"{_service(mode)} (process group {pgid}) survived SIGKILL")
    reap_children()


def start_gateway(cfg: LabConfig, target: str, mode: str) -> None:
    """Start a stopped gateway again; return once it (and nginx's route to it) is healthy."""
    if target == "docker":
        _compose("start", _service(mode))
        _wait_docker_healthy(mode)
        # The container may have a new address; nginx resolved the old one.
        _compose("exec", "-T", NGINX, "lab-nginx", "reload")
    else:
        _start_native(cfg, mode)
    if not wait_until(lambda: _routed(cfg, mode), START_DEADLINE_S, interval_s=0.2):
        raise LabError(f"the {mode} gateway did not answer through nginx after its restart")


def _routed(cfg: LabConfig, mode: str) -> bool:
    return is_healthy(f"{cfg.url}/{mode}/healthz", timeout=2.0)


def _start_native(cfg: LabConfig, mode: str) -> None:
    """Start the gateway as ``lab up`` does and record its new process group."""
    state = _native_state(cfg)
    service = _service(mode)
    previous = state.groups.get(service)
    if previous and native.group_alive(previous):
        raise LabError(f"{service} is still running (process group {previous})")
    cmd, env = native.gateway_process(_running_config(cfg, state), mode, cfg.gateway_ports[mode])
    log = cfg.state_dir / "logs" / f"gateway-{mode}.log"
    proc = native.spawn(cmd, log, env)  # its own process group, as `lab up` starts it
    _CHILDREN[proc.pid] = proc
    # Re-read just before writing: only this service's entry changes.
    state = _native_state(cfg)
    state.groups[service] = proc.pid
    native.save_state(cfg, state)
    if not wait_until(lambda: is_healthy(_gateway_url(cfg, mode), 1.0), START_DEADLINE_S):
        raise LabError(f"{service} did not become healthy; see {log}")


def restart_nginx(cfg: LabConfig, target: str) -> None:
    """Stop nginx and start it again; return once it answers its health check."""
    if target == "docker":
        _compose("restart", "--timeout", "10", NGINX)
    else:
        state = _native_state(cfg)
        native.stop_groups({"nginx": state.groups["nginx"]})
        log = cfg.state_dir / "logs" / "nginx-error.log"
        proc = native.spawn(native.nginx_command(state.nginx, cfg), log, dict(os.environ))
        _CHILDREN[proc.pid] = proc
        state = _native_state(cfg)
        state.groups["nginx"] = proc.pid
        native.save_state(cfg, state)
    if not wait_until(lambda: is_healthy(f"{cfg.url}/nginx-health", 1.0), START_DEADLINE_S):
        raise LabError("nginx did not answer its health check after a restart")


# Gateways this process started: polled now and then so none stays a zombie.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def reap_children() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


def _wait_docker_healthy(mode: str) -> None:
    def healthy() -> bool:
        ps = subprocess.run(
            compose_args("ps", "--format", "{{.Health}}", _service(mode)),
            capture_output=True,
            text=True,
            check=False,
        )
        return ps.stdout.strip() == "healthy"

    if not wait_until(healthy, START_DEADLINE_S + 30, interval_s=0.5):
        raise LabError(f"{_service(mode)} did not become healthy after `docker compose start`")


# -- hung: freeze and thaw ------------------------------------------------------------


def freeze_gateway(cfg: LabConfig, target: str, mode: str) -> None:
    """Stop every process of one gateway where it stands (SIGSTOP / cgroup freezer)."""
    if target == "docker":
        _compose("pause", _service(mode))
        return
    os.killpg(_native_group(cfg, mode), signal.SIGSTOP)


def thaw_gateway(cfg: LabConfig, target: str, mode: str) -> None:
    if target == "docker":
        _compose("unpause", _service(mode))
        return
    os.killpg(_native_group(cfg, mode), signal.SIGCONT)


# -- gunicorn: graceful reload, workers -------------------------------------------------


def reload_gateway(cfg: LabConfig, target: str, mode: str) -> None:
    """SIGHUP to the gunicorn master: new workers start, old ones finish their requests.

    Natively the master leads the gateway's process group; under Docker tini
    (``init: true``) is PID 1 and forwards the signal to it.
    """
    if target == "docker":
        _compose("kill", "--signal", "HUP", _service(mode))
        return
    os.kill(_native_group(cfg, mode), signal.SIGHUP)


def worker_family(target: str, mode: str, worker_pid: int) -> Family | None:
    """The master of ``worker_pid`` and all its live workers; None when it is gone."""
    if target == "docker":
        args = compose_args(
            "exec", "-T", _service(mode), "python", "-c", _FAMILY_PROGRAM, str(worker_pid)
        )
    else:
        args = [sys.executable, "-c", _FAMILY_PROGRAM, str(worker_pid)]
    data = json.loads(_run(args).stdout)
    if data is None:
        return None
    return Family(master=data["master"], workers=tuple(data["workers"]))


def kill_worker(target: str, mode: str, worker_pid: int) -> None:
    """SIGKILL one gunicorn worker (a pid from an X-Gateway-Worker header)."""
    if target == "docker":
        program = f"import os, signal; os.kill({int(worker_pid)}, signal.SIGKILL)"
        _compose("exec", "-T", _service(mode), "python", "-c", program)
        return
    os.kill(worker_pid, signal.SIGKILL)


# -- nginx's access log ---------------------------------------------------------------


def access_log(cfg: LabConfig, target: str) -> list[dict[str, object]]:
    """nginx's JSON access log lines (one dict per request nginx parsed)."""
    if target == "docker":
        text = _compose("logs", "--no-color", "--no-log-prefix", NGINX).stdout
    else:
        path: Path = cfg.state_dir / "logs" / "nginx-access.log"
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # an error-log line that happens to start with "{"
    return entries
