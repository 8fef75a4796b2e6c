"""The ASGI scope's ``server`` for a request that came in on a unix socket, under gunicorn.

ASGI HTTP connection scope, ``server``: "Either a two-item iterable of
``[host, port]`` ... or ``[path, None]`` where path is that of the unix socket."
gunicorn 27's asyncio worker builds it as ``tuple(sockname[:2])``, which for a
unix socket (whose sockname is its path, a string) is the path's first two
characters: ``("/", "w")``. Natively nginx reaches the gateways on their unix
sockets, so every request through nginx got that. The scope now says
``(path, None)``; a TCP address is left as gunicorn makes it.

gunicorn has no hook for it, so its one helper is wrapped, as ``error_pages``
does; gunicorn is pinned below its next major version (pyproject.toml) and
tests/integration/test_contract.py checks the scope through nginx.
"""

from __future__ import annotations

from typing import Any

from gunicorn.asgi import protocol

_WRAPPED = "_lab_unix_server_address"


def install_unix_server_address() -> None:
    """``server`` is ``(path, None)`` for a unix socket (idempotent)."""
    normalize = protocol._normalize_sockaddr
    if getattr(normalize, _WRAPPED, False):
        return

    def normalize_sockaddr(sockaddr: Any) -> Any:
        if isinstance(sockaddr, str) and sockaddr:
            return (sockaddr, None)
        return normalize(sockaddr)

    setattr(normalize_sockaddr, _WRAPPED, True)
    protocol._normalize_sockaddr = normalize_sockaddr
