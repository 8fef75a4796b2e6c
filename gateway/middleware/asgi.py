"""The gateway layer around an ASGI app (ASGI mode).

The same steps as the WSGI layer, in ASGI terms: trusted forwarded headers
become ``client``/``scheme``, the mount point becomes ``root_path``, /healthz
is answered here, and the trace headers go on ``http.response.start`` (or on
``websocket.accept``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import trace
from gateway.framing import over_limit, unsupported_coding
from gateway.proxy import AllowList, client_address, scheme_from, split_mount
from gateway.servers.registry import default_server

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def header_map(scope: Scope) -> dict[bytes, str]:
    """The request's headers by lower-case name, read once per request (first one wins)."""
    found: dict[bytes, str] = {}
    for key, value in scope.get("headers", ()):
        found.setdefault(bytes(key).lower(), bytes(value).decode("latin-1"))
    return found


class GatewayASGI:
    def __init__(
        self,
        app: ASGIApp,
        *,
        mode: str,
        allow: AllowList,
        max_body_bytes: int | None = None,
        server: str | None = None,
    ) -> None:
        self.app = app
        self.mode = mode
        # X-Gateway-Server: the server running this layer (None: the mode's default).
        self.server = server or default_server(mode)
        self.allow = allow
        self.max_body_bytes = max_body_bytes  # as in GatewayWSGI: a declared length over it is 413

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan and friends pass through
            return
        start = time.time()
        client = scope.get("client")
        trusted = self.allow.trusts(client[0] if client else None)
        scope = dict(scope)
        headers = header_map(scope)
        request_id = trace.request_id_from(headers.get(b"x-request-id") if trusted else None)
        if trusted:
            apply_forwarded(scope, headers)

        def traced(response: list[tuple[bytes, bytes]], end: float | None) -> list[Any]:
            present = frozenset(bytes(k).decode("latin-1").lower() for k, _ in response)
            extra = trace.trace_headers(
                mode=self.mode,
                server=self.server,
                pid=os.getpid(),
                worker=os.getpid(),
                start=start,
                end=end,
                request_id=request_id,
                present=present,
            )
            return list(response) + [(k.encode(), v.encode()) for k, v in extra]

        async def answer(status: int, data: dict[str, object]) -> None:
            if scope["type"] == "websocket":
                # Before websocket.accept, a close is the server's "no" (a 403).
                await send({"type": "websocket.close", "code": 1008})
                return
            content_type = [(b"content-type", b"application/json")]
            response_start = {"type": "http.response.start", "status": status}
            await send(response_start | {"headers": traced(content_type, time.time())})
            await send({"type": "http.response.body", "body": json.dumps(data).encode()})

        if scope.get("http_version") == "1.1" and b"host" not in headers:
            # RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
            # code to any HTTP/1.1 request message that lacks a Host header field".
            error = "HTTP/1.1 request without a Host header"
            await answer(400, {"error": error, "status": 400})
            return

        declared = headers.get(b"content-length")
        if (too_big := over_limit(declared, self.max_body_bytes)) is not None:
            await answer(413, {"error": too_big, "status": 413})
            return

        if (coding := unsupported_coding(headers.get(b"transfer-encoding"))) is not None:
            await answer(501, {"error": coding, "status": 501})
            return

        if (
            scope["type"] == "http"
            and scope["path"][len(scope.get("root_path", "")) :] == "/healthz"
        ):
            await answer(200, {"status": "ok", "mode": self.mode})
            return

        held: Message | None = None

        async def send_traced(message: Message) -> None:
            nonlocal held
            kind = message["type"]
            if kind == "http.response.start":
                # Hold the status line until the first body message says
                # whether this is the whole response (End known) or a stream.
                held = message
                return
            if kind == "http.response.body" and held is not None:
                done = not message.get("more_body", False)
                start_message = dict(held)
                start_message["headers"] = traced(
                    held.get("headers", []), time.time() if done else None
                )
                held = None
                await send(start_message)
            elif kind == "websocket.accept":
                message = dict(message)
                message["headers"] = traced(message.get("headers", []), None)
            await send(message)

        await self.app(scope, receive, send_traced)


def apply_forwarded(scope: Scope, headers: dict[bytes, str]) -> None:
    """What nginx says about the client and the mount point, as ASGI scope keys.

    ASGI HTTP scope: ``root_path`` is "the root path this application is mounted
    at"; ``path`` is the full path and so still begins with it.
    """
    mount = split_mount(scope["path"], headers.get(b"x-forwarded-prefix"))
    if mount is not None:
        scope["root_path"] = scope.get("root_path", "") + mount[0]
    if (client := client_address(headers.get(b"x-forwarded-for"))) is not None:
        port = scope["client"][1] if scope.get("client") else 0
        scope["client"] = (client, port)
    if (scheme := scheme_from(headers.get(b"x-forwarded-proto"))) is not None:
        if scope["type"] == "websocket":
            scheme = "wss" if scheme == "https" else "ws"
        scope["scheme"] = scheme
