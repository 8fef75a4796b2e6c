"""Refusing a request body before the app reads it: too long, or coded oddly.

Both layers (WSGI and ASGI) ask these, through gateway.preflight, before
calling the app, so a gateway reached directly defends itself the way nginx
does in front of it; ``BodyLimit`` then counts the bytes actually read, which
is the only check a chunked body (no declared length) can get. Pure.
"""

from __future__ import annotations

from typing import Final

from gateway.numbers import parse_digits

# Reading what an app left of a request body before the connection closes (each
# layer's ``drain``): at most this long in all, at most this long per read (a
# sender this quiet is not sending a body it buffered, as nginx does), in reads
# of this size. RFC 9112 §9.6: a server that closes while the client may still
# send risks that "the client will not be able to read the last HTTP response".
DRAIN_S: Final = 2.0
DRAIN_IDLE_S: Final = 0.25
DRAIN_CHUNK: Final = 64 * 1024


class BodyTooLarge(Exception):
    """Raised from a body read that went past the limit (the layer answers 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is over the limit of {limit} bytes")
        self.limit = limit


def over_limit(content_length: str | None, limit: int | None) -> str | None:
    """The 413 message for a declared body longer than ``limit``, else None.

    RFC 9110 §15.5.14: the server "MAY terminate the request" when the content
    is larger than it is willing to process; a declared length tells before a
    byte is read. An invalid value is left to the server and the app.
    """
    length = parse_digits(content_length)
    if limit is None or length is None or length <= limit:
        return None
    return f"request body of {content_length} bytes is over the limit of {limit} bytes"


def has_body(content_length: str | None, transfer_encoding: str | None) -> bool:
    """Whether the request carries a body (RFC 9112 §6.3: framed by one of the two)."""
    if transfer_encoding is not None:
        return True
    return bool(content_length) and parse_digits(content_length) != 0


class BodyLimit:
    """Counts body bytes as the app reads them; past ``limit``: BodyTooLarge.

    A chunked body declares no length (RFC 9112 §7.1), so ``over_limit`` cannot
    see it coming; the bytes are counted instead, the way nginx counts them
    against client_max_body_size.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.read = 0

    def count(self, size: int) -> None:
        self.read += size
        if self.read > self.limit:
            raise BodyTooLarge(self.limit)


def unsupported_coding(transfer_encoding: str | None) -> str | None:
    """The 501 message for a request body in a transfer coding other than chunked.

    RFC 9112 §6.1: "A server that receives a request message with a transfer
    coding it does not understand SHOULD respond with 501 (Not Implemented)."
    gunicorn frames ``gzip, chunked`` by its final chunked coding but does not
    decode the gzip, so the app would read coded bytes as the content.
    """
    if transfer_encoding is None:
        return None
    codings = [c.strip(" \t").lower() for c in transfer_encoding.split(",")]
    if codings == ["chunked"]:
        return None
    return f"transfer coding {transfer_encoding!r} is not supported (only chunked)"
