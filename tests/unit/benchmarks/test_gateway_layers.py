"""benchmarks/gateway_layers.py times what it says: the requests it builds reach the demo
app through the layer, and the proxied one is believed as nginx's (its request id kept)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from benchmarks.gateway_layers import DIRECT, PEERS, PROXIED, asgi_scope, time_asgi, wsgi_environ
from gateway.config import Settings
from gateway.servers.gunicorn import build_app

SENT_ID = dict(PROXIED)["x-request-id"]


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


CASES = [(asgi_response, asgi_scope), (wsgi_response, wsgi_environ)]


@pytest.mark.parametrize(("respond", "make"), CASES)
def test_requests_reach_the_app_and_the_proxied_one_is_trusted(respond: Any, make: Any) -> None:
    status, headers = respond(make(PROXIED, PEERS["proxied"]))
    assert status == 200 and headers["x-request-id"] == SENT_ID
    status, headers = respond(make(DIRECT, PEERS["direct"]))
    assert status == 200 and headers["x-request-id"] != SENT_ID
    assert "x-gateway-end" in headers


def test_the_timer_returns_microseconds_per_request() -> None:
    app: Any = build_app(Settings(mode="asgi"))
    assert 0 < time_asgi(app, asgi_scope(DIRECT, PEERS["direct"]), 50) < 1e6
