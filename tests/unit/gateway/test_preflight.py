"""What both gateway layers answer before the app: one pure function, the same in WSGI and ASGI.

Also here: the reason-phrase table every layer and the app share, the body
limit on chunked bodies, and the mode registry.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest
from asgiref.testing import ApplicationCommunicator

from apps.breakfast import kitchen
from gateway import errors
from gateway.cgi.bridge import CGIBridge
from gateway.config import MODE_SPECS, MODES, Settings
from gateway.middleware.asgi import GatewayASGI
from gateway.middleware.wsgi import GatewayWSGI
from gateway.preflight import HANDSHAKE_BODY, HOST_MISSING, preflight
from gateway.proxy import AllowList
from gateway.servers.gunicorn import build_app, gunicorn_options
from gateway.servers.uvicorn import handshake_with_body

LOOPBACK = AllowList.parse("127.0.0.1")
LIMIT = 10


def reading_wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Reads the body the way the demo app does (64 KiB blocks to the end) and says its size."""
    size = 0
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    while block := stream.read(int(length) - size if length else 65536):
        size += len(block)
        if length and size >= int(length):
            break
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"read": size}).encode()]


async def reading_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps({"read": size}).encode()})


class Server:
    """start_response of a server that, like gunicorn's, can be told to close the connection."""

    def __init__(self) -> None:
        self.status = ""
        self.closed = False

    def start_response(self, status: str, headers: list[Any], exc_info: Any = None) -> Any:
        self.status = status
        return lambda data: None

    def force_close(self) -> None:
        self.closed = True


def wsgi(
    version: str,
    headers: dict[str, str],
    path: str = "/",
    body: list[bytes] | None = None,
    validate_outer: bool = False,
    peer: str = "198.51.100.7",
) -> tuple[int, dict[str, Any], bool]:
    env: dict[str, Any] = {
        "SERVER_PROTOCOL": f"HTTP/{version}",
        "REQUEST_METHOD": "POST" if body is not None else "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "REMOTE_ADDR": peer,
        "wsgi.input": io.BytesIO(b"".join(body or [])),
    }
    setup_testing_defaults(env)
    env.pop("HTTP_HOST")
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        env[key if key in ("CONTENT_LENGTH", "CONTENT_TYPE") else f"HTTP_{key}"] = value
    server = Server()
    # wsgiref.validate checks the layer as a server to the app it wraps (its
    # wsgi.input wrapper included) and, with validate_outer, as an app to the
    # server (its start_response wrapper then hides the server's force_close).
    layer = GatewayWSGI(validator(reading_wsgi), mode="wsgi", allow=LOOPBACK, max_body_bytes=LIMIT)
    result = (validator(layer) if validate_outer else layer)(env, server.start_response)
    try:
        data = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return int(server.status.split()[0]), json.loads(data), server.closed


def asgi(
    version: str,
    headers: dict[str, str],
    path: str = "/",
    body: list[bytes] | None = None,
    peer: str = "198.51.100.7",
) -> tuple[int, dict[str, Any], bool]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": version,
        "method": "POST" if body is not None else "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": (peer, 1),
        "server": ("127.0.0.1", 8083),
    }

    async def run() -> tuple[int, dict[str, Any], bool]:
        layer = GatewayASGI(reading_asgi, mode="wsgi", allow=LOOPBACK, max_body_bytes=LIMIT)
        comm = ApplicationCommunicator(layer, scope)
        chunks = body or [b""]
        for i, chunk in enumerate(chunks):
            more = i < len(chunks) - 1
            await comm.send_input({"type": "http.request", "body": chunk, "more_body": more})
        start = await comm.receive_output(1)
        data = (await comm.receive_output(1))["body"]
        closes = (b"connection", b"close") in start["headers"]
        return start["status"], json.loads(data), closes

    return asyncio.run(run())


# (version, headers, path, body) -> (status, closes)
SHAPES = [
    pytest.param("1.1", {"Host": "lab.test"}, "/", None, 200, False, id="http11-host"),
    pytest.param("1.1", {}, "/", None, 400, False, id="http11-no-host"),
    # RFC 9112 §3.2: an empty Host is valid (and what nginx sends for a client without one).
    pytest.param("1.1", {"Host": ""}, "/", None, 200, False, id="http11-empty-host"),
    pytest.param("1.0", {}, "/", None, 200, False, id="http10-no-host"),

    pytest.param(
        "1.1", {"Host": "a", "Content-Length": "11"}, "/", [b"x" * 11], 413, True, id="cl-over"
    ),
    pytest.param(
        "1.1", {"Host": "a", "Transfer-Encoding": "chunked"}, "/", [b"x" * 6] * 2, 413, True,
        id="chunked-over",
    ),
    pytest.param(
        "1.1", {"Host": "a", "Transfer-Encoding": "chunked"}, "/", [b"x" * 5] * 2, 200, False,
        id="chunked-at-the-limit",
    ),
    pytest.param(
        "1.1", {"Host": "a", "Transfer-Encoding": "gzip, chunked"}, "/", [b"x"], 501, True,
        id="te-gzip",
    ),
    pytest.param("1.1", {"Host": "a"}, "/healthz", None, 200, False, id="healthz"),
    pytest.param(
        "1.1", {"Host": "a", "Content-Length": "3"}, "/healthz", [b"abc"], 200, True,
        id="healthz-with-an-unread-body",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("version", "headers", "path", "body", "status", "closes"), SHAPES)
def test_both_layers_answer_alike(
    version: str,
    headers: dict[str, str],
    path: str,
    body: list[bytes] | None,
    status: int,
    closes: bool,
) -> None:
    from_wsgi = wsgi(version, headers, path, body)
    from_asgi = asgi(version, headers, path, body)
    assert from_wsgi[0] == from_asgi[0] == status
    assert from_wsgi[2] is from_asgi[2] is closes
    if status >= 400:
        assert from_wsgi[1] == from_asgi[1]
        assert from_wsgi[1]["status"] == status


@pytest.mark.parametrize(("version", "headers", "path", "body", "status", "closes"), SHAPES)
def test_the_wsgi_layer_passes_wsgiref_validate_on_both_sides(
    version: str,
    headers: dict[str, str],
    path: str,
    body: list[bytes] | None,
    status: int,
    closes: bool,
) -> None:
    assert wsgi(version, headers, path, body, validate_outer=True)[0] == status


@pytest.mark.parametrize(
    ("peer", "headers", "status"),
    [
        # Behind nginx, an HTTP/1.0 client's request without Host arrives as
        # nginx's HTTP/1.1 without Host, from a trusted peer that names the client.
        pytest.param("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, 200, id="from-nginx"),
        pytest.param("198.51.100.7", {"X-Forwarded-For": "203.0.113.9"}, 400, id="untrusted"),
        pytest.param("127.0.0.1", {}, 400, id="trusted-but-not-proxied"),
    ],
)
def test_a_missing_host_is_an_older_client_s_only_behind_the_proxy(
    peer: str, headers: dict[str, str], status: int
) -> None:
    assert wsgi("1.1", headers, peer=peer)[0] == status
    assert asgi("1.1", headers, peer=peer)[0] == status


def test_a_trusted_forwarded_host_is_the_host_in_both_layers() -> None:
    env: dict[str, Any] = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_HOST": "lab.test:8080"}
    setup_testing_defaults(env)
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["wsgi"] = environ["HTTP_HOST"]
        start_response("200 OK", [])
        return []

    GatewayWSGI(app, mode="wsgi", allow=LOOPBACK)(env, Server().start_response)

    async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["asgi"] = [v for k, v in scope["headers"] if k == b"host"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    scope = {
        "type": "http",
        "http_version": "1.1",
        "path": "/",
        "headers": [(b"host", b"127.0.0.1:8083"), (b"x-forwarded-host", b"lab.test:8080")],
        "client": ("127.0.0.1", 1),
    }

    async def run() -> None:
        comm = ApplicationCommunicator(GatewayASGI(asgi_app, mode="asgi", allow=LOOPBACK), scope)
        await comm.send_input({"type": "http.request", "body": b""})
        await comm.receive_output(1)

    asyncio.run(run())
    assert seen == {"wsgi": "lab.test:8080", "asgi": [b"lab.test:8080"]}


def test_a_missing_host_names_the_rule() -> None:
    answer = preflight(
        http_version="1.1",
        host=None,
        proxied=False,
        path="/",
        content_length=None,
        transfer_encoding=None,
        max_body_bytes=None,
        mode="cgi",
    )
    assert answer is not None and answer.data == {"error": HOST_MISSING, "status": 400}


@pytest.mark.parametrize(
    ("length", "coding", "refused"),
    [("5", None, True), (None, "chunked", True), (None, "gzip", True), ("0", None, False)],
)
def test_a_websocket_handshake_with_a_body_is_refused(
    length: str | None, coding: str | None, refused: bool
) -> None:
    def answer(path: str | None) -> Any:
        return preflight(
            http_version="1.1",
            host="x",
            proxied=False,
            path=path,  # None: a WebSocket handshake
            content_length=length,
            transfer_encoding=coding,
            max_body_bytes=None,
            mode="asgi",
        )

    got = answer(None)
    if refused:
        assert got is not None and got.close
        assert got.data == {"error": HANDSHAKE_BODY, "status": 400}
    else:
        assert got is None
    # The same framing on a plain GET is the app's business (or a 501 for gzip).
    assert answer("/") is None or answer("/").status == 501


def test_uvicorn_sees_the_same_handshakes_with_a_body() -> None:
    handshake = [(b"Host", b"x"), (b"Upgrade", b"WebSocket"), (b"Connection", b"Upgrade")]
    assert handshake_with_body([*handshake, (b"Transfer-Encoding", b"chunked")])
    assert handshake_with_body([*handshake, (b"content-length", b"5")])
    assert not handshake_with_body([*handshake, (b"Content-Length", b"0")])
    assert not handshake_with_body(handshake)
    assert not handshake_with_body([(b"Host", b"x"), (b"Content-Length", b"5")])


class TestReasonPhrases:
    @pytest.mark.parametrize("status", [400, 408, 413, 431, 500, 501, 502, 503, 504])
    def test_the_gateway_and_the_app_agree(self, status: int) -> None:
        # The app (apps/breakfast/kitchen.py, used by all three of its modes)
        # keeps its own table; both come from http.HTTPStatus.
        assert errors.status_line(status) == kitchen.status_line(status)
        assert errors.reason(status) == HTTPStatus(status).phrase

    def test_unknown_statuses_read_as_their_class(self) -> None:
        assert errors.reason(499) == "Client Error"
        assert errors.reason(599) == "Server Error"

    def test_error_body(self) -> None:
        body = json.loads(errors.error_body(503, "busy", mode="cgi"))
        assert body == {"error": "busy", "status": 503, "mode": "cgi"}


class TestModeRegistry:
    def test_every_mode_has_a_spec(self) -> None:
        assert set(MODE_SPECS) == set(MODES)

    @pytest.mark.parametrize(
        ("mode", "layer", "inner"),
        [("cgi", GatewayWSGI, CGIBridge), ("wsgi", GatewayWSGI, None), ("asgi", GatewayASGI, None)],
    )
    def test_build_app_wraps_the_mode_s_app(self, mode: str, layer: type, inner: Any) -> None:
        app = build_app(Settings.from_env({"GATEWAY_MODE": mode}))
        assert isinstance(app, layer)
        if inner is not None:
            assert isinstance(app.app, inner)

    def test_cgi_has_a_thread_for_every_running_and_queued_script(self) -> None:
        s = Settings(mode="cgi", cgi_max_scripts=4, cgi_queue_max=10, workers=7)
        options = gunicorn_options(s)
        assert options["workers"] == 1  # the script count is the concurrency, not workers
        assert options["threads"] > 4 + 10
        assert options["worker_class"] == "gthread"

    def test_no_forwarder_header_is_believed(self) -> None:
        # gunicorn's default would take SCRIPT_NAME and PATH_INFO from request
        # headers sent by any trusted peer (every local process, natively).
        assert gunicorn_options(Settings(mode="wsgi"))["forwarder_headers"] == ""
