"""The gateway layer around a WSGI app (WSGI mode, and the CGI bridge in CGI mode).

In order, for every request: believe forwarded headers only from a trusted peer,
move the mount point into SCRIPT_NAME, answer /healthz, call the app, and add
the trace headers to its response.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from gateway import trace
from gateway.framing import over_limit, unsupported_coding
from gateway.proxy import AllowList, client_address, scheme_from, split_mount
from gateway.servers.registry import default_server

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Headers = list[tuple[str, str]]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


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
        # The body limit nginx enforces (client_max_body_size), enforced here too
        # for a declared length, so a gateway called directly does not wait for
        # a body it would never accept. None: no limit at this layer.
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start = time.time()
        trusted = self.allow.trusts(environ.get("REMOTE_ADDR"))
        request_id = trace.request_id_from(environ.get("HTTP_X_REQUEST_ID") if trusted else None)
        if trusted:
            apply_forwarded(environ)
        environ["HTTP_X_REQUEST_ID"] = request_id

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

        def answer(status: str, data: dict[str, object]) -> list[bytes]:
            body = json.dumps(data).encode()
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            start_response(status, traced(headers, time.time()))
            return [body]

        if environ.get("SERVER_PROTOCOL") == "HTTP/1.1" and not environ.get("HTTP_HOST"):
            # RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
            # code to any HTTP/1.1 request message that lacks a Host header field".
            error = "HTTP/1.1 request without a Host header"
            return answer("400 Bad Request", {"error": error, "status": 400})

        if (too_big := over_limit(environ.get("CONTENT_LENGTH"), self.max_body_bytes)) is not None:
            return answer("413 Content Too Large", {"error": too_big, "status": 413})

        if (coding := unsupported_coding(environ.get("HTTP_TRANSFER_ENCODING"))) is not None:
            return answer("501 Not Implemented", {"error": coding, "status": 501})

        if environ.get("PATH_INFO") == "/healthz":
            return answer("200 OK", {"status": "ok", "mode": self.mode})

        return _Response(self.app, environ, start_response, traced)


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
    """

    def __init__(
        self,
        app: WSGIApp,
        environ: Environ,
        start_response: StartResponse,
        traced: Callable[[Headers, float | None], Headers],
    ) -> None:
        self.start_response = start_response
        self.traced = traced
        self.pending: tuple[str, Headers, ExcInfo | None] | None = None
        self.sent = False
        self.result = app(environ, self._capture)
        if isinstance(self.result, list | tuple):
            self._send(time.time())

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
        for chunk in self.result:
            if self.pending is not None:
                self._send(None)
            yield chunk
        if self.pending is not None:  # an empty stream
            self._send(time.time())

    def close(self) -> None:
        # PEP 3333: the server must call close() on the app's iterable.
        close = getattr(self.result, "close", None)
        if close is not None:
            close()
