"""gunicorn's own error answers, in the lab's JSON shape.

When gunicorn's parser refuses a request (a malformed request line, a header
too large, bad framing) it answers before any app runs, in HTML or plain text.
gunicorn has no setting for those pages, so ``install_json_error_pages``
replaces its two writers; gunicorn is pinned below its next major version
(pyproject.toml) and tests/integration/test_hostile.py checks the result on
every gateway.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from http import HTTPStatus

from gunicorn import util as gunicorn_util
from gunicorn.asgi import protocol as gunicorn_asgi
from gunicorn.asgi.protocol import ASGIProtocol

from gateway.errors import error_body, reason, status_line


def json_error(status: int, message: str) -> bytes:
    """gunicorn's own answer to a request it cannot parse, as a whole HTTP/1.1 response.

    The lab's error shape (``{"error", "status"}``) instead of gunicorn's HTML or
    plain text, so a malformed request sent straight to a gateway, or one nginx
    passes on and the gateway refuses (a 9 KiB header, 101 headers), is answered
    like every other error. ``Connection: close``: after a request it could not
    parse, the server cannot know where the next one starts (RFC 9112 §2.2).
    """
    phrase = reason(status)
    text = f"{phrase.lower()}: {message}" if message and message != phrase else phrase.lower()
    body = error_body(status, text)
    head = (
        f"HTTP/1.1 {status_line(status)}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _write_json_error(sock: socket.socket, status_int: int, _reason: str, mesg: str) -> None:
    # Replaces gunicorn.util.write_error, which the sync and gthread workers call
    # (Worker.handle_error) for requests their parser refuses.
    # gunicorn's own reason is replaced by the lab's table (gateway/errors.py).
    gunicorn_util.write_nonblock(sock, json_error(status_int, mesg))


def _send_json_error(
    self: ASGIProtocol, status: int, message: str, extra_headers: Iterable[tuple[str, str]] = ()
) -> None:
    # Replaces ASGIProtocol._send_error_response (the asgi worker's parser errors);
    # extra headers (e.g. Allow) go in before Connection, as gunicorn does.
    response = json_error(status, message)
    head, _, body = response.partition(b"\r\n\r\n")
    extra = "".join(f"{name}: {value}\r\n" for name, value in extra_headers).encode("latin-1")
    status_line, _, rest = head.partition(b"\r\n")
    self._safe_write(status_line + b"\r\n" + extra + rest + b"\r\n\r\n" + body)


def install_json_error_pages() -> None:
    """Make gunicorn's own error answers JSON in every worker class (idempotent).

    gunicorn has no setting for its error pages, so its two writers are
    replaced; gunicorn is pinned below the next major version (pyproject.toml)
    and tests/integration/test_hostile.py checks the result on every gateway.
    """
    gunicorn_util.write_error = _write_json_error
    ASGIProtocol._send_error_response = _send_json_error
    use_lab_reason_phrases()


def use_lab_reason_phrases() -> None:
    """The asyncio worker's status lines read as every other mode's (gateway/errors.py).

    An ASGI app sends a status code without a phrase, and gunicorn's asyncio
    worker takes the phrase from a table of its own ("413 Payload Too Large",
    "431 Unknown"), while the WSGI modes send the app's (http.HTTPStatus, "413
    Request Entity Too Large" on Python 3.11). Filling that table from the
    lab's makes a status read the same in every mode. Called before the
    workers fork, so their status-line cache starts from it.
    """
    gunicorn_asgi._REASON_PHRASES.update({int(s): reason(int(s)) for s in HTTPStatus})
