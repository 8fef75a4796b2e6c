"""The gateway layer around an ASGI app (ASGI mode).

The same steps as the WSGI layer, in ASGI terms: trusted forwarded headers
become ``client``/``scheme``, the mount point becomes ``root_path``, what
gateway.preflight answers (Host, 413, 501, /healthz) is sent without calling
the app, a chunked body is counted against the limit as ``receive()`` hands it
over, and the trace headers go on ``http.response.start`` (or on
``websocket.accept``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from gateway import trace
from gateway._types import ASGIApp, Message, Receive, Scope, Send
from gateway.errors import error_data
from gateway.framing import DRAIN_IDLE_S, DRAIN_S, BodyLimit, BodyTooLarge
from gateway.numbers import parse_digits
from gateway.preflight import Answer, preflight
from gateway.proxy import (
    AllowList,
    client_address,
    origin_path,
    request_host,
    scheme_from,
    split_mount,
    target_authority,
)
from gateway.servers.registry import default_server

logger = logging.getLogger("gateway")

# The ASGI WebSocket Denial Response extension's name in ``scope["extensions"]``.
DENIAL_EXTENSION: Final = "websocket.http.response"
# What an app's failure before its response answers, in every ASGI and WSGI server
# (gateway.servers.error_pages gives gunicorn's own 500 the same text).
APP_FAILED: Final = "internal server error"


def header_map(scope: Scope) -> dict[bytes, str]:
    """The request's headers by lower-case name, read once per request (first one wins)."""
    found: dict[bytes, str] = {}
    for key, value in scope.get("headers", ()):
        found.setdefault(bytes(key).lower(), bytes(value).decode("latin-1"))
    return found


class _Traced:
    """The trace headers of one request, added to a list of ASGI header pairs."""

    def __init__(self, mode: str, server: str, start: float, request_id: str) -> None:
        self.mode = mode
        self.server = server
        self.start = start
        self.request_id = request_id

    def __call__(self, response: list[tuple[bytes, bytes]], end: float | None) -> list[Any]:
        present = frozenset(bytes(k).decode("latin-1").lower() for k, _ in response)
        extra = trace.trace_headers(
            mode=self.mode,
            server=self.server,
            pid=os.getpid(),
            worker=os.getpid(),
            start=self.start,
            end=end,
            request_id=self.request_id,
            present=present,
        )
        return list(response) + [(k.encode(), v.encode()) for k, v in extra]


class _TracedSend:
    """The app's ``send``, holding ``http.response.start`` until End is known.

    The status line waits for the first body message, which says whether this
    is the whole response (End known) or a stream (Start only) - the ASGI twin
    of the WSGI layer's ``_Response``.
    """

    def __init__(self, send: Send, traced: _Traced) -> None:
        self.send = send
        self.traced = traced
        self.held: Message | None = None
        self.started = False  # a response start went out (or is held)

    @property
    def sent(self) -> bool:
        """A response start went out to the server: too late for another answer."""
        return self.started and self.held is None

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.held = message
            self.started = True
            return
        if kind == "http.response.body" and self.held is not None:
            done = not message.get("more_body", False)
            start_message = dict(self.held)
            start_message["headers"] = self.traced(
                self.held.get("headers", []), time.time() if done else None
            )
            self.held = None
            await self.send(start_message)
        elif kind == "websocket.accept":
            self.started = True
            message = dict(message)
            message["headers"] = self.traced(message.get("headers", []), None)
        await self.send(message)


class _LimitedReceive:
    """The app's ``receive``, counting body bytes; past the limit: BodyTooLarge."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = BodyLimit(limit)

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.limit.count(len(message.get("body", b"")))
        return message


class _TrackedReceive:
    """The app's ``receive``, noting whether the request body was read to its end."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.complete = False

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            self.complete = True
        return message


async def drain(receive: _TrackedReceive, limit: int | None, budget_s: float = DRAIN_S) -> int:
    """Receive and drop what the app left of the request body; the bytes dropped.

    The ASGI twin of ``gateway.middleware.wsgi.drain``: an app that answers
    before reading the body (a form over its limit: 413) leaves it unread, the
    server then closes rather than parse the rest as a request, and nginx, still
    sending the body it buffered, reports a 502 instead of the answer (RFC 9112
    §9.6, quoted at ``gateway.framing.DRAIN_S``).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    dropped = 0
    while not receive.complete and (limit is None or dropped <= limit):
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            message = await asyncio.wait_for(receive(), min(remaining, DRAIN_IDLE_S))
        except (TimeoutError, OSError):
            break
        dropped += len(message.get("body", b""))
    return dropped


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
        self.max_body_bytes = max_body_bytes  # as in GatewayWSGI

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
        # Headers the app sees with another value; the scope's list is rebuilt
        # once, below. The app reads the gateway's request id, as the WSGI
        # layer's app does.
        replaced = {b"x-request-id": request_id}
        if trusted and (host := apply_forwarded(scope, headers)) is not None:
            replaced[b"host"] = host
        # RFC 9112 §3.2.2 (gateway.proxy): before preflight, which answers
        # /healthz by its origin-form path, as the WSGI layer (gunicorn's
        # PATH_INFO) has it.
        given = replaced.get(b"host", headers.get(b"host"))
        if (host := apply_absolute_form(scope, given)) is not None:
            replaced[b"host"] = host
        headers.update(replaced)
        scope["headers"] = replace_headers(scope.get("headers", ()), replaced)
        traced = _Traced(self.mode, self.server, start, request_id)

        is_http = scope["type"] == "http"
        answer = preflight(
            http_version=scope.get("http_version", ""),
            host=headers.get(b"host"),
            proxied=trusted and b"x-forwarded-for" in headers,
            path=scope["path"][len(scope.get("root_path", "")) :] if is_http else None,
            content_length=headers.get(b"content-length"),
            transfer_encoding=headers.get(b"transfer-encoding"),
            max_body_bytes=self.max_body_bytes,
            mode=self.mode,
        )
        if answer is not None:
            await _send_answer(answer, scope, send, traced)
            return

        if (
            is_http
            and self.max_body_bytes is not None
            and b"transfer-encoding" in headers
            and parse_digits(headers.get(b"content-length")) is None
        ):
            receive = _LimitedReceive(receive, self.max_body_bytes)
        traced_send = _TracedSend(send, traced)
        # A declared body the app may leave unread is drained after it answers.
        tracked = None
        if is_http and parse_digits(headers.get(b"content-length")):
            receive = tracked = _TrackedReceive(receive)
        try:
            await self.app(scope, receive, traced_send)
            if is_http and not traced_send.started:
                # The ASGI spec (HTTP, "Response Start"): an app that returns
                # without a response gets the server's 500; uvicorn's is plain
                # text, so the layer answers the lab's JSON one under every server.
                logger.error(
                    "the ASGI app returned no response: %s %s", scope.get("method"), scope["path"]
                )
                await _send_answer(
                    Answer(500, error_data(500, APP_FAILED), True), scope, send, traced
                )
                return
            if tracked is not None and not tracked.complete:
                await drain(tracked, self.max_body_bytes)
        except BodyTooLarge as exc:
            if traced_send.sent:
                raise  # too late for a 413: the server cuts the connection
            # RFC 9110 §15.5.14 (413); the rest of the body stays unread.
            await _send_answer(Answer(413, error_data(413, str(exc)), True), scope, send, traced)
        except Exception:
            if not is_http or traced_send.sent:
                raise  # too late for a 500: the server cuts the connection
            # The server would answer with its own 500 (uvicorn's is plain
            # text); the lab's is JSON in every server, as the WSGI modes'.
            logger.exception("error in the ASGI app: %s %s", scope.get("method"), scope["path"])
            await _send_answer(Answer(500, error_data(500, APP_FAILED), True), scope, send, traced)


async def _send_answer(answer: Answer, scope: Scope, send: Send, traced: _Traced) -> None:
    headers = [(b"content-type", b"application/json")]
    if scope["type"] == "websocket":
        await _deny_websocket(answer, scope, send, traced(headers, time.time()))
        return
    if answer.close:
        # The body stays unread: the connection must not carry another request
        # (RFC 9112 §9.6: "close" in a response means the server closes after
        # it). gunicorn's asyncio worker and uvicorn both honour the header.
        headers.append((b"connection", b"close"))
    start = {"type": "http.response.start", "status": answer.status}
    await send(start | {"headers": traced(headers, time.time())})
    await send({"type": "http.response.body", "body": json.dumps(answer.data).encode()})


async def _deny_websocket(
    answer: Answer, scope: Scope, send: Send, headers: list[tuple[bytes, bytes]]
) -> None:
    """Refuse a handshake before the app with the same JSON answer an HTTP request gets.

    The ASGI WebSocket Denial Response extension (``websocket.http.response``)
    sends an HTTP response instead of accepting: uvicorn offers it, and
    gateway/servers/websocket_denial.py adds it to gunicorn's asyncio worker.
    Without it the only "no" before ``websocket.accept`` is a close, which a
    server sends as an empty 403 (ASGI spec, "Close - send event").
    """
    if DENIAL_EXTENSION not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    start = {"type": "websocket.http.response.start", "status": answer.status}
    await send(start | {"headers": headers})
    body = json.dumps(answer.data).encode()
    await send({"type": "websocket.http.response.body", "body": body})


def replace_headers(
    headers: Iterable[tuple[bytes, bytes]], replaced: Mapping[bytes, str]
) -> list[tuple[bytes, bytes]]:
    """A new header list in which each name in ``replaced`` (lower case) holds its
    value alone, and every other header is kept as it came, in one pass."""
    kept = [(k, v) for k, v in headers if bytes(k).lower() not in replaced]
    return [(name, value.encode("latin-1")) for name, value in replaced.items()] + kept


def apply_absolute_form(scope: Scope, given: str | None) -> str | None:
    """RFC 9112 §3.2.2 (gateway.proxy): an absolute-form target names the Host.

    gunicorn's asyncio worker leaves an absolute-form target in ``path`` and
    ``raw_path`` ("http://a.test:81/env"): the scope gets the origin-form path
    a request through nginx has. uvicorn's parser drops the authority before
    the scope exists; its protocol applies the same rule there
    (gateway/servers/uvicorn.py). ``given``: the Host header sent, if any.
    Returns the Host the app should see when the target named one, else None.
    """
    path = str(scope.get("path", ""))
    if target_authority(path) is None:
        return None
    host = request_host(path, given, str(scope.get("http_version", "1.1")))
    scope["path"] = origin_path(path)
    raw = scope.get("raw_path")
    if raw is not None:
        scope["raw_path"] = origin_path(bytes(raw).decode("latin-1")).encode("latin-1")
    return host


def apply_forwarded(scope: Scope, headers: Mapping[bytes, str]) -> str | None:
    """What nginx says about the client, host and mount point, as ASGI scope keys.

    ASGI HTTP scope: ``root_path`` is "the root path this application is mounted
    at"; ``path`` is the full path and so still begins with it. Returns the host
    the client asked nginx for (X-Forwarded-Host), which the app should see as
    Host, as the WSGI layer sets HTTP_HOST (an ASGI scope has no host key: apps
    read the Host header); None when nginx named none.
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
    return headers.get(b"x-forwarded-host") or None
