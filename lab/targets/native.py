"""The native target: the host's nginx and three gateway processes on loopback.

Everything a run needs lives in the state directory (``.lab/`` by default,
``lab.targets.native_nginx.Paths``):

- ``nginx/``: the rendered config (``lab.nginx.render``), pid file, temp files;
- ``logs/``: ``gateway-<mode>.log``, ``nginx-error.log``, ``nginx-access.log``;
- ``native.json``: the process groups ``up`` and ``scale`` started, the
  replicas per mode, the limits in force.

``scale MODE N`` runs N gateways of one mode: replica 0 is the one ``up``
started (service ``gateway-<mode>``), replica i >= 1 is service
``gateway-<mode>-<i+1>`` on the port ``lab.routing.replica_port`` gives.

Each service is started in its own session (``lab.system.processes``), so
``down`` can stop a gunicorn master together with its workers, and stops only
the groups recorded in ``native.json``. nginx runs in the foreground (``daemon
off``) as the current user, so no root is needed. LAB_MODE (the mode at first
start) and LAB_GATEWAY_WORKERS are honoured as under Docker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import Final, cast

from lab.errors import LabError
from lab.nginx import render as nginx_conf
from lab.routing import MODES, active_label, replica_port
from lab.servers import check_choice, chosen_servers
from lab.settings import ROOT, LabSettings
from lab.system import processes, procfs
from lab.system.http import is_healthy, wait_until
from lab.system.ports import in_use_message, port_free
from lab.system.procfs import read_proc
from lab.targets import LimitsDict, StatusDict, control_process
from lab.targets.control_process import SERVICE as CONTROL
from lab.targets.native_nginx import (
    Paths,
    active_mode,
    ensure_nginx,
    make_certs,
    master_alive,
    native_values,
    nginx_command,
    nginx_test,
    reload_with,
    render_config,
    rendered_servers,
)
from lab.targets.native_server import (
    base_ports,
    gateway_check,
    gateway_process,
    health_checks,
    http_gateways,
    live_workers,
    servers_in_force,
    swap_server,
)
from lab.targets.state import RunState, load_state, replica_service, save_state
from lab.targets.switching import (
    apply_split,
    check_mode,
    check_replicas,
    drain_old_workers,
    limits_dict,
    wait_for_mode,
)

START_DEADLINE_S: Final = 30.0
START_MARKER: Final = processes.START_MARKER


def say(message: str) -> None:
    print(message, flush=True)


def spawn_service(cfg: LabSettings, service: str, cmd: list[str], env: Mapping[str, str]) -> int:
    """Start one service as ``lab up`` does (own session, log in logs/); its group id."""
    log = Paths(cfg.state_dir).service_log(service)
    return processes.spawn(cmd, log, env, cwd=ROOT).pid


def start_failure(cfg: LabSettings, failed: processes.StartFailed) -> LabError:
    log = Paths(cfg.state_dir).service_log(failed.service)
    return LabError(
        f"{failed}; stopped what was started. Last lines of {log}:\n{processes.tail(log)}"
    )


class NativeTarget:
    name = "native"

    def is_running(self, cfg: LabSettings) -> bool:
        state = load_state(cfg)
        return state is not None and any(processes.group_alive(g) for g in state.groups.values())

    def healthy(self, cfg: LabSettings, state: RunState | None = None) -> dict[str, bool]:
        """Each service: answers its health check (nginx: and its master runs)."""
        health = {
            name: check() if callable(check) else is_healthy(check, timeout=1.0)
            for name, check in health_checks(cfg, state).items()
        }
        # nginx's workers keep answering for a while after its master is killed.
        master = (state.groups.get("nginx") if state else None) or 0
        health["nginx"] = health["nginx"] and master_alive(master)
        return health

    def up(self, cfg: LabSettings) -> None:
        state = load_state(cfg)
        if state is not None and self.is_running(cfg):
            health = self.healthy(cfg, state)
            if all(health.values()) and (state.port, state.tls_port) == (cfg.port, cfg.tls_port):
                self._ensure_control(cfg, state)
                say(f"the lab is already running (native) at {cfg.url}")
                return
            broken = ", ".join(n for n, ok in health.items() if not ok) or "a port changed"
            say(f"the lab is running but not healthy ({broken}): restarting it")
            self.down(cfg)
        # LAB_SERVER_<MODE>, else the server the last `lab server` recorded: a bad
        # name stops here, before anything starts.
        servers = chosen_servers(os.environ, rendered_servers(cfg))
        self._check_ports(cfg)
        nginx = ensure_nginx(say)
        if made := make_certs(cfg.tls_dir):
            say(made)
        render_config(cfg, active_mode(cfg) or cfg.mode, servers)
        nginx_test(nginx, cfg)
        state = RunState(
            nginx=nginx,
            port=cfg.port,
            tls_port=cfg.tls_port,
            limits=cast(dict[str, int], limits_dict(cfg)),
            gateway_workers=cfg.gateway_workers,
            started_at=time.time(),
            servers=servers,
        )
        try:
            self._start(cfg, state)
            picker = lambda: control_process.answering(cfg, self.name)  # noqa: E731
            checks = health_checks(cfg, state) | {CONTROL: picker}
            services = {s: (state.groups[s], check) for s, check in checks.items()}
            processes.wait_healthy(services, START_DEADLINE_S)
        except processes.StartFailed as failed:
            self.down(cfg, quiet=True)
            raise start_failure(cfg, failed) from None
        except BaseException:
            self.down(cfg, quiet=True)
            raise
        say(f"the lab is up (native, active mode {active_label(active_mode(cfg))}): {cfg.url}")
        say(f"over TLS and HTTP/2: {cfg.tls_url} (trust {cfg.ca_file})")

    def _check_ports(self, cfg: LabSettings) -> None:
        wanted = {f"gateway-{m}": cfg.gateway_ports[m] for m in MODES}
        wanted |= {"nginx": cfg.port, "nginx (TLS)": cfg.tls_port}
        hints = {"nginx": "LAB_PORT", "nginx (TLS)": "LAB_TLS_PORT"}
        for service, port in wanted.items():
            if not port_free(port):
                hint = f" or set {hints[service]} to a free port" if service in hints else ""
                raise LabError(in_use_message(port, service, hint))

    def _start(self, cfg: LabSettings, state: RunState) -> None:
        for mode in MODES:
            cmd, env = gateway_process(cfg, mode, cfg.gateway_ports[mode], state.servers[mode])
            state.groups[f"gateway-{mode}"] = spawn_service(cfg, f"gateway-{mode}", cmd, env)
            save_state(cfg, state)
        cmd = nginx_command(state.nginx, cfg)
        state.groups["nginx"] = spawn_service(cfg, "nginx", cmd, os.environ)
        save_state(cfg, state)
        self._start_control(cfg, state)

    def _start_control(self, cfg: LabSettings, state: RunState) -> None:
        """The dashboard's server picker (lab/control.py), on a socket for the lab's user."""
        state.groups[CONTROL] = control_process.spawn(cfg, self.name, os.environ, None)
        save_state(cfg, state)

    def _ensure_control(self, cfg: LabSettings, state: RunState) -> None:
        """A running lab whose control process is gone gets it back (only it)."""
        if control_process.answering(cfg, self.name):
            return
        if pgid := state.groups.get(CONTROL):
            processes.stop_groups({CONTROL: pgid}, say=say)
        self._start_control(cfg, state)
        control_process.wait_answers(cfg, self.name, state.groups[CONTROL])
        say("restarted the dashboard's server picker (it was not answering)")

    def down(self, cfg: LabSettings, quiet: bool = False) -> None:
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
            alive = {s: g for s, g in batch.items() if processes.group_alive(g)}
            if alive and not quiet:
                say("stopping " + ", ".join(f"{s} (process group {g})" for s, g in alive.items()))
            processes.stop_groups(alive, say=say)
        Paths(cfg.state_dir).state.unlink(missing_ok=True)
        if not quiet:
            say("the lab is down (native)")

    def status(self, cfg: LabSettings) -> StatusDict:
        state = load_state(cfg)
        limits = limits_dict(cfg)
        port, tls_port = cfg.port, cfg.tls_port
        services = {name: False for name in health_checks(cfg, None)}
        workers = {m: 0 for m in MODES}
        live = state if state is not None and self.is_running(cfg) else None
        servers = (
            servers_in_force(live) if live else chosen_servers(os.environ, rendered_servers(cfg))
        )
        if live is not None:
            limits = cast(LimitsDict, live.limits) if live.limits else limits
            port, tls_port = live.port or port, live.tls_port or tls_port
            services = self.healthy(cfg, live)
            workers = self.workers(live)
        running = all(services.values())
        return {
            "target": self.name,
            "url": f"http://127.0.0.1:{port}",
            "tls_url": f"https://127.0.0.1:{tls_port}",
            "ca_file": str(cfg.ca_file),
            "running": running,
            "active_mode": active_label(active_mode(cfg)),
            "gateways": http_gateways(cfg, live),
            "servers": servers,
            "limits": limits,
            "services": services,
            "workers": workers,
            "replicas": replica_counts(state if state is not None and running else None),
        }

    @staticmethod
    def workers(state: RunState) -> dict[str, int]:
        return live_workers(state)

    def switch(self, cfg: LabSettings, mode: str) -> None:
        check_mode(mode)
        self.apply_active(cfg, mode)
        wait_for_mode(cfg, mode)
        say(f"switched: {cfg.url}/ is now served by {mode}")

    def split(self, cfg: LabSettings, weights: Mapping[str, int] | None) -> None:
        self._running_nginx(cfg)
        apply_split(
            cfg,
            weights,
            # No active_mode.conf: nginx was rendered with LAB_MODE (render_config).
            active_mode(cfg) or cfg.mode,
            apply=lambda checked: self.apply_active(cfg, checked),
            switch=lambda mode: self.switch(cfg, mode),
            say=say,
        )

    @staticmethod
    def _running_nginx(cfg: LabSettings) -> RunState:
        state = load_state(cfg)
        if state is None or "nginx" not in state.groups:
            raise LabError("the lab is not running (native): start it with `lab up`")
        if not master_alive(state.groups["nginx"]):
            raise LabError(
                "nginx's master process is not running (native): `lab up` restarts the lab"
            )
        return state

    def apply_active(self, cfg: LabSettings, active: str | dict[str, int]) -> None:
        """Rewrite active_mode.conf and reload nginx (the old file back on any failure)."""
        state = self._running_nginx(cfg)
        mode, split = (None, active) if isinstance(active, dict) else (active, None)
        text = nginx_conf.render_active_mode(mode, split, cfg.templates)
        reload_with(cfg, state.nginx, state.groups["nginx"], nginx_conf.ACTIVE_FILE, text)

    def services(self, cfg: LabSettings) -> NativeServices:
        return NativeServices(cfg)

    # -- the server behind a mode ---------------------------------------------------

    def server(self, cfg: LabSettings, mode: str, server: str) -> None:
        """Put ``server`` behind ``mode``'s route, dropping no request (``swap_server``)."""
        check_mode(mode)
        check_choice(mode, server)
        state = self._running_nginx(cfg)

        def start(service: str, port: int) -> int:
            cmd, env = gateway_process(state.settings(cfg), mode, port, server)
            return spawn_service(cfg, service, cmd, env)

        swap_server(cfg, state, mode, server, start=start, save=lambda: save_state(cfg, state))

    # -- replicas ------------------------------------------------------------------

    def scale(self, cfg: LabSettings, mode: str, replicas: int) -> None:
        """Run ``replicas`` gateways of ``mode`` behind nginx (see ``lab.targets``).

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
        ports = ", ".join(str(replica_port(cfg.port, mode, i)) for i in range(replicas))
        say(f"gateway-{mode}: {replicas} replica(s) behind nginx (ports {ports})")

    def _scale_up(
        self, cfg: LabSettings, state: RunState, mode: str, current: int, wanted: int
    ) -> None:
        new = {
            replica_service(mode, i): replica_port(cfg.port, mode, i)
            for i in range(current, wanted)
        }
        for service, port in new.items():
            if not port_free(port):
                raise LabError(
                    in_use_message(port, service, ", or run the lab on another LAB_PORT")
                )
        started: dict[str, int] = {}
        try:
            server = servers_in_force(state)[mode]
            for service, port in new.items():
                cmd, env = gateway_process(cfg, mode, port, server)
                started[service] = spawn_service(cfg, service, cmd, env)
                state.groups[service] = started[service]
                save_state(cfg, state)
            processes.wait_healthy(
                {s: (started[s], gateway_check(mode, server, new[s])) for s in started},
                START_DEADLINE_S,
            )
            text = nginx_conf.render_upstreams(
                native_values(
                    cfg,
                    servers_in_force(state),
                    state.replicas | {mode: wanted},
                    base_ports(cfg, state),
                ),
                cfg.templates,
            )
            reload_with(cfg, state.nginx, state.groups["nginx"], nginx_conf.UPSTREAMS_FILE, text)
        except BaseException as exc:
            # nginx still has the previous set (or kept it: `nginx -t` failed).
            processes.stop_groups(started, say=say)
            for service in started:
                state.groups.pop(service, None)
            save_state(cfg, state)
            if isinstance(exc, processes.StartFailed):
                raise start_failure(cfg, exc) from None
            raise
        state.replicas[mode] = wanted
        save_state(cfg, state)

    def _scale_down(
        self, cfg: LabSettings, state: RunState, mode: str, current: int, wanted: int
    ) -> None:
        text = nginx_conf.render_upstreams(
            native_values(
                cfg,
                servers_in_force(state),
                state.replicas | {mode: wanted},
                base_ports(cfg, state),
            ),
            cfg.templates,
        )
        master = state.groups["nginx"]
        old_workers = reload_with(cfg, state.nginx, master, nginx_conf.UPSTREAMS_FILE, text)
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
        # surplus replicas: let them, then stop the replicas.
        drain_old_workers(old_workers, read_proc, say)
        processes.stop_groups(groups, say=say)

    def logs(self, cfg: LabSettings, follow: bool) -> None:
        p = Paths(cfg.state_dir)
        files = [p.service_log(f"gateway-{m}") for m in MODES]
        files += sorted(p.logs.glob("gateway-*-*.log"))  # replicas (`lab scale`)
        files += [p.nginx_log, p.logs / "nginx-access.log"]
        existing = [str(f) for f in files if f.exists()]
        if not existing:
            raise LabError(f"no logs in {p.logs}: the lab has not run here (`lab up`)")
        cmd = ["tail", "-n", "40", *(["-F"] if follow else []), *existing]
        with contextlib.suppress(KeyboardInterrupt):
            subprocess.run(cmd, check=False)


def replica_counts(state: RunState | None) -> dict[str, int]:
    """Gateways per mode for ``lab status``: 1 unless ``scale`` recorded more."""
    recorded = state.replicas if state is not None else {}
    return {m: recorded.get(m, 1) for m in MODES}


class NativeServices:
    """``lab.targets.Services`` on the host: process groups recorded in native.json."""

    def __init__(self, cfg: LabSettings) -> None:
        self.cfg = cfg

    def _state(self) -> RunState:
        state = load_state(self.cfg)
        if state is None:
            raise LabError(f"no native lab recorded in {self.cfg.state_dir}: `lab up` first")
        return state

    def _group(self, service: str) -> int:
        groups = self._state().groups
        if service not in groups:
            raise LabError(f"no service {service!r} in this lab: one of {', '.join(groups)}")
        return groups[service]

    def stop(self, service: str) -> None:
        processes.stop_groups({service: self._group(service)}, say=say)

    def kill(self, service: str) -> None:
        pgid = self._group(service)
        if not processes.kill_group(pgid):
            raise LabError(f"{service} (process group {pgid}) survived SIGKILL")
        processes.reap(pgid)

    def start(self, service: str) -> None:
        """Start the service as ``lab up`` does and record its new process group."""
        state = self._state()
        previous = state.groups.get(service)
        if previous and processes.group_alive(previous):
            raise LabError(f"{service} is still running (process group {previous})")
        cfg = state.settings(self.cfg)
        url: processes.HealthCheck
        if service == "nginx":
            cmd, env = nginx_command(state.nginx, cfg), dict(os.environ)
            url = cfg.url + "/nginx-health"
        else:
            mode = service.removeprefix("gateway-")
            check_mode(mode)
            server, port = servers_in_force(state)[mode], base_ports(cfg, state)[mode]
            cmd, env = gateway_process(cfg, mode, port, server)
            url = gateway_check(mode, server, port)
        pgid = spawn_service(cfg, service, cmd, env)
        state = self._state()  # re-read just before writing: only this entry changes
        state.groups[service] = pgid
        save_state(cfg, state)
        try:
            processes.wait_healthy({service: (pgid, url)}, START_DEADLINE_S)
        except processes.StartFailed as failed:
            raise start_failure(cfg, failed) from None
        if service != "nginx":
            routed = f"{cfg.url}/{service.removeprefix('gateway-')}/healthz"
            if not wait_until(lambda: is_healthy(routed), START_DEADLINE_S, interval_s=0.2):
                raise LabError(f"{service} did not answer through nginx after its restart")

    def restart(self, service: str) -> None:
        self.stop(service)
        self.start(service)

    def freeze(self, service: str) -> None:
        processes.freeze(self._group(service))

    def thaw(self, service: str) -> None:
        processes.thaw(self._group(service))

    def reload(self, service: str) -> None:
        # The gunicorn master leads the gateway's process group.
        os.kill(self._group(service), signal.SIGHUP)

    def processes(self, service: str) -> str:
        """The service's processes: the members of its process group."""
        group = self._group(service)
        return json.dumps([list(p) for p in read_proc() if p.pgrp == group])

    def kill_pid(self, service: str, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    def cpus(self, service: str) -> float:
        return procfs.cpu_limit(self._group(service))

    def access_log(self) -> str:
        path = Paths(self.cfg.state_dir).logs / "nginx-access.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
