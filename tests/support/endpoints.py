"""Where the hostile suites send raw bytes: one Endpoint per mount point and per gateway.

An endpoint is the mode's mount point through nginx ("nginx/wsgi") or the
gateway itself ("gw/wsgi"). How the bytes reach a gateway depends on the target:

- native: the gateway's own address on the host (``gateways`` in
  ``lab status --json``);
- docker: the gateways publish no port. The bytes go through a relay run
  inside the nginx container (``docker compose exec -T nginx python3 -c
  RELAY``), which connects to the gateway's service on the internal network
  and copies bytes both ways; the half close and the server's close pass
  through, so a relayed exchange reads like a direct one (see ``relay_socket``);
- a lab someone else runs (LAB_URL): nginx only.

A gateway whose server speaks no HTTP (``DIRECT_EXCLUSIONS``) has no direct
endpoint: raw HTTP bytes are not its protocol, and nginx is the only client it
has. Tests that only talk to gateways are marked ``direct`` and are not
parametrized for those servers at all (tests/integration/conftest.py).
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from gateway.servers.registry import SERVERS, wire
from tests.support.rawhttp import RawResult, exchange

# (mode, server) -> why raw HTTP cannot be sent to that gateway.
DIRECT_EXCLUSIONS: Final[dict[tuple[str, str], str]] = {
    (mode, server): f"{server} speaks {wire(mode, server)} to nginx, not HTTP"
    for mode, servers in SERVERS.items()
    for server in servers
    if wire(mode, server) != "http"
}

# The port every gateway listens on inside its container (compose.yaml, GATEWAY_PORT).
COMPOSE_GATEWAY_PORT: Final = 8000
COMPOSE_NGINX_SERVICE: Final = "nginx"

# Run by python3 inside the nginx container: argv host port idle_s. stdin goes
# to the gateway, and stdin's end becomes a half close (SHUT_WR); what the
# gateway sends comes out on stdout, and the gateway's close ends the program
# (so the relay's stdout closes too). idle_s bounds a gateway that never closes.
RELAY: Final = """
import os, socket, sys, threading
host, port, idle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sock = socket.create_connection((host, port), timeout=idle)
def upstream():
    try:
        while data := os.read(0, 65536):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
threading.Thread(target=upstream, daemon=True).start()
try:
    while data := sock.recv(65536):
        os.write(1, data)
except OSError:
    pass
"""

Connect = Callable[[float], socket.socket]


def relay_command(compose: Sequence[str], host: str, port: int, idle_s: float) -> list[str]:
    """The command that relays one connection to host:port from inside the nginx container.

    ``compose``: the ``docker compose`` prefix with the project's files
    (lab.targets.docker.compose.compose_args). Pure.
    """
    return [
        *compose,
        "exec",
        "-T",
        COMPOSE_NGINX_SERVICE,
        "python3",
        "-c",
        RELAY,
        host,
        str(port),
        str(idle_s),
    ]


def relay_socket(command: Sequence[str]) -> socket.socket:
    """One end of a socket pair whose other end is the relay's stdin and stdout.

    Sending on it feeds the relay; ``shutdown(SHUT_WR)`` closes the relay's
    stdin (its half close); the relay's exit is this socket's EOF. The relay
    process is reaped in the background.
    """
    ours, theirs = socket.socketpair()
    with theirs:
        fd = theirs.fileno()
        proc = subprocess.Popen(command, stdin=fd, stdout=fd, stderr=subprocess.DEVNULL)
    threading.Thread(target=proc.wait, daemon=True).start()
    return ours


@dataclass(frozen=True)
class Endpoint:
    name: str  # "nginx/cgi", "gw/wsgi"
    mode: str
    host: str  # the address, and what the Host header names
    port: int
    prefix: str  # the mount point ("" straight at a gateway)
    # None: a TCP connection to host:port. Else: the command that relays one
    # connection there (docker: from inside the nginx container).
    relay: tuple[str, ...] | None = None

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def direct(self) -> bool:
        return self.name.startswith("gw/")

    @property
    def via_nginx(self) -> bool:
        return not self.direct

    def connect(self, timeout: float) -> socket.socket:
        """A fresh connection to the endpoint (direct or relayed)."""
        if self.relay is None:
            return socket.create_connection((self.host, self.port), timeout=timeout)
        sock = relay_socket(self.relay)
        sock.settimeout(timeout)
        return sock

    def exchange(self, data: bytes, **kwargs: Any) -> RawResult:
        """``rawhttp.exchange`` on a fresh connection to this endpoint."""
        return exchange(self.host, self.port, data, connect=self.connect, **kwargs)

    def send(self, raw: str, **kwargs: Any) -> RawResult:
        """``raw`` with ``{p}`` (the prefix) and ``{h}`` (host:port) filled in, as latin-1."""
        data = raw.replace("{p}", self.prefix).replace("{h}", self.hostport)
        return self.exchange(data.encode("latin-1"), **kwargs)

    def request(
        self,
        target: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        deadline_s: float = 30.0,
        raw_target: bool = False,
    ) -> RawResult:
        """One request on a fresh connection (Connection: close); ``target`` after the prefix."""
        line_target = target if raw_target else self.prefix + target
        lines = [f"{method} {line_target} HTTP/1.1", f"Host: {self.hostport}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        if "Connection" not in (headers or {}):
            lines.append("Connection: close")
        wire_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        return self.exchange(wire_bytes, deadline_s=deadline_s, method=method)


def nginx_endpoint(lab_url: str, mode: str) -> Endpoint:
    nginx = urlsplit(lab_url)
    assert nginx.hostname and nginx.port
    return Endpoint(f"nginx/{mode}", mode, nginx.hostname, nginx.port, f"/{mode}")


def gateway_endpoint(
    target: str,
    mode: str,
    server: str,
    gateways: dict[str, str],
    compose: Sequence[str] = (),
) -> Endpoint | None:
    """The gateway of ``mode`` (running ``server``) as an endpoint, or None.

    None for a server in DIRECT_EXCLUSIONS and for a lab this run cannot
    reach behind nginx (LAB_URL). ``gateways``: ``lab status``'s map (native);
    ``compose``: the ``docker compose`` prefix (docker).
    """
    if (mode, server) in DIRECT_EXCLUSIONS:
        return None
    if target == "docker":
        from lab.targets.docker.compose import SERVICES

        service = SERVICES[mode]
        relay = tuple(relay_command(compose, service, COMPOSE_GATEWAY_PORT, 60.0))
        return Endpoint(f"gw/{mode}", mode, service, COMPOSE_GATEWAY_PORT, "", relay)
    if mode not in gateways:
        return None
    parts = urlsplit(gateways[mode])
    assert parts.hostname and parts.port
    return Endpoint(f"gw/{mode}", mode, parts.hostname, parts.port, "")


def mode_endpoints(
    lab_url: str,
    target: str,
    mode: str,
    server: str,
    gateways: dict[str, str],
    compose: Sequence[str] = (),
) -> list[Endpoint]:
    """The mode through nginx, and its gateway wherever this run can reach it."""
    found = [nginx_endpoint(lab_url, mode)]
    if (gateway := gateway_endpoint(target, mode, server, gateways, compose)) is not None:
        found.append(gateway)
    return found
