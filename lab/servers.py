"""The server behind each mode, as the lab sees it: choosing, checking, probing.

``lab server MODE SERVER`` (CONTRACT.md, "Servers behind each route") swaps
the server behind one mode's route: the target starts the new server, waits
until it answers /healthz in its own protocol (``gateway.servers.probe``),
points nginx at it with a graceful reload, and only then stops the old one.
``lab up`` starts each mode under ``LAB_SERVER_<MODE>`` when set, else the
server recorded by the last ``lab server`` (the first line of the mode's
pass_<mode>.conf), else the mode's default. The names and what nginx speaks to
each server come from ``gateway.servers.registry``, the one list of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from gateway import trace
from gateway.config import Settings, default_workers
from gateway.servers.probe import probe
from gateway.servers.registry import SERVERS, ServerError, check_server, default_server, wire
from gateway.servers.workers import worker_processes
from gateway.system.cpus import whole_cpus
from lab.errors import LabError
from lab.routing import MODES
from lab.settings import LabSettings, Limits
from lab.system.http import http_get, wait_until

ENV_PREFIX = "LAB_SERVER_"


def check_choice(mode: str, server: str) -> str:
    """``server`` if it can run ``mode``; else LabError naming the choices (nothing changed)."""
    try:
        return check_server(mode, server)
    except ServerError as exc:
        raise LabError(str(exc)) from None


def env_key(mode: str) -> str:
    return ENV_PREFIX + mode.upper()


def chosen_servers(env: Mapping[str, str], recorded: Mapping[str, str]) -> dict[str, str]:
    """mode -> server for ``lab up``: LAB_SERVER_<MODE>, else ``recorded``, else the default.

    A bad LAB_SERVER_<MODE> is a LabError before anything starts.
    """
    chosen = {}
    for mode in MODES:
        wanted = env.get(env_key(mode), "").strip()
        if wanted:
            try:
                chosen[mode] = check_server(mode, wanted)
            except ServerError as exc:
                raise LabError(f"{env_key(mode)}={wanted!r}: {exc}") from None
        else:
            chosen[mode] = recorded.get(mode) or default_server(mode)
    return chosen


def worker_counts(
    servers: Mapping[str, str],
    limits: Limits,
    workers: int = 0,
    replicas: Mapping[str, int] | None = None,
    cpus: Mapping[str, float] | None = None,
) -> dict[str, int]:
    """``workers`` of ``lab status``: processes running app code per mode.

    ``workers`` is LAB_GATEWAY_WORKERS (0: each mode's default), ``replicas``
    the gateways per mode (missing: one; each replica runs the same count) and
    ``cpus`` the CPUs each mode's gateway may use where it runs, a container's
    limit (missing: this host's), which a default count follows.
    """
    replicas, cpus = replicas or {}, cpus or {}
    counts = {}
    for mode, server in servers.items():
        chosen = workers
        if not chosen and mode in cpus:
            chosen = default_workers(mode, whole_cpus(cpus[mode]))  # type: ignore[arg-type]
        settings = Settings(
            mode=mode,  # type: ignore[arg-type]
            server=server,
            cgi_max_scripts=limits.cgi_max_scripts,
            workers=chosen,
        )
        counts[mode] = worker_processes(settings) * replicas.get(mode, 1)
    return counts


def healthy(host: str, port: int, mode: str, server: str) -> bool:
    """True when ``server`` running ``mode`` at host:port answers /healthz in its protocol."""
    script = str(Settings(mode="cgi").cgi_script)
    return probe(host, port, wire(mode, server), script, timeout=1.0)


def http_address(mode: str, server: str, host: str, port: int) -> str | None:
    """The gateway's own HTTP address for ``lab status``; None when it speaks no HTTP."""
    return f"http://{host}:{port}" if wire(mode, server) == "http" else None


def served_by(cfg: LabSettings, mode: str) -> str | None:
    """The server that answers ``/<mode>/`` through nginx (its X-Gateway-Server)."""
    try:
        status, headers, _ = http_get(f"{cfg.url}/{mode}/", timeout=2.0)
    except OSError:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    return lowered.get(trace.SERVER.lower()) if status < 500 else None


def wait_for_server(cfg: LabSettings, mode: str, server: str, deadline_s: float = 15.0) -> None:
    """Return once ``/<mode>/`` is answered by ``server`` a few times in a row; else LabError."""
    streak = 0

    def in_effect() -> bool:
        nonlocal streak
        streak = streak + 1 if served_by(cfg, mode) == server else 0
        return streak >= 3

    if not wait_until(in_effect, deadline_s, interval_s=0.05):
        raise LabError(
            f"nginx points {mode} at {server}, but {cfg.url}/{mode}/ is answered by "
            f"{served_by(cfg, mode)!r} after {deadline_s:.0f}s; see `lab logs`"
        )


def all_servers() -> str:
    return "; ".join(f"{m}: {', '.join(names)}" for m, names in SERVERS.items())


# -- the choice, recorded on the host (the docker target's compose environment) --------

SERVERS_FILE = "servers.json"


def record_servers(cfg: LabSettings, servers: Mapping[str, str]) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    (cfg.state_dir / SERVERS_FILE).write_text(json.dumps(dict(servers)) + "\n", encoding="utf-8")


def recorded_servers(cfg: LabSettings) -> dict[str, str]:
    """mode -> server recorded by the last `lab server` (docker target); {} if none or bad."""
    try:
        data = json.loads((cfg.state_dir / SERVERS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    found = {}
    for mode, server in data.items():
        try:
            found[str(mode)] = check_server(str(mode), str(server))
        except ServerError:
            continue
    return found


def compose_server_env(env: Mapping[str, str], recorded: Mapping[str, str]) -> dict[str, str]:
    """LAB_SERVER_<MODE> for compose.yaml: the caller's, else the recorded choice."""
    return {env_key(m): s for m, s in chosen_servers(env, recorded).items()}
