"""What both gateway layers answer before the app runs: one pure function.

The WSGI layer (gateway/middleware/wsgi.py) and the ASGI layer
(gateway/middleware/asgi.py) each read the request in their protocol's terms,
call ``preflight`` with the same plain values, and send what it returns (or
call the app when it returns None). So the refusals a gateway makes by itself
(Host, 413, 501) and its /healthz answer cannot drift apart between protocols.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import error_data
from gateway.framing import has_body, over_limit, unsupported_coding

HOST_MISSING = "HTTP/1.1 request without a Host header"
HANDSHAKE_BODY = "a WebSocket handshake with a body (Content-Length or Transfer-Encoding)"


@dataclass(frozen=True)
class Answer:
    """A response the layer sends instead of calling the app."""

    status: int
    data: dict[str, object]
    # The request has a body nobody will read: the connection must end after
    # this answer, since the server cannot know where the next request starts
    # unless it reads the body through (RFC 9112 §6.3: the body's length is
    # what frames the next message; §11.2: bytes taken for a request that were
    # not meant as one are how requests are smuggled).
    close: bool


def preflight(
    *,
    http_version: str,
    host: str | None,
    proxied: bool,
    path: str | None,
    content_length: str | None,
    transfer_encoding: str | None,
    max_body_bytes: int | None,
    mode: str,
) -> Answer | None:
    """The layer's own answer to a request, or None to call the app.

    http_version: "1.1", "1.0" (WSGI's SERVER_PROTOCOL without "HTTP/").
    host: the Host header's value, "" when sent empty, None when absent.
    proxied: a trusted proxy (nginx) forwarded the request (its X-Forwarded-For
        came from an address in forwarded_allow_ips).
    path: the app-relative path of an HTTP request (None for a WebSocket).
    """
    close = has_body(content_length, transfer_encoding)
    if http_version == "1.1" and host is None and not proxied:
        # RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
        # code to any HTTP/1.1 request message that lacks a Host header field".
        # Only a missing one: an empty Host is what a client MUST send when the
        # target URI has no authority (§3.2). And only on a direct request:
        # behind nginx the HTTP/1.1 is nginx's own upstream hop, while the
        # client's request may be HTTP/1.0 or 0.9, where Host is optional; nginx
        # refused an HTTP/1.1 client without Host itself, and sends no Host
        # upstream for a client that sent none (an empty value drops a
        # proxy_set_header), so a missing Host from nginx is an older client's.
        return Answer(400, error_data(400, HOST_MISSING), close)
    if path is None and close:
        # A WebSocket opening handshake is a GET (RFC 6455 §4.1), and what
        # follows it on the connection is frames: a body would be read as frames.
        # RFC 9110 §9.3.1: content in a GET "might lead some implementations to
        # reject the request and close the connection because of its potential
        # as a request smuggling attack". Refused, under every server alike.
        return Answer(400, error_data(400, HANDSHAKE_BODY), True)
    if (too_big := over_limit(content_length, max_body_bytes)) is not None:
        # RFC 9110 §15.5.14: "The server MAY terminate the request, if the
        # protocol version in use allows it; otherwise, the server MAY close
        # the connection." HTTP/1.1 can only stop a request by closing: an
        # unread body of that size is never drained, so the connection ends here.
        return Answer(413, error_data(413, too_big), True)
    if (coding := unsupported_coding(transfer_encoding)) is not None:
        # RFC 9112 §6.1 (501 for a coding the server does not understand); the
        # body cannot be framed, so nothing after it can be read either.
        return Answer(501, error_data(501, coding), True)
    if path == "/healthz":
        return Answer(200, {"status": "ok", "mode": mode}, close)
    return None
