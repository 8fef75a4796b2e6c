"""Hostile and careless clients the app and nginx must answer, through nginx and at each gateway.

Every test runs for every (mode, server) pair it applies to, against two
endpoints: the mode's mount point through nginx, and the gateway itself
(tests.support.endpoints: natively its own port, under Docker a relay in the
nginx container; a server that speaks no HTTP to nginx is reached through
nginx only). Requests are raw bytes read back by h11 (tests/integration/
rawhttp.py), or a real WebSocket client where the protocol is WebSocket.

- a multipart form of 60,000 empty parts: a 400 naming the part cap, while
  other requests are served;
- a part in a charset Python knows but cannot decode with: a 400 naming it;
- a stream longer than the request deadline: refused up front in CGI and WSGI
  (a stream at the limit still finishes), served to the end in ASGI;
- absolute-form targets and fragments: the app sees the target's authority
  as Host (through nginx) and never a fragment in its path or query;
- WebSocket: a message over the limit closes with 1009, a peer that sends and
  never reads pins bounded memory in the worker (RSS from /proc), a handshake
  on another path is answered in JSON;
- /ws without Upgrade is a JSON 426 "Upgrade Required", and HEAD on /stream
  does not claim a length of 0.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final
from urllib.parse import urlsplit

import pytest

from apps.breakfast import kitchen
from gateway.servers.registry import default_server
from lab.targets.docker.compose import SERVICES, compose_args
from tests.support.endpoints import Endpoint, mode_endpoints, nginx_endpoint
from tests.support.lab import SERVING, Lab
from tests.support.rawhttp import RawResponse, RawResult

# The server matrix of hostile input runs natively; under Docker each swap
# recreates a container and each raw case at a gateway is relayed through
# `docker compose exec` (about a second each), so there the default servers
# carry the suite, and the contract suite (test_contract.py) covers every server.
pytestmark = pytest.mark.every_server(targets=("native",))

MIB: Final = 1024 * 1024


def only(result: RawResult, name: str) -> RawResponse:
    assert len(result.responses) == 1, (name, result.outcome(), result.protocol_error)
    return result.responses[0]


def json_error(response: RawResponse, status: int, name: str) -> str:
    """The lab's error shape with ``status``; returns the message."""
    assert response.status == status, (name, response.status, response.body[:300])
    assert response.headers.get("content-type", "").startswith("application/json"), name
    data = response.json()
    assert data["status"] == status, (name, data)
    return str(data["error"])


# -- a multipart form with a huge number of parts ----------------------------------------

FLOOD_PARTS: Final = 60_000


def part_flood() -> tuple[str, bytes]:
    body = b"--B\r\n\r\n\r\n" * FLOOD_PARTS + b"--B--\r\n"
    return "multipart/form-data; boundary=B", body


class TestMultipartFlood:
    def test_sixty_thousand_parts_are_refused_while_others_are_served(
        self, endpoints: list[Endpoint], mode: str
    ) -> None:
        ctype, body = part_flood()
        assert len(body) < MIB  # under the form's own 1 MiB limit: only the count refuses it
        for endpoint in endpoints:
            started = time.monotonic()
            with ThreadPoolExecutor(6) as pool:
                floods = [
                    pool.submit(
                        endpoint.request,
                        "/form",
                        method="POST",
                        headers={"Content-Type": ctype},
                        body=body,
                        deadline_s=60,
                    )
                    for _ in range(3)
                ]
                others = [pool.submit(endpoint.request, "/coffee?ms=50") for _ in range(3)]
                flood_results = [f.result() for f in floods]
                other_results = [f.result() for f in others]
            for result in flood_results:
                message = json_error(only(result, endpoint.name), 400, endpoint.name)
                assert f"at most {kitchen.FORM_MAX_FIELDS}" in message, (endpoint.name, message)
            for result in other_results:
                assert only(result, endpoint.name).status == 200, endpoint.name
            elapsed = time.monotonic() - started
            print(f"{endpoint.name}: 3 floods of {FLOOD_PARTS} parts + 3 requests: {elapsed:.2f} s")


# -- a part in a charset Python knows but cannot decode with -------------------------------


def form_with_charset(charset: str) -> tuple[str, bytes]:
    parts = [
        'Content-Disposition: form-data; name="first_name"\r\n\r\nAda',
        'Content-Disposition: form-data; name="last_name"\r\n'
        f"Content-Type: text/plain; charset={charset}\r\n\r\nxn--\xff",
        'Content-Disposition: form-data; name="email"\r\n\r\nada@example.org',
    ]
    body = "".join(f"--B\r\n{part}\r\n" for part in parts) + "--B--\r\n"
    return "multipart/form-data; boundary=B", body.encode("latin-1")


@pytest.mark.parametrize("charset", ["idna", "punycode", "undefined", "rot13"])
def test_an_undecodable_charset_is_a_400_naming_the_part(
    endpoints: list[Endpoint], charset: str
) -> None:
    ctype, body = form_with_charset(charset)
    for endpoint in endpoints:
        result = endpoint.request(
            "/form", method="POST", headers={"Content-Type": ctype}, body=body
        )
        message = json_error(only(result, endpoint.name), 400, endpoint.name)
        assert "'last_name'" in message and charset in message, (endpoint.name, message)


# -- streams longer than the request deadline --------------------------------------------

# Longer than the CGI runner's 30 s and gunicorn's 35 s sync timeout.
LONG_STREAM: Final = (4, 10_000)
# The longest stream CGI and WSGI accept.
LIMIT_STREAM: Final = (kitchen.STREAM_MAX_MS // 10_000, 10_000)


def read_stream(endpoint: Endpoint, chunks: int, interval_ms: int) -> RawResult:
    deadline = chunks * interval_ms / 1000 + 30
    return endpoint.request(
        f"/stream?chunks={chunks}&interval_ms={interval_ms}", deadline_s=deadline
    )


@pytest.fixture(scope="module", autouse=True)
def streams(
    lab: Lab, mode: str, lab_gateways: dict[str, str]
) -> Iterator[dict[str, Future[RawResult]]]:
    """The pair's long streams, started with its first test so that the others run
    while they last (up to ~40 s); TestStreamsAndDeadlines, last in the module, reads them."""
    shape = LONG_STREAM if mode == "asgi" else LIMIT_STREAM
    server = SERVING.get(mode) or default_server(mode)
    compose = compose_args() if lab.target == "docker" else []
    points = mode_endpoints(lab.url, lab.target, mode, server, lab_gateways, compose)
    with ThreadPoolExecutor(len(points)) as pool:
        yield {point.name: pool.submit(read_stream, point, *shape) for point in points}


# -- absolute-form targets and fragments ---------------------------------------------------


def protocol_view(mode: str, variables: dict[str, Any]) -> tuple[str, str, str]:
    """(host, path, query) as the app received them: CGI/WSGI variables or the ASGI scope."""
    if mode == "asgi":
        host = next(value for name, value in variables["headers"] if name == "host")
        return host, variables["path"], variables["query_string"]
    return variables["HTTP_HOST"], variables["PATH_INFO"], variables["QUERY_STRING"]


class TestRequestTargets:
    def test_absolute_form_host_is_the_targets_authority(
        self, endpoints: list[Endpoint], mode: str
    ) -> None:
        # RFC 9112 §3.2.2: the Host header is ignored for the target's authority,
        # by nginx and by each gateway reached directly (gateway.proxy).
        for endpoint in endpoints:
            target = f"http://example.test:9000{endpoint.prefix}/env?a=1"
            response = only(endpoint.request(target, raw_target=True), endpoint.name)
            assert response.status == 200, (endpoint.name, response.body[:200])
            host, path, query = protocol_view(mode, response.json()["variables"])
            assert host == "example.test:9000", endpoint.name
            assert (path.removeprefix(endpoint.prefix), query) == ("/env", "a=1"), endpoint.name

    def test_absolute_form_is_routed_like_origin_form(
        self, endpoints: list[Endpoint], mode: str
    ) -> None:
        for endpoint in endpoints:
            target = f"http://example.test:9000{endpoint.prefix}/coffee?ms=3"
            response = only(endpoint.request(target, raw_target=True), endpoint.name)
            assert response.status == 200, (endpoint.name, response.body[:200])
            assert response.json()["ms"] == 3, endpoint.name

    @pytest.mark.parametrize(
        "target, ms",
        [
            pytest.param("/coffee?ms=5#ms=7", 5, id="in-query"),
            pytest.param("/coffee#frag?ms=7", 100, id="before-query"),
            pytest.param("/coffee?ms=6#", 6, id="empty"),
        ],
    )
    def test_no_fragment_reaches_the_app(
        self, endpoints: list[Endpoint], target: str, ms: int
    ) -> None:
        for endpoint in endpoints:
            response = only(endpoint.request(target), endpoint.name)
            assert response.status == 200, (endpoint.name, response.body[:200])
            assert response.json()["ms"] == ms, endpoint.name

    def test_no_fragment_in_the_protocol_view_through_nginx(self, lab: Lab, mode: str) -> None:
        endpoint = nginx_endpoint(lab.url, mode)
        response = only(endpoint.request("/env?a=1#frag?b=2"), endpoint.name)
        _, path, query = protocol_view(mode, response.json()["variables"])
        assert (path.removeprefix(f"/{mode}"), query) == ("/env", "a=1")


# -- WebSocket: limits, memory, handshakes ------------------------------------------------

WS_HANDSHAKE: Final = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@pytest.fixture
def asgi_ws_urls(lab: Lab, lab_gateways: dict[str, str], mode: str) -> list[str]:
    """WebSocket URLs of the ASGI endpoints a WebSocket client can open from the host
    (the gateway directly only natively: the Docker relay carries raw bytes, not a client)."""
    urls = [lab.url.replace("http://", "ws://") + "/asgi/ws"]
    if "asgi" in lab_gateways:
        urls.append(lab_gateways["asgi"].replace("http://", "ws://") + "/ws")
    return urls


@pytest.mark.servers("asgi")
class TestWebSocket:
    def test_a_message_over_the_limit_closes_with_1009(self, asgi_ws_urls: list[str]) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        limit = kitchen.WS_MAX_MESSAGE_BYTES
        # A binary frame's header alone (RFC 6455 §5.2: FIN, opcode 2, masked,
        # 64-bit length), announcing one byte over the limit. The server must
        # refuse on the header (§7.4.1, 1009), before a byte of the payload: it
        # never comes, so waiting for it would time out. And with nothing sent
        # that the server leaves unread, its close is a FIN, not a reset that
        # could destroy the close frame on its way to the client.
        too_big = bytes([0x82, 0x80 | 127]) + (limit + 1).to_bytes(8, "big")
        for url in asgi_ws_urls:
            with connect(url, open_timeout=10, max_size=None) as ws:
                ws.send(b"x" * limit)
                assert len(ws.recv(timeout=10)) == limit, url
                ws.socket.sendall(too_big)
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, url

    @pytest.mark.parametrize("times_the_limit", [1, 16])
    def test_a_peer_that_never_reads_pins_bounded_memory(
        self, lab: Lab, asgi_ws_urls: list[str], times_the_limit: int
    ) -> None:
        size = kitchen.WS_MAX_MESSAGE_BYTES * times_the_limit
        # Per peer: gunicorn's receive queue (32 messages), one in the app, one
        # being written, one being read, plus read/write buffers; and some
        # allocator slack for the whole worker.
        per_peer = 36 * kitchen.WS_MAX_MESSAGE_BYTES
        slack = 16 * MIB
        for url in asgi_ws_urls:
            peers = [Peer(url) for _ in range(4)]
            try:
                before = {pid: rss_bytes(lab.target, pid) for pid in {p.pid for p in peers}}
                outcomes = [peer.flood(size) for peer in peers]
                during = {pid: rss_bytes(lab.target, pid) for pid in before}
            finally:
                for peer in peers:
                    peer.close()
            bound = len(peers) * per_peer + slack
            grown = sum(during[pid] - before[pid] for pid in before)
            print(
                f"{url}: {times_the_limit} x limit, {outcomes}, worker RSS +{grown / MIB:.1f} MiB"
            )
            if times_the_limit > 1:
                # The first message is refused unread (1009: test above) and the
                # gateway ends the connection.
                assert set(outcomes) == {"closed"}, (url, outcomes)
            else:
                assert set(outcomes) == {"stalled"}, (url, outcomes)
            assert grown <= bound, f"{url}: RSS grew {grown / MIB:.1f} MiB (bound {bound / MIB})"
            # Once the peers are gone their memory is released (or stays within the bound).
            deadline = time.monotonic() + 10
            while True:
                after = sum(rss_bytes(lab.target, pid) - before[pid] for pid in before)
                if after <= bound or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            print(f"{url}: after the peers left, RSS +{after / MIB:.1f} MiB")
            assert after <= bound, f"{url}: {after / MIB:.1f} MiB still held after the peers left"

    def test_a_handshake_the_gateway_refuses_is_answered_in_json(
        self, endpoints: list[Endpoint], server: str
    ) -> None:
        # HTTP/1.1 without Host: refused before the app (RFC 9112 §3.2). Straight at
        # the gateway its layer answers, under gunicorn and uvicorn alike, through
        # the Denial Response extension; through nginx, nginx itself.
        for endpoint in endpoints:
            head = "".join(f"{k}: {v}\r\n" for k, v in WS_HANDSHAKE.items())
            raw = f"GET {endpoint.prefix}/ws HTTP/1.1\r\n{head}\r\n".encode()
            result = endpoint.exchange(raw)
            message = json_error(only(result, endpoint.name), 400, endpoint.name)
            if endpoint.direct:
                assert "Host" in message, (endpoint.name, server, message)

    @pytest.mark.parametrize(
        ("framing", "body"),
        [("Content-Length: 5", "hello"), ("Transfer-Encoding: chunked", "5\r\nhello\r\n0\r\n\r\n")],
        ids=["content-length", "chunked"],
    )
    def test_a_handshake_with_a_body_is_refused_in_json(
        self, endpoints: list[Endpoint], server: str, framing: str, body: str
    ) -> None:
        # What follows a handshake is frames, so a body is refused (RFC 9110
        # §9.3.1), not left to be read as frames; uvicorn waited for a chunked
        # one before upgrading, and the handshake hung until the client gave up.
        for endpoint in endpoints:
            head = "".join(f"{k}: {v}\r\n" for k, v in WS_HANDSHAKE.items())
            raw = f"GET {endpoint.prefix}/ws HTTP/1.1\r\nHost: x\r\n{head}{framing}\r\n\r\n{body}"
            result = endpoint.exchange(raw.encode())
            message = json_error(only(result, endpoint.name), 400, endpoint.name)
            assert "WebSocket handshake with a body" in message, (endpoint.name, server, message)

    def test_a_handshake_on_another_path_is_answered_in_json(
        self, endpoints: list[Endpoint], mode: str
    ) -> None:
        for endpoint in endpoints:
            result = endpoint.request("/no-such-socket", headers=WS_HANDSHAKE)
            message = json_error(only(result, endpoint.name), 404, endpoint.name)
            assert "/no-such-socket" in message, (endpoint.name, message)

    def test_ws_without_upgrade_is_a_json_426_or_501(
        self, endpoints: list[Endpoint], mode: str
    ) -> None:
        for endpoint in endpoints:
            result = endpoint.request("/ws")
            if mode == "asgi":
                response = only(result, endpoint.name)
                json_error(response, 426, endpoint.name)
                assert response.headers.get("upgrade") == "websocket", endpoint.name
                assert status_line(endpoint, "/ws").endswith(" 426 Upgrade Required"), endpoint
            else:
                json_error(only(result, endpoint.name), 501, endpoint.name)
                assert status_line(endpoint, "/ws").endswith(" 501 Not Implemented"), endpoint


def status_line(endpoint: Endpoint, target: str) -> str:
    """The status line exactly as sent (h11 keeps the reason phrase; RawResponse does not)."""
    wire = (
        f"GET {endpoint.prefix}{target} HTTP/1.1\r\nHost: {endpoint.hostport}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with endpoint.connect(10) as sock:  # direct, or relayed under Docker
        sock.sendall(wire)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.partition(b"\r\n")[0].decode("latin-1")


def test_head_on_a_stream_does_not_claim_a_length_of_zero(endpoints: list[Endpoint]) -> None:
    # RFC 9110 §9.3.2: HEAD gets the headers a GET would; the streamed GET has no length.
    for endpoint in endpoints:
        get = only(endpoint.request("/stream?chunks=2&interval_ms=1"), endpoint.name)
        head = only(
            endpoint.request("/stream?chunks=2&interval_ms=1", method="HEAD"), endpoint.name
        )
        assert (get.status, head.status) == (200, 200), endpoint.name
        assert "content-length" not in get.headers, endpoint.name
        assert "content-length" not in head.headers, (endpoint.name, head.headers)


# -- a WebSocket peer that sends and never reads --------------------------------------------


class Peer:
    """A WebSocket client that sends and never reads (websockets' sans-I/O client on a socket)."""

    STALL_S: Final = 2.0  # no byte accepted for this long: the server stopped reading

    def __init__(self, url: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.http11 import Response
        from websockets.uri import parse_uri

        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        self.protocol.send_request(self.protocol.connect())
        self.sock.sendall(b"".join(self.protocol.data_to_send()))
        response = None
        while response is None:
            data = self.sock.recv(65536)
            assert data, f"{url}: closed during the handshake"
            self.protocol.receive_data(data)
            response = next(
                (e for e in self.protocol.events_received() if isinstance(e, Response)), None
            )
        assert response.status_code == 101, (url, response.status_code)
        self.pid = int(response.headers["X-Gateway-Pid"])

    def flood(self, size: int) -> str:
        """Send ``size``-byte messages, reading nothing, until the server stops taking them.

        "stalled": nothing more was accepted for STALL_S (the server stopped
        reading: backpressure); "closed": the server ended the connection, or
        sent a close frame. The close frame is looked for without consuming
        anything (``_close_sent``): once the gateway has closed, nginx may go on
        reading and dropping what the peer sends for its lingering time
        (``lingering_close``), so the send side alone can take a long while
        to fail.
        """
        self.sock.settimeout(self.STALL_S)
        sent = 0
        while sent < 1024 * MIB:  # a server that never pushes back fails, it does not hang
            self.protocol.send_binary(b"m" * size)
            try:
                self.sock.sendall(b"".join(self.protocol.data_to_send()))
            except TimeoutError:
                return "stalled"
            except (BrokenPipeError, ConnectionResetError):
                return "closed"
            sent += size
            if self._close_sent():
                return "closed"
        return "never pushed back"

    def _close_sent(self) -> bool:
        """Whether what the server has sent so far, read with MSG_PEEK and left
        unread, holds a close frame (parsed by websockets, RFC 6455 §5.5.1)."""
        from websockets.protocol import Protocol, Side, State

        try:
            waiting = self.sock.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True  # reset: the server has gone
        if not waiting:
            return True  # the server's FIN
        frames = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
        frames.receive_data(waiting)
        return frames.close_rcvd is not None

    def close(self) -> None:
        self.sock.close()


_RSS_PROGRAM: Final = """
import sys
for line in open(f"/proc/{sys.argv[1]}/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) * 1024)
"""


def rss_bytes(target: str, pid: int) -> int:
    """One gateway worker's resident set, from /proc (inside the container under Docker)."""
    if target == "docker":
        args = compose_args("exec", "-T", SERVICES["asgi"], "python", "-c", _RSS_PROGRAM, str(pid))
    else:
        args = [sys.executable, "-c", _RSS_PROGRAM, str(pid)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout)


# -- last in the module: the streams started with the pair's first test -------------


class TestStreamsAndDeadlines:
    def test_a_stream_longer_than_the_deadline(
        self, endpoints: list[Endpoint], mode: str, streams: dict[str, Future[RawResult]]
    ) -> None:
        for endpoint in endpoints:
            if mode != "asgi":
                # Refused before a line is sent, with the limit in the answer.
                result = read_stream(endpoint, *LONG_STREAM)
                message = json_error(only(result, endpoint.name), 400, endpoint.name)
                assert str(kitchen.STREAM_MAX_MS) in message, (endpoint.name, message)
            chunks = (LONG_STREAM if mode == "asgi" else LIMIT_STREAM)[0]
            started = time.monotonic()
            response = only(streams[endpoint.name].result(), endpoint.name)
            assert response.status == 200, (endpoint.name, response.body[:200])
            lines = [json.loads(line) for line in response.body.splitlines()]
            assert [line["chunk"] for line in lines] == list(range(chunks)), endpoint.name
            print(f"{endpoint.name}: {chunks} lines, waited {time.monotonic() - started:.1f} s")
