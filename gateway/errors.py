"""The one shape of every error the gateway answers itself, and the one reason-phrase table.

Every 4xx/5xx the lab produces is JSON ``{"error": ..., "status": N}``
(CONTRACT.md). The gateway answers errors from several places: the WSGI and
ASGI layers' refusals (and the ASGI layer's 500 for an app that failed), the
CGI bridge, gunicorn's and uvicorn's own parser errors
(gateway/servers/error_pages.py, gateway/servers/uvicorn.py). They all build
their status line and body here, so a 413 reads the same from every one of them.

Reason phrases come from ``http.HTTPStatus``, the table the demo app (which
must stay self-contained) and uvicorn (``STATUS_PHRASES``) use too, so the
gateway and the app agree on whatever interpreter runs them. RFC 9112 §4: "A
client SHOULD ignore the reason-phrase content", so the phrase is for people;
it only has to be the same everywhere. Pure functions.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Final

# Status codes outside the standard table (none today) read as a class name.
_CLASS_PHRASES: Final = {4: "Client Error", 5: "Server Error"}


def reason(status: int) -> str:
    """The reason phrase for ``status`` (RFC 9112 §4 status-line)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return _CLASS_PHRASES.get(status // 100, "Unknown")


def status_line(status: int) -> str:
    """``413`` -> ``"413 Request Entity Too Large"``: a WSGI status string (PEP 3333)."""
    return f"{status} {reason(status)}"


def error_data(status: int, message: str, **extra: object) -> dict[str, object]:
    """The lab's error object; ``extra`` adds keys (never replaces error or status)."""
    return {**extra, "error": message, "status": status}


def error_body(status: int, message: str, **extra: object) -> bytes:
    """The JSON body of an error answer."""
    return json.dumps(error_data(status, message, **extra)).encode()
