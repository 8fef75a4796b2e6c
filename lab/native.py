"""The native target: the host's nginx and three gateway processes on loopback.

Everything a run needs lives in the state directory (``.lab/`` by default):

- ``nginx/``: the rendered config (``lab.nginx_conf``), pid file, temp files;
- ``logs/``: ``gateway-<mode>.log``, ``nginx-error.log``, ``nginx-access.log``;
- ``native.json``: the process groups ``up`` and ``scale`` started, the
  replicas per mode, the limits in force.

``scale MODE N`` runs N gateways of one mode: replica 0 is the one ``up``
started (service ``gateway-<mode>``), replica i >= 1 is service
``gateway-<mode>-<i+1>`` on the port ``lab.nginx_conf.replica_port`` gives
(LAB_PORT + 10*k + i, k = 1, 2, 3 for cgi, wsgi, asgi), logging to
``logs/gateway-<mode>-<i+1>.log``. ``down`` stops them with the rest.

Each service is started in its own session (its own process group), so
``down`` can stop a gunicorn master together with its workers, and stops only
the groups recorded in ``native.json``. nginx runs in the foreground (``daemon
off``) as the current user, so no root is needed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

from lab import nginx_conf
from lab.config import MODES, ROOT, LabConfig
from lab.target import (
    DEFAULT_MODE,
    LabError,
    LimitsDict,
    StatusDict,
    accepting_workers,
    active_label,
    apply_split,
    check_mode,
    check_replicas,
    gateway_env,
    is_healthy,
    limits_dict,
    read_proc,
    wait_for_mode,
    wait_for_reload,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

STATE_FILE: Final = "native.json"
START_DEADLINE_S: Final = 30.0
STOP_DEADLINE_S: Final = 10.0
# How long a scale-down waits for nginx's old workers to finish their requests.
DRAIN_DEADLINE_S: Final = 15.0
LOG_TAIL_LINES: Final = 30
START_MARKER: Final = "--- lab up: "
# Makes the lab's local CA and nginx's certificate; the nginx image runs it too.
MAKE_CERTS: Final = ROOT / "nginx" / "make-certs.sh"
NGINX_CANDIDATES: Final = (
    "/usr/sbin/nginx",
    "/usr/local/sbin/nginx",
    "/usr/local/nginx/sbin/nginx",
)


def say(message: str) -> None:
    print(message, flush=True)


# -- recorded state -----------------------------------------------------------------


@dataclass
class RunState:
    """What ``up`` started: service name -> process group id, and how nginx runs."""

    groups: dict[str, int] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)  # mode -> N when N > 1
    nginx: str = ""
    port: int = 0
    tls_port: int = 0
    limits: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0


def _paths(cfg: LabConfig) -> dict[str, Path]:
    nginx_dir = cfg.state_dir / "nginx"
    return {
        "state": cfg.state_dir / STATE_FILE,
        "nginx_dir": nginx_dir,
        "conf": nginx_dir / "nginx.conf",
        "active": nginx_dir / nginx_conf.ACTIVE_FILE,
        "logs": cfg.state_dir / "logs",
        "nginx_log": cfg.state_dir / "logs" / "nginx-error.log",
    }


def _gateway_log(cfg: LabConfig, mode: str) -> Path:
    return cfg.state_dir / "logs" / f"gateway-{mode}.log"


def replica_service(mode: str, index: int) -> str:
    """The service name of replica ``index`` (0-based): gateway-wsgi, gateway-wsgi-2, ..."""
    return f"gateway-{mode}" if index == 0 else f"gateway-{mode}-{index + 1}"


def _service_log(cfg: LabConfig, service: str) -> Path:
    return cfg.state_dir / "logs" / f"{service}.log"


def gateway_process(cfg: LabConfig, mode: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run gateway ``mode`` on 127.0.0.1:``port``.

    The environment is this process's plus ``cfg``'s limits (``GATEWAY_*``).
    """
    cmd = [
        sys.executable, "-m", "gateway", "serve", "--mode", mode,
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    return cmd, os.environ | gateway_env(cfg)


def load_state(cfg: LabConfig) -> RunState | None:
    try:
        data = json.loads(_paths(cfg)["state"].read_text(encoding="utf-8"))
        return RunState(**data)
    except (OSError, ValueError, TypeError):
        return None


def save_state(cfg: LabConfig, state: RunState) -> None:
    path = _paths(cfg)["state"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# -- processes ---------------------------------------------------------------------


def group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` runs (zombies waiting to be reaped do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process group: not ours to manage
    states = _group_states(pgid)
    return states is None or any(state != "Z" for state in states)


def _group_states(pgid: int) -> list[str] | None:
    """Process states ("R", "S", "Z", ...) of the members of ``pgid``; None without /proc."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    states = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid):
            states.append(fields[0])
    return states


def _leader_is_ours(pgid: int, service: str) -> bool:
    """Guard against a recycled pid: the group leader must still be nginx or a gateway."""
    try:
        cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return True  # leader gone; the group id cannot be reused while members remain
    marker = "nginx" if service == "nginx" else "gateway"
    return marker in cmdline


def stop_groups(groups: dict[str, int], deadline_s: float = STOP_DEADLINE_S) -> None:
    """SIGTERM each process group (service -> pgid), wait up to ``deadline_s``, then SIGKILL."""
    ours = {s: g for s, g in groups.items() if group_alive(g) and _leader_is_ours(g, s)}
    for pgid in ours.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    if _wait_gone(ours.values(), deadline_s):
        return
    for service, pgid in ours.items():
        if group_alive(pgid):
            say(f"{service} did not stop within {deadline_s:.0f}s: killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    _wait_gone(ours.values(), 5.0)


def _wait_gone(pgids: Iterable[int], deadline_s: float) -> bool:
    pending = set(pgids)
    end = time.monotonic() + deadline_s
    while pending and time.monotonic() < end:
        for pgid in list(pending):
            _reap(pgid)
            if not group_alive(pgid):
                pending.discard(pgid)
        if pending:
            time.sleep(0.05)
    return not pending


def _reap(pid: int) -> None:
    """Collect our own exited child, if it is one, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def spawn(cmd: list[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a session (process group) of its own, output appended to ``log``.

    A START_MARKER line with the time and the command goes first, so ``tail``
    shows only what the latest start wrote. The group id is the returned pid.
    """
    with log.open("ab") as out:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        out.write(f"{START_MARKER}{stamp} {' '.join(cmd)}\n".encode())
        out.flush()
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=dict(env),
            start_new_session=True,
        )


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` written since the last start marker."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    all_lines = text.splitlines()
    starts = [i for i, line in enumerate(all_lines) if line.startswith(START_MARKER)]
    recent = all_lines[starts[-1] + 1 :] if starts else all_lines
    return "\n".join(recent[-lines:]) or f"({path} has nothing since the last start)"


def replica_counts(state: RunState | None) -> dict[str, int]:
    """Gateways per mode for ``lab status``: 1 unless ``scale`` recorded more."""
    recorded = state.replicas if state is not None else {}
    return {m: recorded.get(m, 1) for m in MODES}


def replica_ports(cfg: LabConfig, mode: str, replicas: int) -> list[int]:
    return [nginx_conf.replica_port(cfg.port, mode, i) for i in range(replicas)]


# -- nginx -------------------------------------------------------------------------


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((c for c in NGINX_CANDIDATES if os.access(c, os.X_OK)), None)


def ensure_nginx() -> str:
    """The nginx binary; installs Debian's nginx-light with apt-get when there is none."""
    if found := find_nginx():
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise LabError(
            "nginx is not installed: install it with your package manager, "
            "or install Docker and run `make up` (LAB_TARGET=docker)"
        )
    cmd = [apt, "install", "-y", "--no-install-recommends", "nginx-light"]
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise LabError("nginx is not installed: run `sudo apt-get install nginx-light`")
        cmd = ["sudo", *cmd]
    say(f"nginx is not installed; installing it: {' '.join(cmd)}")
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0 or (found := find_nginx()) is None:
        raise LabError("could not install nginx-light: run `apt-get install nginx-light` yourself")
    return found


def nginx_command(nginx: str, cfg: LabConfig) -> list[str]:
    p = _paths(cfg)
    # -p: prefix for relative paths; -c: our config; -e: errors before the
    # config is read go to our log, not the distribution's /var/log/nginx.
    return [nginx, "-p", str(p["nginx_dir"]), "-c", str(p["conf"]), "-e", str(p["nginx_log"])]


def nginx_test(nginx: str, cfg: LabConfig) -> None:
    proc = subprocess.run(
        [*nginx_command(nginx, cfg), "-t", "-q"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise LabError(
            f"`nginx -t` rejected the rendered config in {_paths(cfg)['nginx_dir']}:\n"
            f"{proc.stderr.strip() or tail(_paths(cfg)['nginx_log'], 10)}"
        )


def native_values(cfg: LabConfig, replicas: Mapping[str, int] | None = None) -> dict[str, str]:
    return nginx_conf.target_values(
        "native",
        limits=cfg.limits,
        port=cfg.port,
        state_dir=cfg.state_dir,
        replicas=replicas,
        tls_port=cfg.tls_port,
    )


def make_certs(tls_dir: Path) -> str:
    """The lab's CA and nginx's certificate in ``tls_dir``, each made only when missing
    (nginx/make-certs.sh); returns what the script said it made."""
    proc = subprocess.run(
        ["sh", str(MAKE_CERTS), str(tls_dir)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise LabError(f"could not make the lab's TLS certificates:\n{proc.stderr.strip()}")
    return proc.stdout.strip()


def render_config(cfg: LabConfig, mode: str | dict[str, int] | None) -> None:
    p = _paths(cfg)
    values = native_values(cfg)
    if isinstance(mode, dict):
        files = nginx_conf.render(values, None, mode)
    else:
        files = nginx_conf.render(values, mode or DEFAULT_MODE)
    nginx_conf.make_runtime_dirs(values)
    nginx_conf.write_files(p["nginx_dir"], files)


def active_mode(cfg: LabConfig) -> str | dict[str, int] | None:
    try:
        return nginx_conf.read_active_mode(_paths(cfg)["active"].read_text(encoding="utf-8"))
    except OSError:
        return None


# -- the target --------------------------------------------------------------------


class NativeTarget:
    name = "native"

    def is_running(self, cfg: LabConfig) -> bool:
        state = load_state(cfg)
        return state is not None and any(group_alive(g) for g in state.groups.values())

    def healthy(self, cfg: LabConfig) -> dict[str, bool]:
        checks = {f"gateway-{m}": f"http://127.0.0.1:{cfg.gateway_ports[m]}/healthz" for m in MODES}
        checks["nginx"] = cfg.url + "/nginx-health"
        return {name: is_healthy(url, timeout=1.0) for name, url in checks.items()}

    def up(self, cfg: LabConfig) -> None:
        state = load_state(cfg)
        if state is not None and self.is_running(cfg):
            health = self.healthy(cfg)
            if all(health.values()) and (state.port, state.tls_port) == (cfg.port, cfg.tls_port):
                say(f"the lab is already running (native) at {cfg.url}")
                return
            broken = ", ".join(n for n, ok in health.items() if not ok) or "a port changed"
            say(f"the lab is running but not healthy ({broken}): restarting it")
            self.down(cfg)
        self._check_ports(cfg)
        nginx = ensure_nginx()
        if made := make_certs(cfg.tls_dir):
            say(made)
        render_config(cfg, active_mode(cfg))
        nginx_test(nginx, cfg)
        state = RunState(
            nginx=nginx,
            port=cfg.port,
            tls_port=cfg.tls_port,
            limits=cast(dict[str, int], limits_dict(cfg)),
            started_at=time.time(),
        )
        try:
            self._start(cfg, state)
            self._wait_healthy(cfg, state)
        except BaseException:
            self.down(cfg, quiet=True)
            raise
        say(f"the lab is up (native, active mode {self._active_label(cfg)}): {cfg.url}")
        say(f"over TLS and HTTP/2: {cfg.tls_url} (trust {cfg.ca_file})")

    def _check_ports(self, cfg: LabConfig) -> None:
        wanted = {f"gateway-{m}": cfg.gateway_ports[m] for m in MODES} | {
            "nginx": cfg.port,
            "nginx (TLS)": cfg.tls_port,
        }
        hints = {"nginx": "LAB_PORT", "nginx (TLS)": "LAB_TLS_PORT"}
        for service, port in wanted.items():
            if port_in_use(port):
                hint = f" or set {hints[service]} to a free port" if service in hints else ""
                raise LabError(
                    f"port {port} on 127.0.0.1 (for {service}) is already in use by another "
                    f"process: stop it (`ss -ltnp 'sport = :{port}'` shows which){hint}"
                )

    def _start(self, cfg: LabConfig, state: RunState) -> None:
        logs = _paths(cfg)["logs"]
        logs.mkdir(parents=True, exist_ok=True)
        for mode in MODES:
            cmd, env = gateway_process(cfg, mode, cfg.gateway_ports[mode])
            state.groups[f"gateway-{mode}"] = spawn(cmd, _gateway_log(cfg, mode), env).pid
            save_state(cfg, state)
        nginx_log = _paths(cfg)["nginx_log"]
        state.groups["nginx"] = spawn(nginx_command(state.nginx, cfg), nginx_log, os.environ).pid
        save_state(cfg, state)

    def _wait_healthy(self, cfg: LabConfig, state: RunState) -> None:
        urls = {f"gateway-{m}": f"http://127.0.0.1:{cfg.gateway_ports[m]}/healthz" for m in MODES}
        urls["nginx"] = cfg.url + "/nginx-health"
        pending = dict(urls)
        end = time.monotonic() + START_DEADLINE_S
        while pending:
            for service, url in list(pending.items()):
                pgid = state.groups[service]
                _reap(pgid)
                if not group_alive(pgid):
                    raise self._failure(cfg, service, "exited during start-up")
                if is_healthy(url, timeout=1.0):
                    del pending[service]
            if pending and time.monotonic() > end:
                service = next(iter(pending))
                raise self._failure(
                    cfg,
                    service,
                    f"did not answer {pending[service]} within {START_DEADLINE_S:.0f}s",
                )
            if pending:
                time.sleep(0.1)

    @staticmethod
    def _failure(cfg: LabConfig, service: str, what: str) -> LabError:
        log = _paths(cfg)["nginx_log"] if service == "nginx" else _service_log(cfg, service)
        return LabError(
            f"{service} {what}; stopped what was started. Last lines of {log}:\n{tail(log)}"
        )

    def down(self, cfg: LabConfig, quiet: bool = False) -> None:
        state = load_state(cfg)
        if state is None:
            if not quiet:
                say("the lab is not running (native): nothing to stop")
            return
        # nginx first, so no new request reaches a gateway that is going away;
        # then the gateways together (each takes a moment to stop its workers).
        nginx = {s: g for s, g in state.groups.items() if s == "nginx"}
        gateways = {s: g for s, g in state.groups.items() if s != "nginx"}
        for batch in (nginx, gateways):
            alive = {s: g for s, g in batch.items() if group_alive(g)}
            if alive and not quiet:
                say("stopping " + ", ".join(f"{s} (process group {g})" for s, g in alive.items()))
            stop_groups(alive)
        _paths(cfg)["state"].unlink(missing_ok=True)
        if not quiet:
            say("the lab is down (native)")

    def status(self, cfg: LabConfig) -> StatusDict:
        state = load_state(cfg)
        running = self.is_running(cfg)
        limits = limits_dict(cfg)
        port, tls_port = cfg.port, cfg.tls_port
        if state is not None and running:
            limits = cast(LimitsDict, state.limits) if state.limits else limits
            port = state.port or port
            tls_port = state.tls_port or tls_port
        return {
            "target": self.name,
            "url": f"http://127.0.0.1:{port}",
            "tls_url": f"https://127.0.0.1:{tls_port}",
            "ca_file": str(cfg.ca_file),
            "running": running,
            "active_mode": self._active_label(cfg),
            "gateways": {m: f"http://127.0.0.1:{cfg.gateway_ports[m]}" for m in MODES},
            "limits": limits,
            "replicas": replica_counts(state if running else None),
        }

    def _active_label(self, cfg: LabConfig) -> str | None:
        return active_label(active_mode(cfg))

    def switch(self, cfg: LabConfig, mode: str) -> None:
        check_mode(mode)
        self.apply_active(cfg, mode)
        wait_for_mode(cfg, mode)
        say(f"switched: {cfg.url}/ is now served by {mode}")

    def split(self, cfg: LabConfig, weights: Mapping[str, int] | None) -> None:
        self._running_nginx(cfg)
        apply_split(
            cfg,
            weights,
            # No active_mode.conf: nginx was rendered with the default (render_config).
            active_mode(cfg) or DEFAULT_MODE,
            apply=lambda checked: self.apply_active(cfg, checked),
            switch=lambda mode: self.switch(cfg, mode),
            say=say,
        )

    @staticmethod
    def _running_nginx(cfg: LabConfig) -> RunState:
        state = load_state(cfg)
        if state is None or "nginx" not in state.groups or not group_alive(state.groups["nginx"]):
            raise LabError("the lab is not running (native): start it with `lab up`")
        return state

    def apply_active(self, cfg: LabConfig, active: str | dict[str, int]) -> None:
        """Rewrite active_mode.conf, test the config, reload nginx; restore the file on failure.

        Returns once nginx runs with the new config (``wait_for_reload``).
        """
        state = self._running_nginx(cfg)
        mode, split = (None, active) if isinstance(active, dict) else (active, None)
        text = nginx_conf.render_active_mode(mode, split)
        self._reload_with(cfg, state, nginx_conf.ACTIVE_FILE, text)

    def _reload_with(self, cfg: LabConfig, state: RunState, name: str, text: str) -> set[int]:
        """Write one config file, ``nginx -t``, reload; put the old file back if the test fails.

        Returns the nginx workers that accepted connections before the reload,
        once none of them does any more (``wait_for_reload``).
        """
        path = _paths(cfg)["nginx_dir"] / name
        before = path.read_text(encoding="utf-8") if path.exists() else None
        nginx_conf.write_files(path.parent, {name: text})
        try:
            nginx_test(state.nginx, cfg)
        except LabError:
            if before is not None:
                nginx_conf.write_files(path.parent, {name: before})
            raise
        # SIGHUP: nginx re-reads the config, starts new workers, and lets the old
        # ones finish the requests they hold (a graceful reload: none dropped).
        master = state.groups["nginx"]
        old_workers = accepting_workers(read_proc(), master)
        os.kill(master, signal.SIGHUP)
        wait_for_reload(read_proc, master, old_workers)
        return old_workers

    # -- replicas ------------------------------------------------------------------

    def scale(self, cfg: LabConfig, mode: str, replicas: int) -> None:
        """Run ``replicas`` gateways of ``mode`` behind nginx (see ``lab.target``).

        Up: start the missing replicas, wait for each one's /healthz, then
        reload nginx with all of them. Down: reload nginx without the surplus,
        wait until nginx's old workers have finished with it, then stop it.
        """
        check_mode(mode)
        check_replicas(replicas)
        state = self._running_nginx(cfg)
        current = state.replicas.get(mode, 1)
        if replicas > current:
            self._scale_up(cfg, state, mode, current, replicas)
        elif replicas < current:
            self._scale_down(cfg, state, mode, current, replicas)
        ports = ", ".join(str(p) for p in replica_ports(cfg, mode, replicas))
        say(f"gateway-{mode}: {replicas} replica(s) behind nginx (ports {ports})")

    def _scale_up(
        self, cfg: LabConfig, state: RunState, mode: str, current: int, wanted: int
    ) -> None:
        ports = replica_ports(cfg, mode, wanted)
        new = {replica_service(mode, i): ports[i] for i in range(current, wanted)}
        for service, port in new.items():
            if port_in_use(port):
                raise LabError(
                    f"port {port} on 127.0.0.1 (for {service}) is already in use by another "
                    f"process: stop it (`ss -ltnp 'sport = :{port}'` shows which), "
                    "or run the lab on another LAB_PORT"
                )
        started: dict[str, int] = {}
        try:
            for service, port in new.items():
                cmd, env = gateway_process(cfg, mode, port)
                started[service] = spawn(cmd, _service_log(cfg, service), env).pid
                state.groups[service] = started[service]
                save_state(cfg, state)
            self._wait_replicas(cfg, started, new)
            replicas = state.replicas | {mode: wanted}
            text = nginx_conf.render_upstreams(native_values(cfg, replicas))
            self._reload_with(cfg, state, nginx_conf.UPSTREAMS_FILE, text)
        except BaseException:
            # nginx still has the previous set (or kept it: `nginx -t` failed).
            stop_groups(started)
            for service in started:
                state.groups.pop(service, None)
            save_state(cfg, state)
            raise
        state.replicas[mode] = wanted
        save_state(cfg, state)

    def _wait_replicas(
        self, cfg: LabConfig, groups: Mapping[str, int], ports: Mapping[str, int]
    ) -> None:
        pending = {s: f"http://127.0.0.1:{ports[s]}/healthz" for s in groups}
        end = time.monotonic() + START_DEADLINE_S
        while pending:
            for service, url in list(pending.items()):
                _reap(groups[service])
                if not group_alive(groups[service]):
                    raise self._failure(cfg, service, "exited during start-up")
                if is_healthy(url, timeout=1.0):
                    del pending[service]
            if pending and time.monotonic() > end:
                service, url = next(iter(pending.items()))
                raise self._failure(
                    cfg, service, f"did not answer {url} within {START_DEADLINE_S:.0f}s"
                )
            if pending:
                time.sleep(0.1)

    def _scale_down(
        self, cfg: LabConfig, state: RunState, mode: str, current: int, wanted: int
    ) -> None:
        replicas = state.replicas | {mode: wanted}
        text = nginx_conf.render_upstreams(native_values(cfg, replicas))
        old_workers = self._reload_with(cfg, state, nginx_conf.UPSTREAMS_FILE, text)
        surplus = {replica_service(mode, i) for i in range(wanted, current)}
        groups = {s: g for s, g in state.groups.items() if s in surplus}
        if wanted > 1:
            state.replicas[mode] = wanted
        else:
            state.replicas.pop(mode, None)
        for service in groups:
            del state.groups[service]
        save_state(cfg, state)
        # Old nginx workers finish the requests they hold, some of them on the
        # surplus replicas: let them, then stop the replicas (gunicorn's SIGTERM
        # is graceful too, for anything still in flight after DRAIN_DEADLINE_S).
        if not wait_until(
            lambda: not old_workers & {pid for pid, _, _ in read_proc()}, DRAIN_DEADLINE_S
        ):
            say(f"nginx's old workers still hold connections after {DRAIN_DEADLINE_S:.0f}s")
        stop_groups(groups)

    def logs(self, cfg: LabConfig, follow: bool) -> None:
        p = _paths(cfg)
        files = [_gateway_log(cfg, m) for m in MODES]
        files += sorted(p["logs"].glob("gateway-*-*.log"))  # replicas (`lab scale`)
        files += [p["nginx_log"], p["logs"] / "nginx-access.log"]
        existing = [str(f) for f in files if f.exists()]
        if not existing:
            raise LabError(f"no logs in {p['logs']}: the lab has not run here (`lab up`)")
        cmd = ["tail", "-n", "40", *(["-F"] if follow else []), *existing]
        with contextlib.suppress(KeyboardInterrupt):
            subprocess.run(cmd, check=False)
