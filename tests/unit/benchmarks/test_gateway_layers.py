"""benchmarks/gateway_layers.py times what it says: the requests it builds reach the demo
app through the layer, and the proxied one is believed as nginx's (its request id kept)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from benchmarks.gateway_layers import (
    REQUEST_ID,
    asgi_scope,
    direct,
    proxied,
    time_asgi,
    wsgi_environ,
)
from gateway.config import Settings
from gateway.servers.gunicorn import build_app


def asgi_response(scope: dict[str, Any]) -> tuple[int, dict[str, str]]:
    app: Any = build_app(Settings(mode="asgi"))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}


def wsgi_response(environ: dict[str, Any]) -> tuple[int, dict[str, str]]:
    app: Any = build_app(Settings(mode="wsgi"))
    got: list[tuple[str, list[tuple[str, str]]]] = []
    body = app(environ, lambda status, headers, exc=None: got.append((status, headers)))
    b"".join(body)
    status, headers = got[0]
    return int(status.split()[0]), {k.lower(): v for k, v in headers}


RESPONDERS = {"asgi": (asgi_response, asgi_scope), "wsgi": (wsgi_response, wsgi_environ)}


@pytest.mark.parametrize("mode", sorted(RESPONDERS))
def test_requests_reach_the_app_and_the_proxied_one_is_trusted(mode: str) -> None:
    respond, make = RESPONDERS[mode]
    # /<mode>/ reaches the app's "/" only if the layer took the mount point from
    # X-Forwarded-Prefix (else: 404), and the id is nginx's only if it was believed.
    status, headers = respond(make(proxied(mode)))
    assert status == 200 and headers["x-request-id"] == REQUEST_ID
    status, headers = respond(make(direct()))
    assert status == 200 and headers["x-request-id"] != REQUEST_ID
    assert "x-gateway-end" in headers


def test_the_timer_returns_microseconds_per_request() -> None:
    app: Any = build_app(Settings(mode="asgi"))
    assert 1 < time_asgi(app, asgi_scope(direct()), 50) < 10_000
