"""What the gateway layer costs per request, in-process, without a server or a socket.

Calls the WSGI and the ASGI demo app (``GET /``, hello) many times, bare and
inside the gateway layer (gateway/middleware/), with the headers a request has
when it comes straight from wrk (Host alone) and when nginx forwards it (the
ones nginx/templates/proxy.conf sets). The layer's work per request is the
difference: what a worker pays for the layer on the path the proxied-path
benchmark measures (benchmarks/proxied_path.py), apart from the server's own
parsing and the network.

    .venv/bin/python benchmarks/gateway_layers.py [--requests 20000] [--rounds 5]

Prints microseconds per request, the best of the rounds (the least disturbed
by other work on a shared machine). Compare the rows within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from gateway.config import Settings
from gateway.servers.gunicorn import build_app

# The headers of ``GET /`` as wrk sends it, and as nginx forwards it on a
# unix socket (no X-Forwarded-Prefix on "/": nginx drops an empty header).
DIRECT: list[tuple[str, str]] = [("host", "127.0.0.1:8082")]
PROXIED: list[tuple[str, str]] = [
    ("host", "127.0.0.1:8080"),
    ("x-forwarded-host", "127.0.0.1:8080"),
    ("x-forwarded-for", "127.0.0.1"),
    ("x-forwarded-proto", "http"),
    ("x-request-id", "5f0c6d2e9a8b4c3d8e7f6a5b4c3d2e1f"),
]
# Where each request comes from: wrk over TCP, nginx over the unix socket
# (both servers give a unix-socket peer no address).
PEERS = {"direct": ("127.0.0.1", 50000), "proxied": None}


def asgi_scope(headers: list[tuple[str, str]], client: tuple[str, int] | None) -> dict[str, Any]:
    """An HTTP scope as gunicorn's asyncio worker or uvicorn makes it (ASGI HTTP spec)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": client,
        "server": ("127.0.0.1", 8082),
        "extensions": {},
    }


def wsgi_environ(headers: list[tuple[str, str]], client: tuple[str, int] | None) -> dict[str, Any]:
    """A WSGI environ as gunicorn makes it (PEP 3333; REMOTE_ADDR "" on a unix socket)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "RAW_URI": "/",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8081",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": client[0] if client else "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def time_asgi(app: Callable[..., Any], scope: dict[str, Any], n: int) -> float:
    """Microseconds per request for ``n`` requests of ``scope`` to ``app``."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def run() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await app(dict(scope), receive, send)
        return time.perf_counter() - t0

    return asyncio.run(run()) / n * 1e6


def time_wsgi(app: Callable[..., Any], environ: dict[str, Any], n: int) -> float:
    """Microseconds per request for ``n`` requests of ``environ`` to ``app``."""

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
        pass

    t0 = time.perf_counter()
    for _ in range(n):
        body: Iterable[bytes] = app(dict(environ), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.perf_counter() - t0) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    rows: list[tuple[str, str, float]] = []
    for mode in ("wsgi", "asgi"):
        layered: Any = build_app(Settings(mode=mode))  # the layer as a worker serves it
        timer, make = (time_asgi, asgi_scope) if mode == "asgi" else (time_wsgi, wsgi_environ)
        cases: dict[str, tuple[Callable[..., Any], Any]] = {
            "bare app": (layered.app, make(DIRECT, PEERS["direct"])),  # the app it wraps
            "layer, direct": (layered, make(DIRECT, PEERS["direct"])),
            "layer, proxied": (layered, make(PROXIED, PEERS["proxied"])),
        }
        # Rounds alternate between the cases, so a busy spell hits them alike.
        best = dict.fromkeys(cases, float("inf"))
        for _ in range(args.rounds):
            for name, (app, request) in cases.items():
                best[name] = min(best[name], timer(app, request, args.requests))
        rows += [(mode, name, us) for name, us in best.items()]

    print(f"{args.requests} requests of GET / per round, best of {args.rounds} rounds")
    print(f"{'mode':<6} {'case':<16} {'us/request':>10} {'layer us':>9}")
    bare_us = {mode: us for mode, name, us in rows if name == "bare app"}
    for mode, name, us in rows:
        extra = "" if name == "bare app" else f"{us - bare_us[mode]:9.1f}"
        print(f"{mode:<6} {name:<16} {us:10.1f} {extra:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
