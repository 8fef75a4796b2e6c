"""Render nginx/templates/ into a working nginx config for one target.

Standard library only: the nginx container runs this at start
(``python3 -m lab.nginx render --target compose --out /tmp/nginx-conf``).

Templates use ``string.Template`` with the delimiter ``@@`` (``@@listen``,
``@@cgi_server``): nginx's own ``$variables`` pass through untouched, and a
placeholder the renderer does not know is an error, never silently left in.

Targets differ only in the values below (``target_values``): where nginx
listens, where the gateways are, where pid, logs, temp files and the dashboard
live. ``@@cgi_server`` (and wsgi, asgi) may hold several addresses, separated
by spaces or commas: ``upstreams.conf`` gets one ``server`` line for each
(``@@cgi_servers``, made by ``render``), which is how ``lab scale`` puts
replicas behind nginx. ``active_mode.conf`` is rendered on its own (``render_active_mode``) so a
switch rewrites that one file; its first line records the mode or split in a
form ``read_active_mode`` parses back, so the file nginx reads is also the one
source of truth for ``lab status``.

Its command line is ``python3 -m lab.nginx`` (``lab/nginx/__main__.py``).
"""

from __future__ import annotations

import os
import re
import string
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from gateway.servers.registry import (
    MAX_UNIX_PATH_BYTES,
    ServerError,
    check_server,
    default_server,
    listens_on_unix,
    wire,
)
from lab.routing import (
    DEFAULT_MODE,
    MODES,
    RenderError,
    Split,
    check_mode,
    format_split,
    parse_active,
    parse_split,
    replica_port,
)

if TYPE_CHECKING:
    from lab.settings import Limits

ROOT: Final = Path(__file__).resolve().parent.parent.parent

TARGETS: Final = ("native", "compose")
TEMPLATE_DIR: Final = ROOT / "nginx" / "templates"  # LabSettings.templates overrides it
# Rendered in this order; nginx.conf includes the others by these names.
CONF_FILES: Final = (
    "nginx.conf",
    "upstreams.conf",
    "proxy.conf",
    "server.conf",
    "routes.conf",
    "stream.conf",
    "tls.conf",
)
UPSTREAMS_FILE: Final = "upstreams.conf"
ACTIVE_FILE: Final = "active_mode.conf"
COMPOSE_PORT: Final = 8080
COMPOSE_TLS_PORT: Final = 8443
# Where the nginx container keeps the CA and its certificate (a volume in
# compose.yaml; nginx/make-certs.sh writes it at the first start).
COMPOSE_TLS_DIR: Final = Path("/var/lib/lab-tls")
COMPOSE_GATEWAY_PORT: Final = 8000
COMPOSE_DASHBOARD_DIR: Final = "/usr/share/lab/static"
NATIVE_DASHBOARD_DIR: Final = ROOT / "nginx" / "static" / "lab"
# The CGI script fcgiwrap runs (SCRIPT_FILENAME): a path in the gateway's filesystem.
NATIVE_CGI_SCRIPT: Final = ROOT / "apps" / "breakfast" / "cgi_app.py"
COMPOSE_CGI_SCRIPT: Final = "/app/apps/breakfast/cgi_app.py"
_SERVER_MARKER_RE: Final = re.compile(r"^# lab-server: (\S+) (\S+)$", re.MULTILINE)
_MARKER_RE: Final = re.compile(r"^# lab-(mode|split): (\S+)$", re.MULTILINE)
# host:port, IPv4, a bracketed IPv6 address, or unix:/absolute/path: nothing that
# could end the line early.
_ADDRESS_RE: Final = re.compile(
    r"[A-Za-z0-9._-]+:[0-9]{1,5}|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}|unix:/[A-Za-z0-9._/+-]+"
)


# /lab/api/ (the dashboard's server picker, lab/control.py): a process of the lab
# on the host (`lab up` starts it on every target), listening on a unix socket in
# a directory of its own under the state dir. Under Docker that directory is
# bind-mounted into nginx's container (compose.yaml), so nginx reaches the host
# process without any network address and without the Docker socket.
CONTROL_SOCKET_NAME: Final = "control.sock"
COMPOSE_CONTROL_DIR: Final = "/run/lab-control"
# nginx's unprivileged user in its image (nginx/Dockerfile: USER www-data, which
# Debian's base-passwd fixes at uid and gid 33): the group the control directory
# and socket are given, so that user may connect and no other user of the host.
NGINX_CONTAINER_GID: Final = 33


def control_dir(state_dir: Path, target: str) -> Path:
    """The host directory of the control socket of ``target`` (one per target: a
    native lab and a Docker lab may share a state dir)."""
    return state_dir / f"control-{target}"


def socket_path(path: Path) -> Path:
    """``path`` if the kernel takes it as a unix socket's address, else RenderError."""
    if len(os.fsencode(path)) > MAX_UNIX_PATH_BYTES:
        raise RenderError(
            f"{path} is too long for a unix socket ({MAX_UNIX_PATH_BYTES} bytes at most): "
            "run the lab from a shorter path, or set LAB_STATE_DIR to one"
        )
    return path


def control_socket(state_dir: Path, target: str) -> Path:
    """The control process's unix socket on the host (checked against the kernel's limit)."""
    path = control_dir(state_dir, target) / CONTROL_SOCKET_NAME
    return socket_path(path)


def control_pass(socket_path: str | Path) -> str:
    """/lab/api/ proxied to the control process's unix socket.

    When nothing listens there (the lab was started by plain `docker compose
    up`, or the process died), nginx's connect fails and its 502 becomes the
    JSON 503 of /_error/502, which $lab_control picks (server.conf).
    """
    return (
        "include proxy.conf;\n"
        "        proxy_read_timeout 120s;\n"
        f"        proxy_pass http://unix:{socket_path}:"
    )


class LabTemplate(string.Template):
    """``@@name`` placeholders: ``$`` belongs to nginx."""

    delimiter = "@@"


# -- values per target ---------------------------------------------------------------


def native_socket(state_dir: Path, port: int) -> Path:
    """The unix socket the native gateway on TCP ``port`` also listens on, for nginx.

    Natively nginx reaches the gateways through these rather than their loopback
    ports: a unix socket skips TCP's handshake and loopback stack on both sides
    (benchmarks/proxied_path.py measures what that is worth), and only whom the
    directory lets in (the lab's user) can connect. The TCP port stays, for
    direct access and ``lab status``.
    """
    path = state_dir / "run" / f"gateway-{port}.sock"
    return socket_path(path)


def native_address(state_dir: Path, port: int, mode: str, server: str | None = None) -> str:
    """How nginx reaches the native gateway of ``mode`` on ``port`` under ``server``."""
    if listens_on_unix(mode, server or default_server(mode)):
        return f"unix:{native_socket(state_dir, port)}"
    return f"127.0.0.1:{port}"  # fcgiwrap serves its one socket, the TCP one


def native_servers(
    state_dir: Path, nginx_port: int, mode: str, replicas: int = 1, server: str | None = None
) -> list[str]:
    """The addresses of ``replicas`` native gateways of ``mode``, replica 0 first."""
    return [
        native_address(state_dir, replica_port(nginx_port, mode, i), mode, server)
        for i in range(replicas)
    ]


def target_values(
    target: str,
    *,
    limits: Limits,
    port: int | None = None,
    state_dir: Path | None = None,
    dashboard_dir: str | None = None,
    replicas: Mapping[str, int] | None = None,
    tls_port: int | None = None,
    servers: Mapping[str, str] | None = None,
    run_as: str | None = None,
) -> dict[str, str]:
    """Every placeholder's value for ``target``. Pure: creates nothing.

    ``tls_port`` is the TLS listener's port (native: LAB_TLS_PORT, default
    8443); the certificate is ``tls_files(...)["server.pem"]``, made by
    nginx/make-certs.sh before nginx starts.

    ``replicas`` (native only: mode -> count, default 1) lists that many
    gateways per mode; under compose a service name covers all its replicas.
    ``servers`` (native only: mode -> server, default each mode's first) says
    whether nginx reaches a gateway on its unix socket (``native_address``).
    ``run_as`` (native only) is the user nginx's workers run as when nginx is
    started by root; None: the user who starts it.
    """
    common = {
        "target": target,
        "client_max_body_bytes": str(limits.client_max_body_bytes),
        "proxy_read_timeout": f"{limits.proxy_read_timeout_s}s",
    }
    if target == "native":
        if state_dir is None:
            raise RenderError("the native target needs a state directory")
        nginx_dir = state_dir / "nginx"
        logs = state_dir / "logs"
        listen_port = port if port is not None else 8080
        tls = tls_files(state_dir / "tls")
        counts, chosen = replicas or {}, servers or {}
        return common | {
            "worker_user": worker_user(run_as),
            "listen": f"127.0.0.1:{listen_port}",
            "tls_listen": f"127.0.0.1:{tls_port if tls_port is not None else COMPOSE_TLS_PORT}",
            "tls_certificate": str(tls["server.pem"]),
            "tls_certificate_key": str(tls["server.key"]),
            **{
                f"{m}_server": " ".join(
                    native_servers(state_dir, listen_port, m, counts.get(m, 1), chosen.get(m))
                )
                for m in MODES
            },
            "pid_path": str(nginx_dir / "nginx.pid"),
            "error_log": str(logs / "nginx-error.log"),
            "access_log": str(logs / "nginx-access.log"),
            "temp_dir": str(nginx_dir / "tmp"),
            "dashboard_dir": dashboard_dir or str(NATIVE_DASHBOARD_DIR),
            "cgi_script_filename": str(NATIVE_CGI_SCRIPT),
            "control_pass": control_pass(control_socket(state_dir, "native")),
        }
    if target == "compose":
        return common | {
            "listen": str(port if port is not None else COMPOSE_PORT),
            "tls_listen": str(tls_port if tls_port is not None else COMPOSE_TLS_PORT),
            "tls_certificate": str(tls_files(COMPOSE_TLS_DIR)["server.pem"]),
            "tls_certificate_key": str(tls_files(COMPOSE_TLS_DIR)["server.key"]),
            **{f"{m}_server": f"gateway-{m}:{COMPOSE_GATEWAY_PORT}" for m in MODES},
            "worker_user": worker_user(None),
            # Logs go to the container's stdout/stderr, where `docker compose logs` reads them.
            "pid_path": "/tmp/nginx.pid",
            "error_log": "/dev/stderr",
            "access_log": "/dev/stdout",
            "temp_dir": "/tmp/nginx",
            "dashboard_dir": dashboard_dir or COMPOSE_DASHBOARD_DIR,
            "cgi_script_filename": COMPOSE_CGI_SCRIPT,
            "control_pass": control_pass(f"{COMPOSE_CONTROL_DIR}/{CONTROL_SOCKET_NAME}"),
        }
    raise RenderError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")


def worker_user(name: str | None) -> str:
    """nginx's ``user`` directive for ``name``, or a comment when nginx keeps its starter's."""
    if name is None:
        return "# (the workers run as the user who starts nginx)"
    if not re.fullmatch(r"[a-z_][a-z0-9_-]*", name):
        raise RenderError(f"bad user name {name!r} for nginx's workers")
    return f"user {name};"


def tls_files(tls_dir: Path) -> dict[str, Path]:
    """The files nginx/make-certs.sh keeps in ``tls_dir``, by name."""
    return {name: tls_dir / name for name in ("ca.pem", "ca.key", "server.pem", "server.key")}


# -- the active mode ----------------------------------------------------------------


def render_active_mode(
    mode: str | None = None,
    split: Mapping[str, int] | None = None,
    templates: Path = TEMPLATE_DIR,
) -> str:
    """The text of active_mode.conf: a fixed default mode, or a weighted split.

    Either way it defines ``$lab_default_mode``, which server.conf falls back to
    when a request has no X-Lab-Mode header and no valid lab_mode cookie.
    """
    if (mode is None) == (split is None):
        raise RenderError("give either a mode or a split")
    template = LabTemplate(_read_template(templates, ACTIVE_FILE))
    if mode is not None:
        check_mode(mode)
        marker = f"# lab-mode: {mode}"
        description = f"Default mode: {mode}."
        block = f'map "" $lab_default_mode {{\n    default {mode};\n}}'
    else:
        assert split is not None
        split = parse_split(format_split(split))  # the one grammar checks it
        marker = f"# lab-split: {format_split(split)}"
        description = "Weighted split per request (keyed on $request_id): " + ", ".join(
            f"{m} {w}%" for m, w in split.items()
        )
        modes = list(split.items())
        lines = [f"    {w}% {m};" for m, w in modes[:-1]] + [f"    * {modes[-1][0]};"]
        block = 'split_clients "$request_id" $lab_default_mode {\n' + "\n".join(lines) + "\n}"
    body = _substitute(
        template, ACTIVE_FILE, {"description": description, "default_mode_block": block}
    )
    return f"{marker}\n{body}"


def read_active_mode(text: str) -> str | Split | None:
    """The mode (str) or split (dict) recorded in an active_mode.conf text, None if none
    (or if the recorded value does not parse)."""
    match = _MARKER_RE.search(text)
    if match is None:
        return None
    kind, value = match.groups()
    try:
        active = parse_active(value)
    except RenderError:
        return None
    return active if isinstance(active, dict) == (kind == "split") else None


# -- the server behind each mode ----------------------------------------------------


def pass_file(mode: str) -> str:
    """The file that says how nginx reaches ``mode``'s server: ``pass_wsgi.conf``."""
    return f"pass_{check_mode(mode)}.conf"


def check_servers(servers: Mapping[str, str] | None) -> dict[str, str]:
    """mode -> server for every mode, the defaults filled in; RenderError naming a bad one."""
    chosen = {m: default_server(m) for m in MODES}
    for mode, server in (servers or {}).items():
        try:
            chosen[mode] = check_server(mode, server)
        except ServerError as exc:
            raise RenderError(str(exc)) from None
    return chosen


def parse_server(text: str) -> tuple[str, str]:
    """``"wsgi=gthread"`` -> ``("wsgi", "gthread")``, checked against the registry."""
    mode, sep, server = (part.strip() for part in text.partition("="))
    if not sep:
        raise RenderError(f"bad server choice {text!r}: write MODE=SERVER, e.g. wsgi=gthread")
    return mode, check_servers({mode: server})[mode]


def render_pass(
    mode: str, server: str, values: Mapping[str, str], templates: Path = TEMPLATE_DIR
) -> str:
    """The text of pass_<mode>.conf for ``server``, from pass_<wire>.conf.

    Its first line records the choice (``# lab-server: wsgi gthread``), which
    ``read_server`` parses back: the file nginx reads is also the record.
    """
    server = check_servers({mode: server})[mode]
    name = f"pass_{wire(mode, server)}.conf"
    template = LabTemplate(_read_template(templates, name))
    body = _substitute(template, name, dict(values) | {"mode": mode, "server": server})
    return f"# lab-server: {mode} {server}\n{body}"


def render_passes(
    values: Mapping[str, str],
    servers: Mapping[str, str] | None = None,
    templates: Path = TEMPLATE_DIR,
) -> dict[str, str]:
    """pass_<mode>.conf for every mode: ``servers`` where given, else each mode's default."""
    chosen = check_servers(servers)
    return {pass_file(m): render_pass(m, s, values, templates) for m, s in chosen.items()}


def read_server(text: str) -> tuple[str, str] | None:
    """(mode, server) recorded in a pass_<mode>.conf text; None if none or not a valid pair."""
    match = _SERVER_MARKER_RE.search(text)
    if match is None:
        return None
    mode, server = match.groups()
    try:
        return mode, check_servers({mode: server})[mode]
    except (RenderError, KeyError):
        return None


# -- rendering ----------------------------------------------------------------------


def server_lines(addresses: str) -> str:
    """``"127.0.0.1:8082 127.0.0.1:8101"`` -> one ``server`` line per address (upstreams.conf)."""
    parts = [a for a in re.split(r"[\s,]+", addresses) if a]
    if not parts:
        raise RenderError("an upstream needs at least one server address")
    for address in parts:
        if not _ADDRESS_RE.fullmatch(address):
            raise RenderError(f"bad server address {address!r}: write host:port")
    return "\n".join(f"    server {a};" for a in parts)


def with_server_lines(values: Mapping[str, str]) -> dict[str, str]:
    """``values`` plus ``@@<mode>_servers`` made from each ``@@<mode>_server``."""
    lines = {
        f"{m}_servers": server_lines(values[f"{m}_server"])
        for m in MODES
        if f"{m}_server" in values
    }
    return dict(values) | lines


def render_upstreams(values: Mapping[str, str], templates: Path = TEMPLATE_DIR) -> str:
    """The text of upstreams.conf alone: what ``lab scale`` rewrites before a reload."""
    template = LabTemplate(_read_template(templates, UPSTREAMS_FILE))
    return _substitute(template, UPSTREAMS_FILE, with_server_lines(values))


def render(
    values: Mapping[str, str],
    mode: str | None = DEFAULT_MODE,
    split: Mapping[str, int] | None = None,
    templates: Path = TEMPLATE_DIR,
    servers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """File name -> text for every file of the config. Pure apart from reading templates.

    ``servers`` (mode -> server) picks how nginx reaches each mode (pass_<mode>.conf);
    a mode left out gets its default server.
    """
    values = with_server_lines(values)
    files = {
        name: _substitute(LabTemplate(_read_template(templates, name)), name, values)
        for name in CONF_FILES
    }
    files |= render_passes(values, servers, templates)
    files[ACTIVE_FILE] = render_active_mode(None if split else mode, split, templates)
    return files


def write_files(out_dir: Path, files: Mapping[str, str]) -> None:
    """Write each file atomically (temp file + rename), so a reload never reads half a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_dir / name)


def make_runtime_dirs(values: Mapping[str, str]) -> None:
    """Create the directories nginx writes to (temp files, pid, log files).

    nginx creates each temp path itself, but not its parents.
    """
    Path(values["temp_dir"]).mkdir(parents=True, exist_ok=True)
    for key in ("pid_path", "error_log", "access_log"):
        if not values[key].startswith("/dev/"):
            Path(values[key]).parent.mkdir(parents=True, exist_ok=True)


def _read_template(templates: Path, name: str) -> str:
    path = templates / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RenderError(f"cannot read template {path}: {exc.strerror}") from None


def _substitute(template: LabTemplate, name: str, values: Mapping[str, str]) -> str:
    try:
        return template.substitute(values)
    except KeyError as exc:
        raise RenderError(f"{name}: no value for placeholder @@{exc.args[0]}") from None
    except ValueError as exc:
        raise RenderError(f"{name}: {exc}") from None
