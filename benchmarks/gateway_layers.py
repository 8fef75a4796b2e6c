"""What the gateway layer costs per request, in-process, without a server or a socket.

Calls the WSGI and the ASGI demo app (hello) many times, bare and inside the
gateway layer (gateway/middleware/), with the requests benchmarks/proxied_path.py
sends: ``GET /`` straight from wrk (Host alone) and ``GET /<mode>/`` as nginx
forwards it (the headers nginx/templates/proxy.conf sets, the mount point among
them). The layer's work per request is the difference: what a worker pays for
the layer on that path, apart from the server's own parsing and the network.

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
from typing import Any, NamedTuple

from gateway.config import Settings
from gateway.servers.gunicorn import build_app


class Request(NamedTuple):
    """One ``GET`` as the server hands it to the layer."""

    path: str
    headers: list[tuple[str, str]]
    client: tuple[str, int] | None  # None: a unix-socket peer (both servers give no address)


REQUEST_ID = "5f0c6d2e9a8b4c3d8e7f6a5b4c3d2e1f"


def direct() -> Request:
    """``GET /`` as wrk sends it straight to a gateway (benchmarks/proxied_path.py)."""
    return Request("/", [("host", "127.0.0.1:8083")], ("127.0.0.1", 50000))


def proxied(mode: str) -> Request:
    """``GET /<mode>/`` as nginx forwards it on the unix socket: the headers
    nginx/templates/proxy.conf sets, the mount point among them."""
    headers = [
        ("host", "127.0.0.1:8080"),
        ("x-forwarded-host", "127.0.0.1:8080"),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-prefix", f"/{mode}"),
        ("x-request-id", REQUEST_ID),
    ]
    return Request(f"/{mode}/", headers, None)


def asgi_scope(request: Request) -> dict[str, Any]:
    """An HTTP scope as gunicorn's asyncio worker or uvicorn makes it (ASGI HTTP spec)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode("latin-1"),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers],
        "client": request.client,
        "server": ("127.0.0.1", 8083),
        "extensions": {},
    }


def wsgi_environ(request: Request) -> dict[str, Any]:
    """A WSGI environ as gunicorn makes it (PEP 3333; REMOTE_ADDR "" on a unix socket)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": request.path,
        "QUERY_STRING": "",
        "RAW_URI": request.path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8082",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": request.client[0] if request.client else "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in request.headers:
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
            "bare app": (layered.app, make(direct())),  # the app it wraps
            "layer, direct": (layered, make(direct())),
            "layer, proxied": (layered, make(proxied(mode))),
        }
        # Rounds alternate between the cases, so a busy spell hits them alike.
        best = dict.fromkeys(cases, float("inf"))
        for _ in range(args.rounds):
            for name, (app, request) in cases.items():
                best[name] = min(best[name], timer(app, request, args.requests))
        rows += [(mode, name, us) for name, us in best.items()]

    print(f"{args.requests} requests per case and round, best of {args.rounds} rounds")
    print(f"{'mode':<6} {'case':<16} {'us/request':>10} {'layer us':>9}")
    bare_us = {mode: us for mode, name, us in rows if name == "bare app"}
    for mode, name, us in rows:
        extra = "" if name == "bare app" else f"{us - bare_us[mode]:9.1f}"
        print(f"{mode:<6} {name:<16} {us:10.1f} {extra:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
