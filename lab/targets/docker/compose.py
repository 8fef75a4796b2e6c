"""The docker target's pure parts: compose command lines, its environment, and
parsers for what ``docker`` prints. No I/O: ``lab.targets.docker.target`` runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from lab.nginx.render import control_dir
from lab.routing import MODES
from lab.servers import compose_server_env, recorded_servers
from lab.settings import ROOT, LabSettings
from lab.targets.switching import check_mode, check_replicas

PROJECT: Final = "gateway-lab"
PROJECT_LABEL: Final = f"com.docker.compose.project={PROJECT}"
COMPOSE_FILE: Final = ROOT / "compose.yaml"
# The host's system CA bundle: passed to the gateway build as pip's CA (compose
# secret "ca"), which a TLS-inspecting proxy needs and is harmless elsewhere.
SYSTEM_CA_BUNDLE: Final = Path("/etc/ssl/certs/ca-certificates.crt")
SERVICES: Final = {mode: f"gateway-{mode}" for mode in MODES}
NGINX: Final = "nginx"
# compose.yaml's volumes, by their names in the engine. `down` removes the
# state (the next `up` starts in LAB_MODE) and keeps the CA (`make clean` removes it).
STATE_VOLUME: Final = f"{PROJECT}_nginx-state"
TLS_VOLUME: Final = f"{PROJECT}_nginx-tls"
GATEWAY_COMMAND: Final = "-m gateway"  # in every gateway process's command line


def ca_bundle(
    lab_ca_bundle: str, pip_cert: str | None, is_file: Callable[[Path], bool] = Path.is_file
) -> str | None:
    """The CA file for pip inside the build: LAB_CA_BUNDLE, else PIP_CERT, else the system bundle.

    None when there is none, and compose's default (/dev/null: pip's own CAs) applies.
    """
    for candidate in (lab_ca_bundle, pip_cert):
        if candidate and is_file(Path(candidate)):
            return candidate
    return str(SYSTEM_CA_BUNDLE) if is_file(SYSTEM_CA_BUNDLE) else None


def compose_env(
    cfg: LabSettings,
    environ: Mapping[str, str],
    base_image: str | None = None,
    target: str = "docker",
) -> dict[str, str]:
    """The environment for ``docker compose``: the caller's, plus the lab's settings.

    compose.yaml reads these (each has a default there); values given here win
    over a .env file, so the CLI's settings are what runs.
    """
    env = dict(environ)
    env["LAB_PORT"] = str(cfg.port)
    env["LAB_TLS_PORT"] = str(cfg.tls_port)
    env["LAB_PROXY_READ_TIMEOUT_S"] = str(cfg.limits.proxy_read_timeout_s)
    env["LAB_CLIENT_MAX_BODY_BYTES"] = str(cfg.limits.client_max_body_bytes)
    env["LAB_CGI_MAX_SCRIPTS"] = str(cfg.limits.cgi_max_scripts)
    env["LAB_IMAGE_TAG"] = cfg.image_tag
    # The host directory of the dashboard's control socket, mounted into nginx's
    # container (lab.targets.docker.control); absolute, as swarm requires.
    env["LAB_CONTROL_DIR"] = str(control_dir(cfg.state_dir, target).absolute())
    # The server behind each mode: LAB_SERVER_<MODE> if given, else the last `lab server`.
    env |= compose_server_env(environ, recorded_servers(cfg))
    if base_image:
        env["LAB_BASE_IMAGE"] = base_image
    if bundle := ca_bundle(cfg.ca_bundle, environ.get("PIP_CERT")):
        env["LAB_CA_BUNDLE"] = bundle
    return env


def compose_args(*args: str, project: str = PROJECT) -> list[str]:
    return [
        "docker",
        "compose",
        "--project-name",
        project,
        "--project-directory",
        str(ROOT),
        "--file",
        str(COMPOSE_FILE),
        *args,
    ]


def up_args(*extra: str, wait_timeout_s: int = 120) -> list[str]:
    """``up`` with the images already built: no build, no pull, return once healthy."""
    return [
        "up", "--detach", "--wait", "--wait-timeout", str(wait_timeout_s),
        "--no-build", "--pull", "never", *extra,
    ]  # fmt: skip


def scale_args(mode: str, replicas: int, wait_timeout_s: int = 120) -> list[str]:
    """``up`` arguments that set one gateway's replica count and touch nothing else."""
    check_mode(mode)
    check_replicas(replicas)
    return up_args(
        "--no-recreate", "--scale", f"{SERVICES[mode]}={replicas}", wait_timeout_s=wait_timeout_s
    )


def parse_replicas_listing(text: str) -> list[tuple[int, str, str]]:
    """``docker inspect`` lines "NUMBER ID IP" -> (number, id, ip), lowest number first."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isascii() and parts[0].isdigit():
            rows.append((int(parts[0]), parts[1], parts[2]))
    return sorted(rows)


def replica_counts(ps_services: str) -> dict[str, int]:
    """``docker compose ps --format {{.Service}}`` output -> running containers per mode."""
    names = ps_services.split()
    return {mode: names.count(service) for mode, service in SERVICES.items()}


def service_health(ps_rows: str) -> dict[str, bool]:
    """``docker compose ps --format "{{.Service}} {{.State}} {{.Health}}"`` -> healthy per
    service (every replica of it running and healthy); services not listed are False."""
    health = {NGINX: False, **{s: False for s in SERVICES.values()}}
    seen: dict[str, bool] = {}
    for line in ps_rows.splitlines():
        row = line.split()
        if row:
            seen[row[0]] = seen.get(row[0], True) and row[1:] == ["running", "healthy"]
    return health | {s: ok for s, ok in seen.items() if s in health}


def workers_from_top(text: str) -> int:
    """Gunicorn workers in ``docker compose top SERVICE`` output (every replica's table).

    The gateway processes are Python processes whose command runs ``-m gateway``
    (not tini, ``init: true``, whose command line holds the same words); a master
    is one whose parent is not a gateway process (tini, PID 1 in the container);
    its workers are the gateway processes whose parent is a master.
    """
    rows: list[tuple[str, str, str]] = []  # pid, ppid, cmd
    columns: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if "PID" in parts and "PPID" in parts and "CMD" in parts:
            columns = parts
            continue
        if columns and len(parts) >= len(columns):
            pid, ppid = parts[columns.index("PID")], parts[columns.index("PPID")]
            rows.append((pid, ppid, " ".join(parts[len(columns) - 1 :])))
    gateway = {
        pid: ppid
        for pid, ppid, cmd in rows
        if GATEWAY_COMMAND in cmd and cmd.split()[0].rsplit("/", 1)[-1].startswith("python")
    }
    masters = {pid for pid, ppid in gateway.items() if ppid not in gateway}
    return sum(1 for ppid in gateway.values() if ppid in masters)
