"""Trace headers: how every response says which process served it and when.

Timelines, the dashboard and the benchmarks are all drawn from these headers,
so they need no side channel into the gateway. Pure functions only.
"""

from __future__ import annotations

import re
import socket
import uuid
from typing import Final

MODE: Final = "X-Gateway-Mode"
SERVER: Final = "X-Gateway-Server"  # which server runs the mode (gateway/servers/registry.py)
PID: Final = "X-Gateway-Pid"
WORKER: Final = "X-Gateway-Worker"
START: Final = "X-Gateway-Start"
END: Final = "X-Gateway-End"
REQUEST_ID: Final = "X-Request-Id"
# CGI: how long the request waited for a script slot before its script started
# (milliseconds, 0 when one was free), so Start minus this is when it arrived.
QUEUE: Final = "X-Gateway-Queue-Ms"
# CGI: when the script's own work began and ended, said by the script under
# every server. X-Gateway-Start is when the server started the script's process,
# so Start .. App-Start is its start-up (fork, exec, interpreter, imports) and
# App-Start .. App-End the app's work; App-End .. End, the process's exit.
APP_START: Final = "X-Gateway-App-Start"
APP_END: Final = "X-Gateway-App-End"
# Which machine or container: pids repeat across containers (each numbers its
# processes from 1), so replicas of one gateway are told apart by host name.
HOST: Final = "X-Gateway-Host"
HOSTNAME: Final = socket.gethostname()

# Headers the layer that actually ran the app code may set itself (the CGI
# bridge knows the script's pid and when it started and exited); the gateway
# layer keeps them when present and fills them in otherwise.
APP_SET: Final = frozenset(h.lower() for h in (PID, START, END))

# nginx's $request_id is 32 hex digits; allow other sane ids from trusted peers.
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")


def timestamp(t: float) -> str:
    """Unix seconds with microseconds, the format of X-Gateway-Start/-End."""
    return f"{t:.6f}"


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from(value: str | None) -> str:
    """The incoming id when it is well-formed, else a fresh one."""
    if value and _REQUEST_ID_RE.fullmatch(value):
        return value
    return new_request_id()


def trace_headers(
    *,
    mode: str,
    server: str,
    pid: int,
    worker: int,
    start: float,
    end: float | None,
    request_id: str,
    present: frozenset[str] = frozenset(),
) -> list[tuple[str, str]]:
    """The trace headers to add, skipping those in ``present`` (lower-case names).

    ``end`` is None for streamed responses: their headers leave before the app
    has finished, so they carry Start only.
    """
    headers = [
        (MODE, mode),
        (SERVER, server),
        (WORKER, str(worker)),
        (HOST, HOSTNAME),
        (REQUEST_ID, request_id),
    ]
    app_headers = [(PID, str(pid)), (START, timestamp(start))]
    if end is not None:
        app_headers.append((END, timestamp(end)))
    headers += [(k, v) for k, v in app_headers if k.lower() not in present]
    return headers
