"""tests.support.endpoints: which gateways raw bytes can reach, and the Docker relay.

The relay is the program the docker target runs inside the nginx container; here
the host's own python runs it (no Docker), against a small server on a spare
port, so what it passes on (bytes both ways, the client's half close, the
server's close) is checked by the same ``exchange`` the suites use.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from gateway.servers.registry import SERVERS, wire
from tests.support.endpoints import (
    COMPOSE_GATEWAY_PORT,
    DIRECT_EXCLUSIONS,
    RELAY,
    Endpoint,
    mode_endpoints,
    relay_command,
)

COMPOSE = ("docker", "compose", "-f", "compose.yaml")


def test_every_server_that_speaks_no_http_is_excluded_with_its_reason() -> None:
    pairs = {(m, s) for m, names in SERVERS.items() for s in names}
    assert set(DIRECT_EXCLUSIONS) == {p for p in pairs if wire(*p) != "http"}
    assert set(DIRECT_EXCLUSIONS) == {("cgi", "fcgiwrap"), ("wsgi", "uwsgi")}
    assert "fastcgi" in DIRECT_EXCLUSIONS[("cgi", "fcgiwrap")]


def test_native_endpoints_use_the_gateway_address() -> None:
    gateways = {"wsgi": "http://127.0.0.1:8185"}
    nginx, gw = mode_endpoints("http://127.0.0.1:8180", "native", "wsgi", "gthread", gateways)
    assert (nginx.name, nginx.prefix, nginx.port, nginx.relay) == (
        "nginx/wsgi",
        "/wsgi",
        8180,
        None,
    )
    assert (gw.name, gw.prefix, gw.hostport, gw.relay) == ("gw/wsgi", "", "127.0.0.1:8185", None)


def test_a_server_that_speaks_no_http_is_reached_through_nginx_only() -> None:
    gateways = {"wsgi": "http://127.0.0.1:8182"}
    found = mode_endpoints("http://127.0.0.1:8180", "native", "wsgi", "uwsgi", gateways)
    assert [e.name for e in found] == ["nginx/wsgi"]
    found = mode_endpoints("http://127.0.0.1:8180", "docker", "cgi", "fcgiwrap", {}, COMPOSE)
    assert [e.name for e in found] == ["nginx/cgi"]


def test_docker_endpoints_relay_through_the_nginx_container() -> None:
    _, gw = mode_endpoints("http://127.0.0.1:8080", "docker", "asgi", "uvicorn", {}, COMPOSE)
    assert gw.hostport == f"gateway-asgi:{COMPOSE_GATEWAY_PORT}"
    assert gw.relay is not None
    assert list(gw.relay[:7]) == [*COMPOSE, "exec", "-T", "nginx"]
    assert gw.relay[-3:] == ("gateway-asgi", str(COMPOSE_GATEWAY_PORT), "60.0")


def test_an_external_lab_has_no_direct_endpoint() -> None:
    found = mode_endpoints("http://lab.test:80", "external", "cgi", "runner", {})
    assert [e.name for e in found] == ["nginx/cgi"]


@pytest.fixture
def echo_server() -> Iterator[int]:
    """Answers each connection once it has read to EOF: the request's bytes, then a close."""
    listener = socket.create_server(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                body = data.upper()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    thread.join(5)


def test_the_relay_passes_bytes_the_half_close_and_the_close(echo_server: int) -> None:
    # The command the docker target runs, with the host's python in place of
    # `docker compose exec -T nginx python3`.
    command = (sys.executable, "-c", RELAY, "127.0.0.1", str(echo_server), "10")
    endpoint = Endpoint("gw/test", "wsgi", "127.0.0.1", echo_server, "", command)
    # The server answers only after the client's half close: patience_s sends it.
    result = endpoint.exchange(b"ping", deadline_s=10, patience_s=0.5)
    assert result.waited and result.closed
    assert result.statuses == [200] and result.responses[0].body == b"PING"


def test_relay_command_runs_the_program_in_the_nginx_service() -> None:
    command = relay_command(COMPOSE, "gateway-cgi", 8000, 30.0)
    assert command[: len(COMPOSE) + 4] == [*COMPOSE, "exec", "-T", "nginx", "python3"]
    assert command[-4:] == [RELAY, "gateway-cgi", "8000", "30.0"]
