"""``python3 -m lab.nginx``: the renderer's command line (nginx/entrypoint.sh calls it).

    python3 -m lab.nginx render --target {native,compose} --out DIR
        [--mode M | --split wsgi=90,asgi=10] [--port N] [--state-dir DIR]
        [--dashboard-dir DIR] [--templates DIR] [--set NAME=VALUE ...]
    python3 -m lab.nginx active --out DIR (--mode M | --split ...)
    python3 -m lab.nginx upstreams --target T --out DIR [--set wsgi_server="A B"]
    python3 -m lab.nginx server --target T --out DIR MODE=SERVER   # only pass_MODE.conf
    python3 -m lab.nginx show --out DIR     # prints the active mode or split

``render --server MODE=SERVER`` (repeatable) picks how nginx reaches a mode's
server (pass_<mode>.conf); a mode left out gets its default server.

Exit status 2 with one ``lab.nginx:`` line for a bad mode, split, value,
setting or template; nothing is written then.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.errors import LabError
from lab.nginx.render import (
    ACTIVE_FILE,
    TARGETS,
    UPSTREAMS_FILE,
    make_runtime_dirs,
    parse_server,
    pass_file,
    read_active_mode,
    render,
    render_active_mode,
    render_pass,
    render_upstreams,
    target_values,
    write_files,
)
from lab.routing import DEFAULT_MODE, MODES, RenderError, format_split, parse_split
from lab.settings import LabSettings


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m lab.nginx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render every config file into --out")
    r.add_argument("--target", choices=TARGETS, required=True)
    r.add_argument("--out", type=Path, required=True, help="directory for the rendered files")
    r.add_argument("--port", type=int, help="listen port (native: LAB_PORT, compose: 8080)")
    r.add_argument("--state-dir", type=Path, help="native: LAB_STATE_DIR (pid, logs, temp)")
    r.add_argument("--dashboard-dir", help="directory served at /lab/")
    r.add_argument("--templates", type=Path, default=None, help="template directory")
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one placeholder, e.g. cgi_server=127.0.0.1:9000 (several: space-separated)",
    )
    r.add_argument("--no-dirs", action="store_true", help="do not create temp/log directories")
    r.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="MODE=SERVER",
        help="the server behind a mode (several: repeat); others get their default",
    )
    _active_args(r)
    u = sub.add_parser("upstreams", help=f"rewrite only {UPSTREAMS_FILE} in --out")
    u.add_argument("--target", choices=TARGETS, required=True)
    u.add_argument("--out", type=Path, required=True)
    u.add_argument("--port", type=int, help="native: LAB_PORT")
    u.add_argument("--templates", type=Path, default=None, help="template directory")
    u.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MODE_server=ADDRESSES",
        help='the servers of one upstream, e.g. wsgi_server="10.0.0.5:8000 10.0.0.6:8000"',
    )
    a = sub.add_parser("active", help=f"rewrite only {ACTIVE_FILE} in --out")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--templates", type=Path, default=None, help="template directory")
    _active_args(a)
    v = sub.add_parser("server", help="rewrite only pass_<mode>.conf in --out for a server")
    v.add_argument("--target", choices=TARGETS, required=True)
    v.add_argument("--out", type=Path, required=True)
    v.add_argument("--port", type=int, help="native: LAB_PORT")
    v.add_argument("--templates", type=Path, default=None, help="template directory")
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
        settings = LabSettings.from_env()
        templates = args.templates or settings.templates
        split = parse_split(args.split) if getattr(args, "split", None) else None
        mode = None if split else (getattr(args, "mode", None) or DEFAULT_MODE)
        if args.command == "active":
            write_files(args.out, {ACTIVE_FILE: render_active_mode(mode, split, templates)})
            return 0
        native = args.target == "native"
        values = target_values(
            args.target,
            limits=settings.limits,
            port=args.port if args.port is not None else (settings.port if native else None),
            state_dir=getattr(args, "state_dir", None) or settings.state_dir,
            dashboard_dir=getattr(args, "dashboard_dir", None),
            tls_port=settings.tls_port if native else None,
        )
        if args.command == "server":
            chosen_mode, server = parse_server(args.choice)
            text = render_pass(chosen_mode, server, values, templates)
            write_files(args.out, {pass_file(chosen_mode): text})
            return 0
        values = _parse_sets(args.set, values)
        if args.command == "upstreams":
            # Checked before writing: a bad address leaves the file as it was.
            write_files(args.out, {UPSTREAMS_FILE: render_upstreams(values, templates)})
            return 0
        servers = dict(parse_server(choice) for choice in args.server)
        files = render(values, mode, split, templates, servers)
        if not args.no_dirs:
            make_runtime_dirs(values)
        write_files(args.out, files)
    except (RenderError, LabError, OSError) as exc:
        print(f"lab.nginx: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
