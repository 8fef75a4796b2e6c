"""``python -m gateway serve --mode {cgi,wsgi,asgi} [--server NAME]``: start one gateway.

``--server`` picks the server behind the mode (gateway/servers/registry.py;
the mode's first server when omitted). ``python -m gateway health`` asks a
running gateway's /healthz in the protocol its server speaks (exit 0 when it
answers 200), for health checks of servers that speak no HTTP.

Everything not given on the command line comes from ``GATEWAY_*`` variables
(gateway/config.py).
"""

from __future__ import annotations

import argparse
import sys

from gateway.config import MODES, Settings, SettingsError
from gateway.servers.registry import SERVERS, wire

ALL_SERVERS = sorted({s for names in SERVERS.values() for s in names})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the demo app in one mode")
    health = sub.add_parser("health", help="exit 0 when a running gateway answers /healthz")
    for p in (serve, health):
        p.add_argument("--mode", choices=MODES, help="or GATEWAY_MODE")
        p.add_argument(
            "--server", choices=ALL_SERVERS, help="or GATEWAY_SERVER (default: the mode's first)"
        )
        p.add_argument("--host", help="address to bind (GATEWAY_HOST, default 127.0.0.1)")
        p.add_argument("--port", type=int, help="port to bind (GATEWAY_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (GATEWAY_WORKERS)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = Settings.from_env(
            mode=args.mode,
            server=args.server,
            host=args.host,
            port=args.port,
            workers=getattr(args, "workers", None),
        )
    except SettingsError as exc:
        sys.exit(f"gateway: {exc}")
    if args.command == "health":
        from gateway.servers.probe import probe

        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        speaks = wire(settings.mode, settings.server_name)
        sys.exit(0 if probe(host, settings.port, speaks, str(settings.cgi_script)) else 1)
    if settings.server_name == "fcgiwrap":
        from gateway.servers import fcgiwrap

        fcgiwrap.serve(settings)
    elif settings.server_name == "uvicorn":
        from gateway.servers import uvicorn

        uvicorn.serve(settings)
    else:
        from gateway.servers.gunicorn import serve

        serve(settings)


if __name__ == "__main__":
    main()
