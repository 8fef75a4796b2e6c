"""Is a TCP port on loopback free? One probe, one meaning, one message."""

from __future__ import annotations

import socket
from collections.abc import Iterable


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on ``host:port`` now.

    SO_REUSEADDR: connections of a lab just stopped, still in TIME_WAIT, do not
    make the port look taken; a listening program (or any other bind error) does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def first_free(candidates: Iterable[int], block: int = 1) -> int | None:
    """The first port p of ``candidates`` with p .. p+block-1 all free, else None."""
    return next((p for p in candidates if all(port_free(p + i) for i in range(block))), None)


def in_use_message(port: int, service: str, hint: str = "") -> str:
    return (
        f"port {port} on 127.0.0.1 (for {service}) is already in use by another "
        f"process: stop it (`ss -ltnp 'sport = :{port}'` shows which){hint}"
    )
