"""``python -m gateway serve --mode {cgi,wsgi,asgi}``: start one gateway.

Everything not given on the command line comes from ``GATEWAY_*`` variables
(gateway/config.py).
"""

from __future__ import annotations

import argparse
import sys

from gateway.config import MODES, Settings, SettingsError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the demo app in one mode")
    serve.add_argument("--mode", choices=MODES, help="or GATEWAY_MODE")
    serve.add_argument("--host", help="address to bind (GATEWAY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (GATEWAY_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (GATEWAY_WORKERS)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = Settings.from_env(
            mode=args.mode, host=args.host, port=args.port, workers=args.workers
        )
    except SettingsError as exc:
        sys.exit(f"gateway: {exc}")
    from gateway.servers.gunicorn import serve

    serve(settings)


if __name__ == "__main__":
    main()
