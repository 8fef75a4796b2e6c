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

from gateway.servers.registry import default_server
from lab import nginx_conf
from lab.config import MODES, ROOT, LabConfig
from lab.servers import (
    check_choice,
    chosen_servers,
    healthy,
    http_address,
    wait_for_server,
    worker_counts,
)
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
    limits: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    servers: dict[str, str] = field(default_factory=dict)  # mode -> server (`lab server`)
    slots: dict[str, int] = field(default_factory=dict)  # mode -> 1 when on its other port


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


def gateway_process(
    cfg: LabConfig, mode: str, port: int, server: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run gateway ``mode`` on 127.0.0.1:``port``.

    ``server`` picks the server behind the mode (None: its default). The
    environment is this process's plus ``cfg``'s limits (``GATEWAY_*``).
    """
    cmd = [
        sys.executable, "-m", "gateway", "serve", "--mode", mode,
        "--server", server or default_server(mode),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    return cmd, os.environ | gateway_env(cfg)


# A mode's gateway listens on one of two ports: its base port (LAB_PORT+1..+3),
# or, after `lab server` has swapped its server, the other one (LAB_PORT+4..+6),
# so the new server starts before the old one stops. The next swap goes back.
SLOT_OFFSET: Final = 4


def slot_port(cfg: LabConfig, mode: str, slot: int) -> int:
    if slot == 0:
        return cfg.gateway_ports[mode]
    return cfg.port + SLOT_OFFSET + MODES.index(mode)


def base_ports(cfg: LabConfig, state: RunState | None) -> dict[str, int]:
    """The port of each mode's first gateway, whichever slot it is on."""
    slots = state.slots if state is not None else {}
    return {m: slot_port(cfg, m, slots.get(m, 0)) for m in MODES}


def servers_in_force(state: RunState | None) -> dict[str, str]:
    recorded = state.servers if state is not None else {}
    return {m: recorded.get(m) or default_server(m) for m in MODES}


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


def native_values(
    cfg: LabConfig,
    replicas: Mapping[str, int] | None = None,
    bases: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """The placeholders for this lab; ``bases`` moves a mode's first gateway to another port."""
    values = nginx_conf.target_values(
        "native", limits=cfg.limits, port=cfg.port, state_dir=cfg.state_dir, replicas=replicas
    )
    for mode, port in (bases or {}).items():
        addresses = values[f"{mode}_server"].split()
        values[f"{mode}_server"] = " ".join([f"127.0.0.1:{port}", *addresses[1:]])
    return values


def render_config(
    cfg: LabConfig, mode: str | dict[str, int] | None, servers: Mapping[str, str] | None = None
) -> None:
    p = _paths(cfg)
    values = native_values(cfg)
    if isinstance(mode, dict):
        files = nginx_conf.render(values, None, mode, servers=servers)
    else:
        files = nginx_conf.render(values, mode or DEFAULT_MODE, servers=servers)
    nginx_conf.make_runtime_dirs(values)
    nginx_conf.write_files(p["nginx_dir"], files)


def rendered_servers(cfg: LabConfig) -> dict[str, str]:
    """mode -> server recorded in the rendered pass_<mode>.conf files (the last `lab server`)."""
    found = {}
    for mode in MODES:
        try:
            text = (_paths(cfg)["nginx_dir"] / nginx_conf.pass_file(mode)).read_text("utf-8")
        except OSError:
            continue
        if (record := nginx_conf.read_server(text)) is not None:
            found[mode] = record[1]
    return found


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
        state = load_state(cfg)
        servers, ports = servers_in_force(state), base_ports(cfg, state)
        health = {f"gateway-{m}": healthy("127.0.0.1", ports[m], m, servers[m]) for m in MODES}
        return health | {"nginx": is_healthy(cfg.url + "/nginx-health", timeout=1.0)}

    def up(self, cfg: LabConfig) -> None:
        state = load_state(cfg)
        if state is not None and self.is_running(cfg):
            health = self.healthy(cfg)
            if all(health.values()) and state.port == cfg.port:
                say(f"the lab is already running (native) at {cfg.url}")
                return
            broken = ", ".join(n for n, ok in health.items() if not ok) or "its port changed"
            say(f"the lab is running but not healthy ({broken}): restarting it")
            self.down(cfg)
        # LAB_SERVER_<MODE>, else the server the last `lab server` recorded: a bad
        # name stops here, before anything starts.
        servers = chosen_servers(os.environ, rendered_servers(cfg))
        self._check_ports(cfg)
        nginx = ensure_nginx()
        render_config(cfg, active_mode(cfg), servers)
        nginx_test(nginx, cfg)
        state = RunState(
            nginx=nginx,
            port=cfg.port,
            limits=cast(dict[str, int], limits_dict(cfg)),
            started_at=time.time(),
            servers=servers,
        )
        try:
            self._start(cfg, state)
            self._wait_healthy(cfg, state)
        except BaseException:
            self.down(cfg, quiet=True)
            raise
        say(f"the lab is up (native, active mode {self._active_label(cfg)}): {cfg.url}")

    def _check_ports(self, cfg: LabConfig) -> None:
        wanted = {f"gateway-{m}": cfg.gateway_ports[m] for m in MODES} | {"nginx": cfg.port}
        for service, port in wanted.items():
            if port_in_use(port):
                hint = " or set LAB_PORT to a free port" if service == "nginx" else ""
                raise LabError(
                    f"port {port} on 127.0.0.1 (for {service}) is already in use by another "
                    f"process: stop it (`ss -ltnp 'sport = :{port}'` shows which){hint}"
                )

    def _start(self, cfg: LabConfig, state: RunState) -> None:
        logs = _paths(cfg)["logs"]
        logs.mkdir(parents=True, exist_ok=True)
        for mode in MODES:
            cmd, env = gateway_process(cfg, mode, cfg.gateway_ports[mode], state.servers[mode])
            state.groups[f"gateway-{mode}"] = spawn(cmd, _gateway_log(cfg, mode), env).pid
            save_state(cfg, state)
        nginx_log = _paths(cfg)["nginx_log"]
        state.groups["nginx"] = spawn(nginx_command(state.nginx, cfg), nginx_log, os.environ).pid
        save_state(cfg, state)

    def _wait_healthy(self, cfg: LabConfig, state: RunState) -> None:
        urls = {f"gateway-{m}": f"127.0.0.1:{cfg.gateway_ports[m]}/healthz" for m in MODES}
        urls["nginx"] = cfg.url + "/nginx-health"
        pending = dict(urls)
        end = time.monotonic() + START_DEADLINE_S
        while pending:
            for service in list(pending):
                pgid = state.groups[service]
                _reap(pgid)
                if not group_alive(pgid):
                    raise self._failure(cfg, service, "exited during start-up")
                if self._answers(cfg, state, service):
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
    def _answers(cfg: LabConfig, state: RunState, service: str) -> bool:
        """nginx's /nginx-health, or a gateway's /healthz in its server's protocol."""
        if service == "nginx":
            return is_healthy(cfg.url + "/nginx-health", timeout=1.0)
        mode = service.removeprefix("gateway-")
        port = base_ports(cfg, state)[mode]
        return healthy("127.0.0.1", port, mode, servers_in_force(state)[mode])

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
        port = cfg.port
        if state is not None and running:
            limits = cast(LimitsDict, state.limits) if state.limits else limits
            port = state.port or port
        live = state if running else None
        servers = servers_in_force(live) if live else chosen_servers(os.environ, {})
        ports = base_ports(cfg, live)
        gateways = {m: http_address(m, servers[m], "127.0.0.1", ports[m]) for m in MODES}
        return {
            "target": self.name,
            "url": f"http://127.0.0.1:{port}",
            "running": running,
            "active_mode": self._active_label(cfg),
            # Only gateways that speak HTTP: fcgiwrap and the uwsgi server do not.
            "gateways": {m: url for m, url in gateways.items() if url is not None},
            "servers": servers,
            "workers": worker_counts(servers, cfg.limits),
            "limits": limits,
            "replicas": replica_counts(live),
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
        return self._reload_with_files(cfg, state, {name: text})

    def _reload_with_files(
        self, cfg: LabConfig, state: RunState, files: Mapping[str, str]
    ) -> set[int]:
        """``_reload_with`` for several files at once: all new, or (test failed) all as before."""
        nginx_dir = _paths(cfg)["nginx_dir"]
        before = {
            name: (nginx_dir / name).read_text(encoding="utf-8")
            for name in files
            if (nginx_dir / name).exists()
        }
        nginx_conf.write_files(nginx_dir, files)
        try:
            nginx_test(state.nginx, cfg)
        except LabError:
            nginx_conf.write_files(nginx_dir, before)
            raise
        # SIGHUP: nginx re-reads the config, starts new workers, and lets the old
        # ones finish the requests they hold (a graceful reload: none dropped).
        master = state.groups["nginx"]
        old_workers = accepting_workers(read_proc(), master)
        os.kill(master, signal.SIGHUP)
        wait_for_reload(read_proc, master, old_workers)
        return old_workers

    # -- the server behind a mode ---------------------------------------------------

    def server(self, cfg: LabConfig, mode: str, server: str) -> None:
        """Put ``server`` behind ``mode``'s route without dropping a request (lab/servers.py).

        Start it on the mode's other port and wait for its /healthz; rewrite
        pass_<mode>.conf and upstreams.conf and reload nginx; once nginx's old
        workers have finished with the old server, stop it. A server that
        does not come up is stopped again and the old one keeps serving.
        """
        check_mode(mode)
        check_choice(mode, server)
        state = self._running_nginx(cfg)
        current = servers_in_force(state)[mode]
        if current == server:
            say(f"{mode} is already served by {server}")
            return
        if state.replicas.get(mode, 1) > 1:
            raise LabError(
                f"{mode} runs {state.replicas[mode]} replicas: `lab scale {mode} 1` first, "
                "then swap its server"
            )
        slot = 1 - state.slots.get(mode, 0)
        port = slot_port(cfg, mode, slot)
        if port_in_use(port):
            raise LabError(
                f"port {port} on 127.0.0.1 (for the new {mode} server) is already in use: stop "
                f"whatever holds it (`ss -ltnp 'sport = :{port}'`) or use another LAB_PORT"
            )
        service = f"gateway-{mode}"
        incoming = f"{service}-{server}"
        cmd, env = gateway_process(cfg, mode, port, server)
        pgid = spawn(cmd, _service_log(cfg, incoming), env).pid
        state.groups[incoming] = pgid
        save_state(cfg, state)
        answered = False
        try:
            self._wait_replicas(cfg, {incoming: pgid}, {incoming: port}, mode, server)
            answered = True
            bases = base_ports(cfg, state) | {mode: port}
            files = {
                nginx_conf.pass_file(mode): nginx_conf.render_pass(
                    mode, server, native_values(cfg)
                ),
                nginx_conf.UPSTREAMS_FILE: nginx_conf.render_upstreams(
                    native_values(cfg, state.replicas, bases)
                ),
            }
            old_workers = self._reload_with_files(cfg, state, files)
        except BaseException as exc:
            stop_groups({incoming: pgid})
            state.groups.pop(incoming, None)
            save_state(cfg, state)
            if not isinstance(exc, LabError):
                raise
            # One line: why the new server is not serving (its own last words when
            # it did not come up), and that nothing changed.
            log = [line for line in tail(_service_log(cfg, incoming)).splitlines() if line]
            why = log[-1].strip() if log and not answered else str(exc).splitlines()[0]
            what = "was not taken into nginx" if answered else "did not start"
            raise LabError(f"{mode} stays on {current}: {server} {what} ({why})") from None
        old = state.groups.pop(service)
        state.groups[service] = state.groups.pop(incoming)
        state.servers[mode] = server
        state.slots[mode] = slot
        save_state(cfg, state)
        # nginx's old workers finish the requests they hold on the old server; then stop it.
        if not wait_until(
            lambda: not old_workers & {pid for pid, _, _ in read_proc()}, DRAIN_DEADLINE_S
        ):
            say(f"nginx's old workers still hold connections after {DRAIN_DEADLINE_S:.0f}s")
        stop_groups({service: old})
        wait_for_server(cfg, mode, server)
        say(f"{mode}: {cfg.url}/{mode}/ is now served by {server} (was {current}, port {port})")

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
                cmd, env = gateway_process(cfg, mode, port, servers_in_force(state)[mode])
                started[service] = spawn(cmd, _service_log(cfg, service), env).pid
                state.groups[service] = started[service]
                save_state(cfg, state)
            self._wait_replicas(cfg, started, new, mode, servers_in_force(state)[mode])
            replicas = state.replicas | {mode: wanted}
            text = nginx_conf.render_upstreams(native_values(cfg, replicas, base_ports(cfg, state)))
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
        self,
        cfg: LabConfig,
        groups: Mapping[str, int],
        ports: Mapping[str, int],
        mode: str,
        server: str,
    ) -> None:
        pending = {s: f"127.0.0.1:{ports[s]}/healthz ({server})" for s in groups}
        end = time.monotonic() + START_DEADLINE_S
        while pending:
            for service in list(pending):
                _reap(groups[service])
                if not group_alive(groups[service]):
                    raise self._failure(cfg, service, "exited during start-up")
                if healthy("127.0.0.1", ports[service], mode, server):
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
        text = nginx_conf.render_upstreams(native_values(cfg, replicas, base_ports(cfg, state)))
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
