"""`lab server` on the native target: the two ports of each mode, health checks in
each server's protocol, and the swap itself (lab/servers.py says what it promises).

A swap starts the new server on the mode's other port and waits for its
/healthz; rewrites pass_<mode>.conf and upstreams.conf and reloads nginx once;
and once nginx's old workers have finished with the old server, stops it. A
server that does not come up is stopped again and the old one keeps serving.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Final, Protocol

from gateway.servers.registry import default_server, listens_on_unix
from lab.errors import LabError
from lab.nginx import render as nginx_conf
from lab.routing import MODES
from lab.servers import healthy, http_address, wait_for_server
from lab.servers import worker_counts as configured_workers
from lab.settings import LabSettings, Limits
from lab.system import processes
from lab.system.ports import in_use_message, port_free
from lab.system.procfs import read_proc
from lab.targets.native_nginx import Paths, native_values, reload_with_files
from lab.targets.switching import drain_old_workers, gateway_env, worker_counts

START_DEADLINE_S: Final = 30.0


class ServerRecord(Protocol):
    """What native.json keeps about a running lab (``lab.targets.native.RunState``)."""

    groups: dict[str, int]
    replicas: dict[str, int]
    gateway_workers: int
    servers: dict[str, str]
    slots: dict[str, int]
    nginx: str
    limits: dict[str, int]


def gateway_process(
    cfg: LabSettings, mode: str, port: int, server: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run gateway ``mode`` on 127.0.0.1:``port``.

    ``server`` picks the server behind the mode (None: its default). The
    environment is this process's plus ``cfg``'s settings (``GATEWAY_*``), and
    the unix socket nginx reaches the gateway on (``lab.nginx.render.native_socket``),
    whose directory this makes, for this user alone.
    """
    server = server or default_server(mode)
    cmd = [
        sys.executable, "-m", "gateway", "serve", "--mode", mode,
        "--server", server, "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    # Not a caller's own socket or worker count (cgi takes none: gateway_env).
    inherited = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_UDS", "GATEWAY_WORKERS")}
    env = inherited | gateway_env(cfg, mode)
    if listens_on_unix(mode, server):
        sock = nginx_conf.native_socket(cfg.state_dir, port)
        sock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        sock.parent.chmod(0o700)  # nginx's workers run as this user (lab.nginx.render.worker_user)
        env["GATEWAY_UDS"] = str(sock)
    return cmd, env


def say(message: str) -> None:
    print(message, flush=True)


# A mode's gateway listens on one of two ports: its base port (LAB_PORT+1..+3),
# or, after `lab server` has swapped its server, the other one (LAB_PORT+4..+6),
# so the new server starts before the old one stops. The next swap goes back.
SLOT_OFFSET: Final = 4


def slot_port(cfg: LabSettings, mode: str, slot: int) -> int:
    if slot == 0:
        return cfg.gateway_ports[mode]
    return cfg.port + SLOT_OFFSET + MODES.index(mode)


def base_ports(cfg: LabSettings, state: ServerRecord | None) -> dict[str, int]:
    """The port of each mode's first gateway, whichever slot it is on."""
    slots = state.slots if state is not None else {}
    return {m: slot_port(cfg, m, slots.get(m, 0)) for m in MODES}


def servers_in_force(state: ServerRecord | None) -> dict[str, str]:
    recorded = state.servers if state is not None else {}
    return {m: recorded.get(m) or default_server(m) for m in MODES}


def gateway_check(mode: str, server: str, port: int) -> processes.HealthCheck:
    """/healthz of a gateway: its URL when the server speaks HTTP, else a probe in its
    own protocol (FastCGI or uwsgi; lab.servers.healthy)."""
    if (address := http_address(mode, server, "127.0.0.1", port)) is not None:
        return f"{address}/healthz"
    return lambda: healthy("127.0.0.1", port, mode, server)


def health_checks(cfg: LabSettings, state: ServerRecord | None) -> dict[str, processes.HealthCheck]:
    """Each service's health check: nginx's URL, each gateway's /healthz in its protocol."""
    servers, ports = servers_in_force(state), base_ports(cfg, state)
    checks: dict[str, processes.HealthCheck] = {
        f"gateway-{m}": gateway_check(m, servers[m], ports[m]) for m in MODES
    }
    checks["nginx"] = cfg.url + "/nginx-health"
    return checks


def http_gateways(cfg: LabSettings, state: ServerRecord | None) -> dict[str, str]:
    """``gateways`` of ``lab status``: only those that speak HTTP (not fcgiwrap, not uwsgi)."""
    servers, ports = servers_in_force(state), base_ports(cfg, state)
    found = {m: http_address(m, servers[m], "127.0.0.1", ports[m]) for m in MODES}
    return {m: url for m, url in found.items() if url is not None}


def live_workers(state: ServerRecord) -> dict[str, int]:
    """Worker processes per mode: children of every replica's gunicorn master.

    fcgiwrap's processes are its master's children, not the launcher's, and
    uvicorn's master also has multiprocessing's resource tracker: for those
    two, the number each is configured to run (lab.servers.worker_counts).
    """
    masters = {
        m: [
            g
            for s, g in state.groups.items()
            if s == f"gateway-{m}" or s.startswith(f"gateway-{m}-")
        ]
        for m in MODES
    }
    counts = worker_counts(read_proc(), masters)
    servers = servers_in_force(state)
    limits = Limits(**state.limits) if state.limits else Limits()
    replicas = {m: len(found) for m, found in masters.items()}
    configured = configured_workers(servers, limits, state.gateway_workers, replicas)
    for mode, server in servers.items():
        if server in ("fcgiwrap", "uvicorn"):
            counts[mode] = configured[mode]
    return counts


def swap_server(
    cfg: LabSettings,
    state: ServerRecord,
    mode: str,
    server: str,
    *,
    start: Callable[[str, int], int],
    save: Callable[[], None],
) -> None:
    """Put ``server`` behind ``mode`` (checked names): ``start(service, port)`` starts it
    as a service of the lab and returns its process group; ``save()`` records ``state``."""
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
    if not port_free(port):
        raise LabError(in_use_message(port, f"the new {mode} server", ", or another LAB_PORT"))
    service, incoming = f"gateway-{mode}", f"gateway-{mode}-{server}"
    pgid = start(incoming, port)
    state.groups[incoming] = pgid
    save()
    answered = False
    try:
        processes.wait_healthy(
            {incoming: (pgid, gateway_check(mode, server, port))}, START_DEADLINE_S
        )
        answered = True
        bases = base_ports(cfg, state) | {mode: port}
        in_force = servers_in_force(state) | {mode: server}
        values = native_values(cfg, in_force, state.replicas, bases)
        files = {
            nginx_conf.pass_file(mode): nginx_conf.render_pass(mode, server, values, cfg.templates),
            nginx_conf.UPSTREAMS_FILE: nginx_conf.render_upstreams(values, cfg.templates),
        }
        old_workers = reload_with_files(cfg, state.nginx, state.groups["nginx"], files)
    except BaseException as exc:
        processes.stop_groups({incoming: pgid}, say=say)
        state.groups.pop(incoming, None)
        save()
        if not isinstance(exc, LabError | processes.StartFailed):
            raise
        # One line: why the new server is not serving (its own last words when
        # it did not come up), and that nothing changed.
        log = Paths(cfg.state_dir).service_log(incoming)
        last = [line for line in processes.tail(log).splitlines() if line.strip()]
        why = last[-1].strip() if last and not answered else str(exc).splitlines()[0]
        what = "was not taken into nginx" if answered else "did not start"
        raise LabError(f"{mode} stays on {current}: {server} {what} ({why})") from None
    old = state.groups.pop(service)
    state.groups[service] = state.groups.pop(incoming)
    state.servers[mode] = server
    state.slots[mode] = slot
    save()
    # nginx's old workers finish the requests they hold on the old server; then stop it.
    drain_old_workers(old_workers, read_proc, say)
    processes.stop_groups({service: old}, say=say)
    wait_for_server(cfg, mode, server)
    say(f"{mode}: {cfg.url}/{mode}/ is now served by {server} (was {current}, port {port})")
