"""Render nginx/templates/ into a working nginx config for one target.

Standard library only: the nginx container runs this at start
(``python3 -m lab.nginx_conf render --target compose --out /etc/nginx/lab``).

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

CLI::

    python3 -m lab.nginx_conf render --target {native,compose} --out DIR
        [--mode M | --split wsgi=90,asgi=10] [--port N] [--state-dir DIR]
        [--dashboard-dir DIR] [--templates DIR] [--set NAME=VALUE ...]
    python3 -m lab.nginx_conf active --out DIR (--mode M | --split ...)
    python3 -m lab.nginx_conf upstreams --target T --out DIR [--set wsgi_server="A B"]
    python3 -m lab.nginx_conf show --out DIR     # prints the active mode or split
"""

from __future__ import annotations

import argparse
import os
import re
import string
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from gateway.servers.registry import ServerError, check_server, default_server, wire
from lab.config import MODES, ROOT, Limits, gateway_ports

TARGETS: Final = ("native", "compose")
TEMPLATE_DIR: Final = Path(os.environ.get("LAB_NGINX_TEMPLATES", str(ROOT / "nginx" / "templates")))
# Rendered in this order; nginx.conf includes the others by these names.
CONF_FILES: Final = (
    "nginx.conf",
    "upstreams.conf",
    "proxy.conf",
    "server.conf",
    "routes.conf",
    "stream.conf",
)
UPSTREAMS_FILE: Final = "upstreams.conf"
ACTIVE_FILE: Final = "active_mode.conf"
DEFAULT_MODE: Final = "wsgi"
COMPOSE_PORT: Final = 8080
COMPOSE_GATEWAY_PORT: Final = 8000
COMPOSE_DASHBOARD_DIR: Final = "/usr/share/lab/static"
NATIVE_DASHBOARD_DIR: Final = ROOT / "nginx" / "static" / "lab"
# The CGI script fcgiwrap runs (SCRIPT_FILENAME): a path in the gateway's filesystem.
NATIVE_CGI_SCRIPT: Final = ROOT / "apps" / "breakfast" / "cgi_app.py"
COMPOSE_CGI_SCRIPT: Final = "/app/apps/breakfast/cgi_app.py"
_SERVER_MARKER_RE: Final = re.compile(r"^# lab-server: (\S+) (\S+)$", re.MULTILINE)
_MARKER_RE: Final = re.compile(r"^# lab-(mode|split): (\S+)$", re.MULTILINE)
# host:port, IPv4, or a bracketed IPv6 address: nothing that could end the line early.
_ADDRESS_RE: Final = re.compile(r"[A-Za-z0-9._-]+:[0-9]{1,5}|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}")
MAX_REPLICAS: Final = 8
# Native replicas beyond the first listen at LAB_PORT + REPLICA_PORT_STEP * k + i.
REPLICA_PORT_STEP: Final = 10


class RenderError(ValueError):
    """A bad mode, split, value or template; the message says which."""


class LabTemplate(string.Template):
    """``@@name`` placeholders: ``$`` belongs to nginx."""

    delimiter = "@@"


# -- values per target ---------------------------------------------------------------


def replica_port(nginx_port: int, mode: str, index: int) -> int:
    """Native: the port of replica ``index`` (0-based) of ``mode``'s gateway.

    Replica 0 is the gateway ``lab up`` starts, on LAB_PORT+1..+3
    (``lab.config.gateway_ports``). Replica i >= 1 of the k-th mode (cgi 1,
    wsgi 2, asgi 3) listens on LAB_PORT + 10*k + i: for 8080, cgi 8091-8097,
    wsgi 8101-8107, asgi 8111-8117. These never meet the base ports; two native
    labs on one machine need LAB_PORTs at least 40 apart.
    """
    check_mode(mode)
    if not 0 <= index < MAX_REPLICAS:
        raise RenderError(f"replica index must be 0..{MAX_REPLICAS - 1}, not {index}")
    if index == 0:
        return gateway_ports(nginx_port)[mode]
    return nginx_port + REPLICA_PORT_STEP * (MODES.index(mode) + 1) + index


def native_servers(nginx_port: int, mode: str, replicas: int = 1) -> list[str]:
    """The addresses of ``replicas`` native gateways of ``mode``, replica 0 first."""
    return [f"127.0.0.1:{replica_port(nginx_port, mode, i)}" for i in range(replicas)]


def target_values(
    target: str,
    *,
    limits: Limits,
    port: int | None = None,
    state_dir: Path | None = None,
    dashboard_dir: str | None = None,
    replicas: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """Every placeholder's value for ``target``. Pure: creates nothing.

    ``replicas`` (native only: mode -> count, default 1) lists that many
    gateways per mode; under compose a service name covers all its replicas.
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
        return common | {
            "listen": f"127.0.0.1:{listen_port}",
            **{
                f"{m}_server": " ".join(native_servers(listen_port, m, (replicas or {}).get(m, 1)))
                for m in MODES
            },
            "pid_path": str(nginx_dir / "nginx.pid"),
            "error_log": str(logs / "nginx-error.log"),
            "access_log": str(logs / "nginx-access.log"),
            "temp_dir": str(nginx_dir / "tmp"),
            "dashboard_dir": dashboard_dir or str(NATIVE_DASHBOARD_DIR),
            "cgi_script_filename": str(NATIVE_CGI_SCRIPT),
        }
    if target == "compose":
        return common | {
            "listen": str(port if port is not None else COMPOSE_PORT),
            **{f"{m}_server": f"gateway-{m}:{COMPOSE_GATEWAY_PORT}" for m in MODES},
            # Logs go to the container's stdout/stderr, where `docker compose logs` reads them.
            "pid_path": "/tmp/nginx.pid",
            "error_log": "/dev/stderr",
            "access_log": "/dev/stdout",
            "temp_dir": "/tmp/nginx",
            "dashboard_dir": dashboard_dir or COMPOSE_DASHBOARD_DIR,
            "cgi_script_filename": COMPOSE_CGI_SCRIPT,
        }
    raise RenderError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")


# -- the active mode ----------------------------------------------------------------


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise RenderError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


def parse_split(text: str) -> dict[str, int]:
    """``"wsgi=90,asgi=10"`` -> ``{"wsgi": 90, "asgi": 10}``; whole percents summing to 100."""
    split: dict[str, int] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition("=")
        if not sep or not weight.strip().isdigit():
            raise RenderError(f"bad split part {part.strip()!r}: write mode=percent, e.g. wsgi=90")
        mode = check_mode(name.strip())
        if mode in split:
            raise RenderError(f"mode {mode} appears twice in the split")
        split[mode] = int(weight)
    if sum(split.values()) != 100 or any(w <= 0 for w in split.values()):
        raise RenderError(f"split weights must be positive and sum to 100, not {text!r}")
    return split


def format_split(split: Mapping[str, int]) -> str:
    return ",".join(f"{m}={w}" for m, w in split.items())


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
        split = parse_split(format_split(split))
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


def read_active_mode(text: str) -> str | dict[str, int] | None:
    """The mode (str) or split (dict) recorded in an active_mode.conf text, None if none."""
    match = _MARKER_RE.search(text)
    if match is None:
        return None
    kind, value = match.groups()
    try:
        return check_mode(value) if kind == "mode" else parse_split(value)
    except RenderError:
        return None


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


# -- command line -------------------------------------------------------------------


def _parse_sets(pairs: list[str], values: dict[str, str]) -> dict[str, str]:
    out = dict(values)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in values:
            raise RenderError(f"--set {pair!r}: use NAME=VALUE with NAME one of {sorted(values)}")
        out[key] = value
    return out


def _active_args(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--mode", help=f"default mode for '/' ({', '.join(MODES)})")
    group.add_argument("--split", help="weighted split for '/', e.g. wsgi=90,asgi=10")


def _server_arg(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--server", action="append", default=[], metavar="MODE=SERVER", help=text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m lab.nginx_conf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render every config file into --out")
    r.add_argument("--target", choices=TARGETS, required=True)
    r.add_argument("--out", type=Path, required=True, help="directory for the rendered files")
    r.add_argument("--port", type=int, help="listen port (native: LAB_PORT, compose: 8080)")
    r.add_argument("--state-dir", type=Path, help="native: LAB_STATE_DIR (pid, logs, temp)")
    r.add_argument("--dashboard-dir", help="directory served at /lab/")
    r.add_argument("--templates", type=Path, default=TEMPLATE_DIR, help="template directory")
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one placeholder, e.g. cgi_server=127.0.0.1:9000 (several: space-separated)",
    )
    r.add_argument("--no-dirs", action="store_true", help="do not create temp/log directories")
    _server_arg(r, "the server behind a mode (several: repeat); others get their default")
    _active_args(r)
    u = sub.add_parser("upstreams", help=f"rewrite only {UPSTREAMS_FILE} in --out")
    u.add_argument("--target", choices=TARGETS, required=True)
    u.add_argument("--out", type=Path, required=True)
    u.add_argument("--port", type=int, help="native: LAB_PORT")
    u.add_argument("--templates", type=Path, default=TEMPLATE_DIR, help="template directory")
    u.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MODE_server=ADDRESSES",
        help='the servers of one upstream, e.g. wsgi_server="10.0.0.5:8000 10.0.0.6:8000"',
    )
    a = sub.add_parser("active", help=f"rewrite only {ACTIVE_FILE} in --out")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--templates", type=Path, default=TEMPLATE_DIR, help="template directory")
    _active_args(a)
    v = sub.add_parser("server", help="rewrite only pass_<mode>.conf in --out for a server")
    v.add_argument("--target", choices=TARGETS, required=True)
    v.add_argument("--out", type=Path, required=True)
    v.add_argument("--port", type=int, help="native: LAB_PORT")
    v.add_argument("--templates", type=Path, default=TEMPLATE_DIR, help="template directory")
    v.add_argument("choice", help="MODE=SERVER, e.g. wsgi=gthread")
    s = sub.add_parser("show", help=f"print the mode or split recorded in --out/{ACTIVE_FILE}")
    s.add_argument("--out", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "show":
            active = read_active_mode((args.out / ACTIVE_FILE).read_text(encoding="utf-8"))
            print(format_split(active) if isinstance(active, dict) else active or "unknown")
            return 0
        split = parse_split(args.split) if getattr(args, "split", None) else None
        mode = None if split else (getattr(args, "mode", None) or DEFAULT_MODE)
        if args.command == "active":
            text = render_active_mode(mode, split, args.templates)
            write_files(args.out, {ACTIVE_FILE: text})
            return 0
        from lab.config import LabConfig

        env_cfg = LabConfig.from_env()
        values = target_values(
            args.target,
            limits=env_cfg.limits,
            port=args.port
            if args.port is not None
            else (env_cfg.port if args.target == "native" else None),
            state_dir=getattr(args, "state_dir", None) or env_cfg.state_dir,
            dashboard_dir=getattr(args, "dashboard_dir", None),
        )
        if args.command == "server":
            mode, server = parse_server(args.choice)
            text = render_pass(mode, server, values, args.templates)
            write_files(args.out, {pass_file(mode): text})
            return 0
        values = _parse_sets(args.set, values)
        if args.command == "upstreams":
            # Checked before writing: a bad address leaves the file as it was.
            write_files(args.out, {UPSTREAMS_FILE: render_upstreams(values, args.templates)})
            return 0
        servers = dict(parse_server(choice) for choice in args.server)
        files = render(values, mode, split, args.templates, servers)
        if not args.no_dirs:
            make_runtime_dirs(values)
        write_files(args.out, files)
    except (RenderError, OSError) as exc:
        print(f"lab.nginx_conf: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
