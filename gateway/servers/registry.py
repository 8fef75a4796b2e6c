"""Which servers can run each mode, and what nginx speaks to each (CONTRACT.md,
"Servers behind each route").

Pure data and checks, standard library only and importing nothing from the
gateway: the nginx renderer reads it too (in the nginx image, which carries no
gunicorn). The first server of each mode is its default.

The wire is the protocol between nginx and the server; the app never sees it.
WSGI and ASGI are Python calls inside the server, whatever the wire:

- ``http``: nginx's ``proxy_pass``, HTTP/1.1 with keepalive (RFC 9112);
- ``fastcgi``: nginx's ``fastcgi_pass``, the FastCGI 1.0 records (a binary
  framing of CGI's meta-variables, stdin and stdout over one connection);
- ``uwsgi``: nginx's ``uwsgi_pass``, the uwsgi packet (a 4-byte header and the
  CGI-style variables as length-prefixed strings; the answer is plain HTTP/1.x).
"""

from __future__ import annotations

from typing import Final, Literal

Wire = Literal["http", "fastcgi", "uwsgi"]

SERVERS: Final[dict[str, tuple[str, ...]]] = {
    "cgi": ("runner", "fcgiwrap"),
    "wsgi": ("sync", "gthread", "uwsgi"),
    "asgi": ("gunicorn", "uvicorn"),
}

# What nginx speaks to each server, by (mode, server); every other pair is HTTP.
_WIRES: Final[dict[tuple[str, str], Wire]] = {
    ("cgi", "fcgiwrap"): "fastcgi",
    ("wsgi", "uwsgi"): "uwsgi",
}


# Servers that serve exactly one listening socket, given to them: fcgiwrap. The
# others (gunicorn's workers, uvicorn) also listen on a unix socket beside their
# TCP port when asked (GATEWAY_UDS), which natively is how nginx reaches them.
_ONE_SOCKET: Final = frozenset({("cgi", "fcgiwrap")})

# sun_path holds 108 bytes on Linux, the last one a NUL (unix(7)).
MAX_UNIX_PATH_BYTES: Final = 107


class ServerError(ValueError):
    """A mode or server that does not exist; the message names the choices."""


def check_server(mode: str, server: str) -> str:
    """``server`` if it can run ``mode``, else ServerError naming what can."""
    if mode not in SERVERS:
        raise ServerError(f"unknown mode {mode!r}: use one of {', '.join(SERVERS)}")
    if server not in SERVERS[mode]:
        raise ServerError(
            f"unknown server {server!r} for {mode}: use one of {', '.join(SERVERS[mode])}"
        )
    return server


def default_server(mode: str) -> str:
    if mode not in SERVERS:
        raise ServerError(f"unknown mode {mode!r}: use one of {', '.join(SERVERS)}")
    return SERVERS[mode][0]


def wire(mode: str, server: str) -> Wire:
    """What nginx speaks to ``server`` running ``mode``."""
    return _WIRES.get((mode, check_server(mode, server)), "http")


def speaks_http(mode: str, server: str) -> bool:
    """True when the server answers HTTP itself (so /healthz can be asked over HTTP)."""
    return wire(mode, server) == "http"


def listens_on_unix(mode: str, server: str) -> bool:
    """True when ``server`` can listen on a unix socket beside its TCP port."""
    return (mode, check_server(mode, server)) not in _ONE_SOCKET
