"""Refusing a request body before the app reads it: too long, or coded oddly.

Both layers (WSGI and ASGI) ask these before calling the app, so a gateway
reached directly defends itself the way nginx does in front of it. Pure functions.
"""

from __future__ import annotations


def over_limit(content_length: str | None, limit: int | None) -> str | None:
    """The 413 message for a declared body longer than ``limit``, else None.

    RFC 9110 §15.5.14: the server "MAY terminate the request" when the content
    is larger than it is willing to process; a declared length tells before a
    byte is read. An invalid value is left to the server and the app.
    """
    if limit is None or not content_length or not content_length.isdigit():
        return None
    if int(content_length) <= limit:
        return None
    return f"request body of {content_length} bytes is over the limit of {limit} bytes"


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
