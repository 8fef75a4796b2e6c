"""CGI mode's HTTP front: a WSGI callable, served by gunicorn, that runs the script.

gunicorn parses HTTP; this module turns each request into a ``CGIRequest``,
runs the script with ``runner.CGIProcess`` and sends back what the script
answered (RFC 3875 §6), the shape nginx → fcgiwrap → script has, with
gunicorn in fcgiwrap's seat. The gateway layer in front (gateway.middleware)
has already moved the mount point into SCRIPT_NAME and the trusted client
address into REMOTE_ADDR; it keeps the trace headers set here.

Responses are buffered: the whole output is read, the script has exited, and
the response carries X-Gateway-End. A script that sends ``X-Accel-Buffering: no``
(nginx's own "do not buffer me" header, which nginx also obeys) is streamed:
its body goes out as it is written, and the response carries Start only.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import IO, Final
from urllib.parse import unquote_to_bytes

from gateway import trace
from gateway._types import Environ, Headers, StartResponse
from gateway.cgi.environ import (
    CGIRequest,
    CGIRequestError,
    build_meta_variables,
    oversized_variables,
)
from gateway.cgi.response import (
    CGIResponse,
    CGIResponseError,
    find_header_end,
    parse_cgi_head,
    parse_cgi_response,
)
from gateway.cgi.runner import (
    READ_SIZE,
    Body,
    CGIBodyTimeout,
    CGIBusy,
    CGIError,
    CGILimits,
    CGIProcess,
    ScriptSlots,
)
from gateway.config import Settings
from gateway.errors import error_body, status_line
from gateway.framing import BodyLimit, has_body
from gateway.middleware.wsgi import CLOSE_CONNECTION
from gateway.numbers import parse_digits

logger = logging.getLogger("gateway.cgi")

# RFC 3875 §6.2.2 local redirects are followed inside the gateway; a script
# that keeps redirecting to itself is stopped after this many.
MAX_LOCAL_REDIRECTS: Final = 5
# Response headers the bridge sets itself; the script's own are dropped.
BRIDGE_HEADERS: Final = frozenset({"content-length", trace.QUEUE.lower()} | trace.APP_SET)


class BridgeError(Exception):
    """An error answer: ``{"error": message, "status": status}``."""

    def __init__(self, status: int, message: str, headers: Headers | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def _header_name(key: str) -> str:
    """``HTTP_X_FOO`` -> ``X-Foo``: gunicorn turned "-" into "_" (and drops
    names that had a "_", so nothing is lost by turning it back)."""
    return "-".join(part.capitalize() for part in key[5:].split("_"))


def _host_port(host: str, scheme: str) -> tuple[str, int | None]:
    """A Host header as (SERVER_NAME, port); RFC 3875 §4.1.14 keeps IPv6 brackets."""
    if host.startswith("["):
        name, _, rest = host.partition("]")
        name, port = name + "]", rest.removeprefix(":")
    else:
        name, _, port = host.partition(":")
    if not port:
        return name, 443 if scheme == "https" else 80
    return name, parse_digits(port)  # RFC 3986 §3.2.3: port = *DIGIT (ASCII)


def request_from_environ(environ: Environ, content_length: int | None) -> CGIRequest:
    """The CGIRequest for a WSGI environ (gunicorn's, after the gateway layer)."""
    headers: Headers = [
        (_header_name(k), v)
        for k, v in environ.items()
        if k.startswith("HTTP_") and isinstance(v, str)
    ]
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", environ["CONTENT_TYPE"]))
    scheme = environ.get("wsgi.url_scheme", "http")
    server_name = environ.get("SERVER_NAME", "")
    server_port = parse_digits(environ.get("SERVER_PORT")) or 0
    # PEP 3333 URL reconstruction prefers HTTP_HOST: it names the server the
    # client asked for (X-Forwarded-Host, when the gateway layer believed it).
    if host := environ.get("HTTP_HOST"):
        name, port = _host_port(host, scheme)
        if name and port is not None:
            server_name, server_port = name, port
    return CGIRequest(
        method=environ["REQUEST_METHOD"],
        script_name=environ.get("SCRIPT_NAME", ""),
        path_info=environ.get("PATH_INFO", ""),
        query_string=environ.get("QUERY_STRING", ""),
        headers=headers,
        remote_addr=environ.get("REMOTE_ADDR", ""),
        remote_port=parse_digits(environ.get("REMOTE_PORT")),
        server_name=server_name,
        server_port=server_port,
        server_protocol=environ.get("SERVER_PROTOCOL", "HTTP/1.0"),
        scheme=scheme,
        content_length=content_length,
    )


def redirected_request(req: CGIRequest, location: str) -> CGIRequest:
    """The request a §6.2.2 local redirect asks the server to serve instead.

    RFC 3875 §6.2.2: "the server MUST generate the response that it would have
    produced in response to a request containing the URL scheme-name "://"
    server-name ":" server-port local-pathquery". Like Apache, the new request
    is a GET (a HEAD stays HEAD) without the original body.
    """
    path, _, query = location.partition("?")
    decoded = unquote_to_bytes(path).decode("latin-1")  # PATH_INFO is decoded (§4.1.5)
    mount = req.script_name
    if mount and decoded != mount and not decoded.startswith(mount + "/"):
        raise BridgeError(502, f"local redirect to {path!r}, outside this gateway's {mount!r}")
    return replace(
        req,
        method="HEAD" if req.method == "HEAD" else "GET",
        path_info=decoded[len(mount) :],
        query_string=query,
        headers=[h for h in req.headers if h[0].lower() not in ("content-type", "content-length")],
        content_length=None,
    )


class ClientBody:
    """The request body from ``wsgi.input``, never read past its length or its deadline.

    PEP 3333: never read past CONTENT_LENGTH. The deadline: every read waits
    at most until ``deadline`` (``time.monotonic()``; set to the script's own
    once it runs), so a client that stalls its body cannot hold a script slot
    past the script's deadline: the read gives up (CGIBodyTimeout, 408). The
    wait is bounded with a timeout on the connection's socket
    (``gunicorn.socket``), the one way to bound a blocking read from outside.
    """

    def __init__(self, environ: Environ, length: int, deadline: float) -> None:
        self.stream: IO[bytes] = environ["wsgi.input"]
        self.sock: socket.socket | None = environ.get("gunicorn.socket")
        self.remaining = length
        self.deadline = deadline

    def __iter__(self) -> Iterator[bytes]:
        while self.remaining > 0:
            if self.sock is not None:
                self.sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
            try:
                chunk = self.stream.read(min(READ_SIZE, self.remaining))
            except TimeoutError:
                raise CGIBodyTimeout(
                    f"the request body did not arrive in time ({self.remaining} bytes missing)"
                ) from None
            finally:
                self.disarm()
            if not chunk:
                return  # the client sent less than it announced
            self.remaining -= len(chunk)
            yield chunk

    def disarm(self) -> None:
        """The socket back to blocking, for the server's own reads and writes."""
        if self.sock is not None:
            self.sock.settimeout(None)


def _queue_ms(seconds: float) -> tuple[str, str]:
    return (trace.QUEUE, f"{seconds * 1000:.3f}")


def _trace(proc: CGIProcess, *, end: bool = True) -> Headers:
    headers = [
        (trace.PID, str(proc.pid)),
        (trace.START, trace.timestamp(proc.start)),
        _queue_ms(proc.queued_s),
    ]
    if end and proc.end is not None:
        headers.append((trace.END, trace.timestamp(proc.end)))
    return headers


def _script_headers(headers: Headers) -> Headers:
    return [(k, v) for k, v in headers if k.lower() not in BRIDGE_HEADERS]


class CGIBridge:
    def __init__(self, settings: Settings) -> None:
        self.script = settings.cgi_script
        self.max_body_bytes = settings.max_body_bytes
        self.limits = CGILimits(
            timeout_s=settings.timeout_s, max_output_bytes=settings.cgi_max_output_bytes
        )
        self.slots = ScriptSlots(
            settings.cgi_max_scripts, settings.cgi_queue_max, settings.cgi_queue_wait_s
        )

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            return self._serve(environ, start_response)
        except BridgeError as fail:
            if has_body(environ.get("CONTENT_LENGTH"), environ.get("HTTP_TRANSFER_ENCODING")):
                # The body may be partly unread: the connection cannot carry
                # another request (RFC 9112 §9.3), so it ends after this answer.
                environ.get(CLOSE_CONNECTION, lambda: None)()
            body = error_body(fail.status, fail.message)
            headers = [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                *fail.headers,
            ]
            start_response(status_line(fail.status), headers)
            return [body]

    def _request_body(self, environ: Environ) -> tuple[int | None, Body]:
        raw = environ.get("CONTENT_LENGTH") or ""
        # The deadline starts now for a body read before the script runs (a
        # chunked one) and is moved to the script's own once it runs.
        deadline = time.monotonic() + self.limits.timeout_s
        if raw:
            if (length := parse_digits(raw)) is None:
                raise BridgeError(400, f"invalid Content-Length {raw!r}")
            # A declared length over the limit never gets here: GatewayWSGI,
            # around the bridge with the same limit, answers it with a 413 first.
            return length, ClientBody(environ, length, deadline)
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            # RFC 3875 §4.2: the script is told the body's length, so a chunked
            # body is read first (bounded), then passed on with CONTENT_LENGTH.
            try:
                data = b"".join(ClientBody(environ, self.max_body_bytes + 1, deadline))
            except CGIBodyTimeout as exc:
                raise BridgeError(exc.status, str(exc)) from None
            # The bound of a body held in memory; GatewayWSGI turns it into its 413
            # (its own count of the chunked body, with the same limit, stops first).
            BodyLimit(self.max_body_bytes).count(len(data))
            return len(data), data
        return None, b""

    def _serve(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        length, body = self._request_body(environ)
        try:
            return self._serve_body(environ, start_response, length, body)
        finally:
            if isinstance(body, ClientBody):
                body.disarm()

    def _serve_body(
        self, environ: Environ, start_response: StartResponse, length: int | None, body: Body
    ) -> Iterable[bytes]:
        req = request_from_environ(environ, length)
        head_only = req.method == "HEAD"
        for _ in range(MAX_LOCAL_REDIRECTS + 1):
            try:
                meta = build_meta_variables(req)
            except CGIRequestError as exc:
                raise BridgeError(400, str(exc)) from None
            if too_large := oversized_variables(meta):
                # RFC 6585 §5: 431 when "its header fields are too large"; a
                # script's environment string has a size limit of the kernel's.
                message = f"header fields too large for a CGI environment: {too_large}"
                raise BridgeError(431, message)
            result = self._run(meta, body, head_only, start_response)
            if isinstance(result, str):
                req, body = redirected_request(req, result), b""
                continue
            return result
        raise BridgeError(502, f"more than {MAX_LOCAL_REDIRECTS} local redirects")

    def _run(
        self, meta: dict[str, str], body: Body, head_only: bool, start_response: StartResponse
    ) -> Iterable[bytes] | str:
        """Run the script once: the response body, or a local redirect's location."""
        try:
            proc = CGIProcess(self.script, meta, body, self.limits, slots=self.slots)
        except CGIBusy as exc:
            # RFC 9110 §10.2.3: Retry-After with a 503 says how long the client
            # "ought to wait before making a follow-up request".
            headers = [("Retry-After", "1"), _queue_ms(exc.queued_s)]
            raise BridgeError(exc.status, str(exc), headers) from None
        except CGIError as exc:
            raise BridgeError(exc.status, str(exc)) from None
        if isinstance(body, ClientBody):
            body.deadline = proc.deadline  # the body shares the script's deadline
        streaming = False
        try:
            stdout = proc.stdout()
            data = b""
            for chunk in stdout:
                data += chunk
                if (end := find_header_end(data)) is not None:
                    head = parse_cgi_head(data[:end], has_body=False)
                    if (
                        not head_only
                        and head.kind in ("document", "client-redirect-doc")
                        and head.header("Content-Type") is not None
                        and (head.header("X-Accel-Buffering") or "").lower() == "no"
                    ):
                        streaming = True
                        headers = _script_headers(head.headers) + _trace(proc, end=False)
                        start_response(head.status_line, headers)
                        return _streamed(proc, data[end:], stdout)
                    break
            data += b"".join(stdout)
            exit_code = proc.wait()
            try:
                resp = parse_cgi_response(data)
            except CGIResponseError as exc:
                logger.warning(
                    "cgi[%d] exited %d with a bad response (%s); stderr tail: %s",
                    proc.pid,
                    exit_code,
                    exc,
                    " | ".join(proc.stderr_tail),
                )
                what = f"crashed (exit status {exit_code})" if exit_code else "exited"
                message = f"the CGI script {what} without a valid response: {exc}"
                raise BridgeError(502, message) from None
            if exit_code != 0:
                logger.warning("cgi[%d] exited %d after a valid response", proc.pid, exit_code)
            if resp.kind == "local-redirect":
                assert resp.location is not None
                return resp.location
            start_response(resp.status_line, self._buffered_headers(resp, proc, head_only))
            return [] if head_only else [resp.body]
        except CGIResponseError as exc:
            proc.close()
            message = f"the CGI script sent invalid headers: {exc}"
            raise BridgeError(502, message, _trace(proc)) from None
        except CGIError as exc:
            proc.close()
            raise BridgeError(exc.status, str(exc), _trace(proc)) from None
        except BridgeError as fail:
            proc.close()
            fail.headers += _trace(proc)
            raise
        finally:
            if not streaming:
                proc.close()

    @staticmethod
    def _buffered_headers(resp: CGIResponse, proc: CGIProcess, head_only: bool) -> Headers:
        headers = _script_headers(resp.headers)
        given = resp.header("Content-Length")
        if resp.status == 204:
            pass  # RFC 9110 §8.6: no Content-Length in a 204
        elif head_only and (declared := parse_digits(given)) is not None:
            headers.append(("Content-Length", str(declared)))  # what a GET would have sent
        elif head_only and not resp.body:
            # RFC 9110 §9.3.2: a HEAD answer carries the headers a GET would have.
            # A script that gives no length and (rightly, RFC 3875 §4.3.3) no body
            # says nothing about the GET's length (a stream has none): send none.
            pass
        else:
            headers.append(("Content-Length", str(len(resp.body))))
        return headers + _trace(proc)


def _streamed(proc: CGIProcess, first: bytes, stdout: Iterator[bytes]) -> Iterator[bytes]:
    """The rest of a streamed response; the script is killed if the client leaves."""
    try:
        if first:
            yield first
        yield from stdout
        proc.wait()
    except CGIError as exc:
        # The status line is gone already; failing the iteration makes the
        # server cut the connection, so the client sees a truncated response.
        logger.warning("cgi[%d] stream ended early: %s", proc.pid, exc)
        raise
    finally:
        proc.close()


def make_cgi_app(settings: Settings) -> CGIBridge:
    """The WSGI callable for CGI mode, running ``settings.cgi_script`` per request."""
    return CGIBridge(settings)
