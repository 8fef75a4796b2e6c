"""The ASGI WebSocket Denial Response extension, added to gunicorn's asyncio worker.

ASGI lets an app answer a WebSocket handshake with an ordinary HTTP response
instead of accepting it: ``websocket.http.response.start`` and
``websocket.http.response.body``, when the server offers
``scope["extensions"]["websocket.http.response"]`` (uvicorn, hypercorn and
daphne do). gunicorn 27's asyncio worker does not: every refusal is a
"403 Forbidden" with an empty body. The demo app refuses a handshake on a path
other than /ws with the JSON 404 an HTTP request there gets; this module lets
that answer reach a client that connects to the gateway directly (through
nginx such a handshake arrives as a plain GET: nginx/templates/server.conf).

gunicorn has no hook for it, so two methods are wrapped, as
``error_pages`` does for gunicorn's error pages; gunicorn is pinned below its
next major version (pyproject.toml) and tests/integration/test_hostile_app.py
checks the result at the gateway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gunicorn.asgi import protocol, websocket

from gateway.errors import status_line
from gateway.middleware.asgi import DENIAL_EXTENSION as EXTENSION

_WRAPPED = "_lab_websocket_denial"


def _response_bytes(start: dict[str, Any], body: bytes) -> bytes:
    """The denial as one HTTP/1.1 response that ends the connection."""
    status = int(start["status"])
    headers = [
        (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
        for name, value in start.get("headers", [])
    ]
    protocol._validate_response_headers(headers)  # gunicorn's own check: no CR, LF or NUL
    headers = [(n, v) for n, v in headers if n.lower() not in ("content-length", "connection")]
    # RFC 9112 §6.3: the length frames the body; the connection is not reused
    # after a refused upgrade (RFC 6455 §4.2.2: the server may close it).
    headers += [("Content-Length", str(len(body))), ("Connection", "close")]
    head = f"HTTP/1.1 {status_line(status)}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    return (head + "\r\n").encode("latin-1") + body


def install_websocket_denial_response() -> None:
    """Offer the extension in every WebSocket scope and carry out the denial (idempotent)."""
    build = protocol.ASGIProtocol._build_websocket_scope
    if getattr(build, _WRAPPED, False):
        return

    def build_scope(self: Any, request: Any, sockname: Any, peername: Any) -> dict[str, Any]:
        scope: dict[str, Any] = build(self, request, sockname, peername)
        scope.setdefault("extensions", {})[EXTENSION] = {}
        return scope

    send: Callable[[Any, dict[str, Any]], Awaitable[None]] = websocket.WebSocketProtocol._send

    async def send_or_deny(self: Any, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.http.response.start" and not self.accepted and not self._denied:
            self._lab_denial = (message, [])
            return
        pending = getattr(self, "_lab_denial", None)
        if kind == "websocket.http.response.body" and pending is not None:
            start, pieces = pending
            pieces.append(bytes(message.get("body", b"")))
            if message.get("more_body", False):
                return
            self._lab_denial = None
            # What gunicorn's own refusal (_deny) does, with the app's response.
            self._denied = True
            self.closed = True
            self._close_event.set()
            try:
                self.transport.write(_response_bytes(start, b"".join(pieces)))
                self.transport.close()
            except (OSError, RuntimeError):
                pass
            return
        await send(self, message)

    setattr(build_scope, _WRAPPED, True)
    protocol.ASGIProtocol._build_websocket_scope = build_scope
    websocket.WebSocketProtocol._send = send_or_deny
