"""The gateway layer around a WSGI app (WSGI mode, and the CGI bridge in CGI mode).

In order, for every request: believe forwarded headers only from a trusted peer,
move the mount point into SCRIPT_NAME, answer what gateway.preflight answers
(Host, 413, 501, /healthz), take the Host from an absolute-form target
(gateway.proxy), count a chunked body against the limit, call the
app, and add the trace headers to its response.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Final

from gateway import trace
from gateway._types import Environ, ExcInfo, Headers, StartResponse, WSGIApp
from gateway.errors import error_body, status_line
from gateway.framing import DRAIN_CHUNK, DRAIN_IDLE_S, DRAIN_S, BodyLimit, BodyTooLarge
from gateway.numbers import parse_digits
from gateway.preflight import Answer, preflight
from gateway.proxy import AllowList, client_address, request_host, scheme_from, split_mount
from gateway.servers.registry import default_server

# An environ key of this gateway (PEP 3333: server extensions are named with a
# prefix of their own): a callable that makes the server close the connection
# after this response. The CGI bridge calls it when it stops reading a body.
CLOSE_CONNECTION: Final = "gateway.close_connection"

Traced = Callable[[Headers, float | None], Headers]


class ConnectionCloser:
    """A callable that makes the server close this connection after the response,
    and remembers that it was called.

    PEP 3333 forbids an app to send hop-by-hop headers (``Connection: close``),
    so a WSGI app cannot ask for a close in the protocol. gunicorn's
    ``start_response`` is a method of its response object, whose
    ``force_close()`` is what its workers call themselves for the same reason
    (gunicorn is pinned below its next major version, pyproject.toml); a server
    without it (wsgiref in the unit tests) closes on its own terms.
    """

    def __init__(self, start_response: StartResponse) -> None:
        close = getattr(getattr(start_response, "__self__", None), "force_close", None)
        self._close: Callable[[], object] | None = close if callable(close) else None
        self.called = False

    def __call__(self) -> None:
        self.called = True
        if self._close is not None:
            self._close()


class GatewayWSGI:
    def __init__(
        self,
        app: WSGIApp,
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
        # The body limit nginx enforces (client_max_body_size), enforced here too:
        # a declared length before the body is read, a chunked body as it is read.
        # None: no limit at this layer.
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start = time.time()
        trusted = self.allow.trusts(environ.get("REMOTE_ADDR"))
        request_id = trace.request_id_from(environ.get("HTTP_X_REQUEST_ID") if trusted else None)
        if trusted:
            apply_forwarded(environ)
        environ["HTTP_X_REQUEST_ID"] = request_id
        close = ConnectionCloser(start_response)
        environ[CLOSE_CONNECTION] = close

        def traced(headers: Headers, end: float | None) -> Headers:
            present = frozenset(k.lower() for k, _ in headers)
            return headers + trace.trace_headers(
                mode=self.mode,
                server=self.server,
                pid=os.getpid(),
                worker=os.getpid(),
                start=start,
                end=end,
                request_id=request_id,
                present=present,
            )

        answer = preflight(
            http_version=http_version(environ),
            host=environ.get("HTTP_HOST"),
            proxied=trusted and "HTTP_X_FORWARDED_FOR" in environ,
            path=environ.get("PATH_INFO"),
            content_length=environ.get("CONTENT_LENGTH"),
            transfer_encoding=environ.get("HTTP_TRANSFER_ENCODING"),
            max_body_bytes=self.max_body_bytes,
            mode=self.mode,
        )
        if answer is not None:
            if answer.close:
                close()
            return [_send_answer(answer, start_response, traced)]
        # RFC 9112 §3.2.2 (gateway.proxy): an absolute-form target names the host.
        # RAW_URI is gunicorn's: the request-target exactly as the client sent it.
        host = request_host(
            environ.get("RAW_URI", ""), environ.get("HTTP_HOST"), http_version(environ)
        )
        if host is not None:
            environ["HTTP_HOST"] = host

        chunked = (
            "HTTP_TRANSFER_ENCODING" in environ
            and parse_digits(environ.get("CONTENT_LENGTH")) is None
        )
        body = None
        if chunked:
            body = LimitedInput(environ["wsgi.input"], self.max_body_bytes)
            environ["wsgi.input"] = body
        return _Response(
            self.app, environ, start_response, traced, close, body, self.max_body_bytes
        )


def http_version(environ: Environ) -> str:
    """SERVER_PROTOCOL without "HTTP/": "1.1", "1.0"."""
    return str(environ.get("SERVER_PROTOCOL", "")).removeprefix("HTTP/")


def _send_answer(answer: Answer, start_response: StartResponse, traced: Traced) -> bytes:
    body = json.dumps(answer.data).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response(status_line(answer.status), traced(headers, time.time()))
    return body


class LimitedInput:
    """A chunked ``wsgi.input`` counted against the body limit (PEP 3333's four
    read methods), which also knows whether the app read it to its end.

    Past the limit a read raises BodyTooLarge, which the layer turns into a 413
    when the app lets it through (the demo app does: it only handles its own
    errors); bytes already read are not undone. ``limit`` None: no limit.
    """

    def __init__(self, stream: IO[bytes], limit: int | None) -> None:
        self.stream = stream
        self.limit = BodyLimit(limit) if limit is not None else None
        self.finished = False  # a read reached the end of the body

    def _counted(self, data: bytes, whole: bool = False) -> bytes:
        if self.limit is not None:
            self.limit.count(len(data))
        if whole or not data:
            self.finished = True
        return data

    def read(self, *args: int) -> bytes:
        whole = not args or args[0] is None or args[0] < 0
        return self._counted(self.stream.read(*args), whole)

    def readline(self, *args: int) -> bytes:
        return self._counted(self.stream.readline(*args))

    def readlines(self, *args: int) -> list[bytes]:
        lines = self.stream.readlines(*args)
        self._counted(b"".join(lines), not args)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


def apply_forwarded(environ: Environ) -> None:
    """What nginx says about the client and the mount point, as WSGI keys.

    PEP 3333: SCRIPT_NAME is "the initial portion of the request URL's path
    that corresponds to the application object", PATH_INFO "the remainder".
    """
    mount = split_mount(environ.get("PATH_INFO", ""), environ.get("HTTP_X_FORWARDED_PREFIX"))
    if mount is not None:
        script_name, path_info = mount
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + script_name
        environ["PATH_INFO"] = path_info
    if (client := client_address(environ.get("HTTP_X_FORWARDED_FOR"))) is not None:
        environ["REMOTE_ADDR"] = client
    if (scheme := scheme_from(environ.get("HTTP_X_FORWARDED_PROTO"))) is not None:
        environ["wsgi.url_scheme"] = scheme
    if host := environ.get("HTTP_X_FORWARDED_HOST"):
        environ["HTTP_HOST"] = host


class _Response:
    """Calls the app and holds its status line back until End is known.

    A list or tuple result means the app has finished (PEP 3333 lets a server
    send headers only with the first body bytes), so End goes in; an iterator
    streams, so its headers leave with the first chunk, carrying Start only.
    A body read past the limit (BodyTooLarge) before anything was sent becomes
    a 413 instead of the app's answer.
    """

    def __init__(
        self,
        app: WSGIApp,
        environ: Environ,
        start_response: StartResponse,
        traced: Traced,
        close: ConnectionCloser,
        body: LimitedInput | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        self.start_response = start_response
        self.body = body
        self.traced = traced
        self.close_connection = close
        self.environ = environ
        self.max_body_bytes = max_body_bytes
        self.pending: tuple[str, Headers, ExcInfo | None] | None = None
        self.sent = False
        self.result: Iterable[bytes]
        try:
            self.result = app(environ, self._capture)
        except BodyTooLarge as exc:
            self.result = self._too_large(exc)
            return
        if isinstance(self.result, list | tuple):
            self._send(time.time())

    def _too_large(self, exc: BodyTooLarge) -> list[bytes]:
        # RFC 9110 §15.5.14 (413); the rest of the body stays unread, so the
        # connection cannot carry another request (RFC 9112 §9.3).
        self.close_connection()
        self.pending = None
        self.sent = True
        body = error_body(413, str(exc))
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        self.start_response(status_line(413), self.traced(headers, time.time()))
        return [body]

    def _capture(
        self, status: str, headers: Headers, exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        if exc_info is not None and self.sent:
            # PEP 3333: with headers already sent, start_response must re-raise.
            raise exc_info[1].with_traceback(exc_info[2])
        self.pending = (status, headers, exc_info)
        return self._write

    def _write(self, data: bytes) -> object:
        # PEP 3333's legacy write(): the headers must go out first.
        write = self._send(None)
        return write(data)

    def _send(self, end: float | None) -> Callable[[bytes], object]:
        if self.pending is None:
            raise RuntimeError("the app returned without calling start_response")
        status, headers, exc_info = self.pending
        self.sent = True
        self.pending = None
        return self.start_response(status, self.traced(headers, end), exc_info)

    def __iter__(self) -> Iterator[bytes]:
        if isinstance(self.result, list | tuple):
            yield from self.result
            return
        try:
            for chunk in self.result:
                if self.pending is not None:
                    self._send(None)
                yield chunk
        except BodyTooLarge as exc:
            if self.sent:
                raise  # too late for a 413: the server cuts the connection
            yield from self._too_large(exc)
            return
        if self.pending is not None:  # an empty stream
            self._send(time.time())

    def close(self) -> None:
        abandon = self.body is not None and not self.body.finished
        if abandon:
            # A chunked body the app left unread: a server that drains the rest
            # after the answer can meet a framing error there and answer it too
            # (gthread sent a 405, then a 400, for one request). The connection
            # ends after this answer instead (RFC 9112 §9.6, §11.2).
            self.close_connection()
        # PEP 3333: the server must call close() on the app's iterable.
        close = getattr(self.result, "close", None)
        try:
            if close is not None:
                close()
        finally:
            # A body left unread on purpose (chunked, or one the CGI bridge gave
            # up on: a stalled sender's 408) is not waited for; any other is.
            if not abandon and not self.close_connection.called:
                drain(self.environ, self.max_body_bytes)


def drain(environ: Environ, limit: int | None, budget_s: float = DRAIN_S) -> int:
    """Read and drop what the app left of the request body; the bytes dropped.

    An app may answer before reading the body (a form over its limit: 413).
    The sync workers then close the connection, and a peer still writing the
    body gets EPIPE or a reset before it reads the answer: nginx, which sends
    the whole body it buffered, reports a 502 instead of the app's 413 (RFC
    9112 §9.6, quoted at ``gateway.framing.DRAIN_S``). Through nginx the body
    is already on its way and costs a read; straight at the gateway a slow
    sender is given ``budget_s``, each read ``DRAIN_IDLE_S``, and at most
    ``limit`` bytes (the body limit).
    """
    stream = environ.get("wsgi.input")
    if stream is None:
        return 0
    sock = environ.get("gunicorn.socket")
    timeout = sock.gettimeout() if sock is not None else None
    deadline = time.monotonic() + budget_s
    dropped = 0
    try:
        while limit is None or dropped <= limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if sock is not None:
                sock.settimeout(min(remaining, DRAIN_IDLE_S))
            chunk = stream.read(DRAIN_CHUNK)
            if not chunk:
                break
            dropped += len(chunk)
    except (OSError, ValueError, BodyTooLarge):
        pass  # a reset, a timeout, a malformed or over-limit body: the server closes
    finally:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(timeout)
    return dropped
