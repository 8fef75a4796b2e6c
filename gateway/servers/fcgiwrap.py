"""CGI mode under fcgiwrap (``--server fcgiwrap``): the standard CGI-behind-nginx setup.

nginx speaks FastCGI (``fastcgi_pass``) to Debian's fcgiwrap, which forks and
execs the same ``apps/breakfast/cgi_app.py`` for every request, the script
named by the ``SCRIPT_FILENAME`` parameter nginx sends. No Python sits between
nginx and the script: no gunicorn, no gateway layer, no bridge. So the script
itself reports the trace headers and answers /healthz (it does when
``GATEWAY_SERVER`` is in its environment, which this launcher sets).

``fcgiwrap -c N`` preforks N processes; each takes one FastCGI connection at a
time and waits for its script, so N is how many scripts may run at once: the
runner's ``cgi_max_scripts``. Past it a request waits in the listen queue until
a process is free; nginx's ``fastcgi_read_timeout`` bounds that wait (a 504),
where the runner answers 503 with Retry-After. fcgiwrap has no time or output
limit of its own: nginx's timeouts and body limit are the limits.

This process stays as fcgiwrap's parent and the leader of its process group:
fcgiwrap's master does not stop its children when it is stopped, so on SIGTERM
or SIGINT the launcher signals the whole group (master, children, scripts).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Final

from gateway.config import Settings
from gateway.servers.workers import worker_processes

CANDIDATES: Final = ("/usr/sbin/fcgiwrap", "/usr/bin/fcgiwrap")


def find_fcgiwrap() -> str | None:
    found = shutil.which("fcgiwrap")
    if found:
        return found
    return next((c for c in CANDIDATES if os.access(c, os.X_OK)), None)


def fcgiwrap_command(settings: Settings, binary: str) -> list[str]:
    # -c: one process per script allowed at once (GATEWAY_CGI_MAX_SCRIPTS).
    # No -s: the listening socket comes on fd 0 (listen_socket).
    return [binary, "-c", str(worker_processes(settings))]


def listen_socket(host: str, port: int, backlog: int = 128) -> socket.socket:
    """The listening socket, made here and handed to fcgiwrap as its fd 0.

    That is the FastCGI convention (fcgiwrap(8): "by default fcgiwrap expects a
    listen socket to be passed on file descriptor 0"), and it lets the socket
    take SO_REUSEADDR, which fcgiwrap's own ``-s`` does not set: without it a
    restart on the same port fails while old connections sit in TIME_WAIT.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(backlog)
    return sock


def script_env(settings: Settings, python: str = sys.executable) -> dict[str, str]:
    """The environment fcgiwrap runs with, which every script inherits.

    fcgiwrap passes its own environment to each script, under the FastCGI
    parameters nginx sends, so it starts from a clean one: nothing of the host's
    leaks into a request. PATH begins with this interpreter's directory, so the
    script's ``#!/usr/bin/env -S python3 -IS`` finds the real interpreter, not a
    version-manager shim that would add tens of milliseconds to every request.
    """
    return {
        "PATH": os.pathsep.join([str(Path(python).parent), "/usr/bin", "/bin"]),
        "LANG": "C.UTF-8",
        "GATEWAY_SERVER": "fcgiwrap",
    }


def serve(settings: Settings) -> None:
    binary = find_fcgiwrap()
    if binary is None:
        sys.exit("gateway: fcgiwrap is not installed (Debian: apt-get install fcgiwrap)")
    if not os.access(settings.cgi_script, os.X_OK):
        sys.exit(f"gateway: {settings.cgi_script} is not executable: fcgiwrap execs it directly")
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)  # a group of our own, so stopping it reaches fcgiwrap's children
    try:
        listener = listen_socket(settings.host, settings.port)
    except OSError as exc:
        sys.exit(f"gateway: cannot listen on {settings.host}:{settings.port}: {exc.strerror}")
    with listener:
        proc = subprocess.Popen(
            fcgiwrap_command(settings, binary), stdin=listener.fileno(), env=script_env(settings)
        )

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group signal below includes us
        os.killpg(0, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = proc.wait()
    # The master is gone (stopped, or it failed): take its children with it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    sys.exit(code if code > 0 else 0)
