"""The lab over TLS and HTTP/2 (tls_url, verified against the lab's own CA).
Tests taking ``mode`` run once per mode (tests/integration/conftest.py).

Same routes, same trace headers and the same JSON errors as over plain HTTP;
the apps learn the scheme from nginx (X-Forwarded-Proto); many requests share
one connection and run at once; and the HTTP/2 abuse nginx must refuse (too
many streams at once, an oversized header block, rapid reset) is refused.
"""

from __future__ import annotations

import random
import socket
import ssl
import string
import warnings
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.h2client import (
    ENHANCE_YOUR_CALM,
    MAX_CONCURRENT_STREAMS,
    REFUSED_STREAM,
    H2Client,
)
from tests.support.lab import Lab
from tests.support.tls_lab import TLSLab, tls_lab  # noqa: F401 (the session fixture)

# The scheme reaches each server its own way (X-Forwarded-Proto, the HTTPS meta-variable
# nginx sets for fcgiwrap, REQUEST_SCHEME in the uwsgi packet): every server in turn.
pytestmark = pytest.mark.every_server(targets=("native",))

TRACE = ("x-gateway-mode", "x-gateway-pid", "x-gateway-worker", "x-gateway-start")
# nginx/templates/tls.conf and server.conf.
MAX_STREAMS = 100
HEADER_BUFFER = 16 * 1024  # large_client_header_buffers 4 16k: one field, and x4 the block
HEADER_BUFFERS = 4


@pytest.fixture
def h2(tls_lab: TLSLab) -> Iterator[H2Client]:  # noqa: F811 (the imported fixture)
    with H2Client(tls_lab.url, tls_lab.ca_file) as client:
        assert client.alpn == "h2", f"ALPN chose {client.alpn!r}, not h2"
        yield client


def assert_lab_answers(tls_lab: TLSLab) -> None:  # noqa: F811
    """A new connection still gets a normal answer: the abuse cost nothing lasting."""
    with H2Client(tls_lab.url, tls_lab.ca_file) as fresh:
        answer = fresh.get("/asgi/")
    assert answer.status == 200, answer


# -- the same lab, over HTTP/2 -------------------------------------------------------


def test_each_mode_answers_over_http2_with_trace_headers(h2: H2Client, mode: str) -> None:
    answer = h2.get(f"/{mode}/")
    assert answer.status == 200
    assert all(name in answer.headers for name in TRACE), answer.headers
    assert answer.headers["x-gateway-mode"] == mode
    assert answer.headers["x-gateway-end"]
    assert len(answer.headers["x-request-id"]) == 32
    assert answer.json()["mode"] == mode  # type: ignore[index]


def test_the_dashboard_is_served_over_http2(h2: H2Client) -> None:
    page = h2.get("/lab/")
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    assert b"Gateway Lab" in page.body


def test_http11_over_tls_still_works(tls_lab: TLSLab) -> None:  # noqa: F811
    """ALPN offers http/1.1 too: requests (urllib3) asks for nothing else."""
    got = requests.get(f"{tls_lab.url}/wsgi/", verify=tls_lab.ca_file, timeout=30)
    assert got.status_code == 200
    assert got.raw.version == 11
    assert got.headers["X-Gateway-Mode"] == "wsgi"


def test_twelve_requests_on_one_connection_are_in_flight_together(h2: H2Client) -> None:
    """The dashboard's lesson without the browser's 6-connection cap: over one
    HTTP/2 connection all 12 coffees start before the first one ends."""
    answers = h2.get_many(["/asgi/coffee?ms=800"] * 12)
    assert [a.status for a in answers] == [200] * 12
    starts = [float(a.headers["x-gateway-start"]) for a in answers]
    ends = [float(a.headers["x-gateway-end"]) for a in answers]
    assert max(starts) < min(ends), (
        f"the last of 12 started {max(starts) - min(ends):.3f} s after the first ended: "
        "they were not all in flight at once"
    )


def test_websocket_over_tls(tls_lab: TLSLab) -> None:  # noqa: F811
    """wss:// works: nginx 1.22 has no WebSocket over HTTP/2 (RFC 8441), so the
    client's TLS connection speaks HTTP/1.1 (ALPN) and upgrades, as browsers do."""
    from websockets.sync.client import connect

    context = ssl.create_default_context(cafile=tls_lab.ca_file)
    wss_url = tls_lab.url.replace("https://", "wss://") + "/asgi/ws"
    with connect(wss_url, ssl=context, open_timeout=10) as ws:
        ws.send("over tls")
        assert ws.recv(timeout=10) == "over tls"


def scheme_seen(mode: str, variables: dict[str, object]) -> str:
    """The scheme as each protocol tells the app: CGI REQUEST_SCHEME (and HTTPS=on),
    WSGI wsgi.url_scheme (PEP 3333), the ASGI scope's scheme."""
    if mode == "cgi":
        scheme = str(variables["REQUEST_SCHEME"])
        assert (variables.get("HTTPS") == "on") == (scheme == "https"), variables
        return scheme
    if mode == "wsgi":
        return str(variables["wsgi.url_scheme"])
    return str(variables["scheme"])


def test_the_app_learns_https_from_nginx(
    h2: H2Client,
    lab: Lab,  # noqa: F811
    mode: str,
) -> None:
    over_tls = h2.get(f"/{mode}/env").json()
    plain = lab.get(f"/{mode}/env").json()
    assert scheme_seen(mode, over_tls["variables"]) == "https"  # type: ignore[index]
    assert scheme_seen(mode, plain["variables"]) == "http"


def test_a_bad_parameter_is_the_same_json_400(h2: H2Client, mode: str) -> None:
    answer = h2.get(f"/{mode}/coffee?ms=soon")
    assert answer.status == 400
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert isinstance(body, dict) and body["status"] == 400 and "ms" in body["error"]
    assert answer.headers["x-gateway-mode"] == mode


def test_nginx_own_errors_are_the_same_json(h2: H2Client) -> None:
    bad_mode = h2.get("/", headers=[("x-lab-mode", "php")])
    missing = h2.get("/lab/no-such-file.js")
    assert (bad_mode.status, bad_mode.json()) == (
        400,
        {"error": "unknown X-Lab-Mode header: use cgi, wsgi or asgi", "status": 400},
    )
    assert (missing.status, missing.json()) == (404, {"error": "not found", "status": 404})


# -- TLS defaults ----------------------------------------------------------------------


def handshake(tls_lab: TLSLab, version: ssl.TLSVersion, ciphers: str = "") -> str:  # noqa: F811
    """The version agreed, or the alert the server sent (raised by ssl as SSLError)."""
    host = urlsplit(tls_lab.url)
    context = ssl.create_default_context(cafile=tls_lab.ca_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1_1 is, on purpose
        context.minimum_version = context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    with socket.create_connection((host.hostname, host.port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=host.hostname) as tls:
                return tls.version() or ""
        except ssl.SSLError as exc:
            return str(exc.reason)


def test_tls_12_and_13_are_spoken(tls_lab: TLSLab) -> None:  # noqa: F811
    assert handshake(tls_lab, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    assert handshake(tls_lab, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"


def test_tls_11_is_refused_by_the_server(tls_lab: TLSLab) -> None:  # noqa: F811
    # SECLEVEL=0 lets this client offer TLS 1.1 at all; the refusal is the server's alert.
    refused = handshake(tls_lab, ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0")
    assert refused == "TLSV1_ALERT_PROTOCOL_VERSION"


def test_a_cbc_sha1_cipher_is_refused_by_the_server(tls_lab: TLSLab) -> None:  # noqa: F811
    """nginx's default list ("HIGH:!aNULL:!MD5") accepts this one; tls.conf does not."""
    refused = handshake(tls_lab, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA")
    assert refused == "SSLV3_ALERT_HANDSHAKE_FAILURE"


# -- HTTP/2 abuse the edge refuses -----------------------------------------------------


def test_streams_past_the_limit_are_refused(h2: H2Client, tls_lab: TLSLab) -> None:  # noqa: F811
    """RFC 9113 §5.1.2: a stream past SETTINGS_MAX_CONCURRENT_STREAMS is refused
    (RST_STREAM REFUSED_STREAM), the ones inside it are kept.

    The uploads announce a body and never send it: nginx holds each stream
    open waiting for it, and no gateway sees a request. All are sent before
    the server's SETTINGS are read, as a client that ignores them would.
    """
    ids = [
        h2.request("/asgi/upload", "POST", [("content-length", "1")], end_stream=False, send=False)
        for _ in range(MAX_STREAMS + 5)
    ]
    h2.flush()
    h2.wait(ids[MAX_STREAMS:], timeout=10)
    h2.settle(0.5)
    assert h2.remote_settings.get(MAX_CONCURRENT_STREAMS) == MAX_STREAMS
    refused = [s for s in ids if h2.streams[s].reset == REFUSED_STREAM]
    assert refused == ids[MAX_STREAMS:]
    assert not any(h2.streams[s].done for s in ids[:MAX_STREAMS])
    assert h2.goaway is None
    assert_lab_answers(tls_lab)


def random_text(n: int, seed: int) -> str:
    # Random letters: HPACK's Huffman code cannot shrink them much.
    rnd = random.Random(seed)
    return "".join(rnd.choice(string.ascii_letters + string.digits) for _ in range(n))


def big_headers(total: int) -> list[tuple[str, str]]:
    size = 12_000
    return [(f"x-big-{i}", random_text(size, i)) for i in range(-(-total // size))]


def test_an_oversized_header_block_ends_the_connection(
    h2: H2Client,
    tls_lab: TLSLab,  # noqa: F811
) -> None:
    """More header than large_client_header_buffers holds (4 x 16 KiB): nginx ends
    the connection (GOAWAY ENHANCE_YOUR_CALM) and no app sees the request."""
    stream = h2.request("/asgi/", headers=big_headers(HEADER_BUFFER * HEADER_BUFFERS + 8_000))
    h2.wait([stream], timeout=10)
    assert h2.goaway is not None, "nginx took a header block larger than its buffers"
    assert h2.goaway.error_code == ENHANCE_YOUR_CALM
    assert h2.streams[stream].status == 0
    assert_lab_answers(tls_lab)


def test_a_header_block_inside_the_limit_gets_through(h2: H2Client) -> None:
    """The control for the test above: the same shape, a little smaller, passes
    nginx and reaches the gateway, whose own limit per field (gunicorn's 8190
    bytes) answers with its JSON 431: a second line of defence."""
    stream = h2.request("/asgi/", headers=big_headers(HEADER_BUFFER * HEADER_BUFFERS - 8_000))
    h2.wait([stream], timeout=10)
    assert h2.goaway is None
    answer = h2.streams[stream]
    assert (answer.status, answer.json()["status"]) == (431, 431)  # type: ignore[index]


def test_rapid_reset_is_cut_off(h2: H2Client, tls_lab: TLSLab) -> None:  # noqa: F811
    """CVE-2023-44487: open a stream and reset it at once, over and over, so the
    server starts work the client never waits for. nginx must not take them
    all: it refuses streams past twice http2_max_concurrent_streams in one read
    (Debian's backported fix) and ends every connection after keepalive_requests
    (1000) streams. Either way a GOAWAY comes before the last stream is taken."""
    pairs = 1_100
    for _ in range(pairs):
        stream = h2.request("/nginx-health", send=False)
        h2.reset(stream, send=False)
    h2.flush()
    last_sent = max(h2.streams)
    h2.settle(5.0)
    # nginx ends the connection: with a GOAWAY naming the last stream it took,
    # or, when it closes with our frames still unread, a reset that can discard
    # the GOAWAY still in flight (RFC 9113 §6.8 asks for one, TCP may lose it).
    # Left open, it would have taken every stream.
    assert h2.goaway is not None or h2.closed, (
        f"nginx took {pairs} opened-and-reset streams on one connection and kept it open"
    )
    if h2.goaway is not None:
        assert h2.goaway.last_stream_id < last_sent
    assert_lab_answers(tls_lab)
