"""The Host of an absolute-form request-target (RFC 9112 §3.2.2), in one place.

The rule itself (gateway.proxy), then each edge that applies it: the WSGI
layer (gunicorn's RAW_URI), the ASGI layer (gunicorn's asyncio worker leaves
the absolute form in the scope's path) and uvicorn's protocol (its parser keeps
only the path). The running gateways are tried in
tests/integration/test_hostile_app.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator

from gateway.middleware.asgi import GatewayASGI
from gateway.proxy import origin_path, request_host, target_authority
from tests.unit.gateway.test_gateway_layer import LOOPBACK, seen_wsgi, wsgi_call


@pytest.mark.parametrize(
    "target, authority",
    [
        ("http://a.test:81/env?q=1", "a.test:81"),
        ("HTTPS://A.test/x", "A.test"),
        ("http://a.test?q", "a.test"),
        ("http://a.test#f", "a.test"),
        ("http://a.test", "a.test"),
        ("http:///x", None),
        ("/env", None),
        ("/http://a.test/", None),
        ("*", None),
        ("ftp://a.test/", None),
        ("a.test:81", None),  # authority-form (CONNECT) names no path and is not this rule
    ],
)
def test_target_authority(target: str, authority: str | None) -> None:
    assert target_authority(target) == authority


@pytest.mark.parametrize(
    "target, path",
    [
        ("http://a.test:81/env", "/env"),
        ("http://a.test:81/env?q=1", "/env"),
        ("http://a.test", "/"),
        ("http://a.test?q=1", "/"),
        ("/env", "/env"),
    ],
)
def test_origin_path(target: str, path: str) -> None:
    assert origin_path(target) == path


class TestRequestHost:
    def test_the_authority_replaces_the_host_header(self) -> None:
        assert request_host("http://a.test:81/env", "other:1", "1.1") == "a.test:81"

    def test_origin_form_keeps_the_host_header(self) -> None:
        assert request_host("/env", "other:1", "1.1") == "other:1"
        assert request_host("/env", None, "1.0") is None

    def test_http11_without_host_stays_without_one(self) -> None:
        # RFC 9112 §3.2: still a 400, absolute form or not (gateway.preflight).
        assert request_host("http://a.test/env", None, "1.1") is None

    def test_http10_without_host_gets_the_authority(self) -> None:
        assert request_host("http://a.test/env", None, "1.0") == "a.test"


class TestWSGILayer:
    def test_raw_uri_in_absolute_form_sets_http_host(self) -> None:
        _, _, body = wsgi_call(
            seen_wsgi, RAW_URI="http://a.test:9000/env?a=1", HTTP_HOST="other:1", PATH_INFO="/env"
        )
        assert json.loads(body)["HTTP_HOST"] == "a.test:9000"

    def test_origin_form_keeps_http_host(self) -> None:
        _, _, body = wsgi_call(seen_wsgi, RAW_URI="/env?a=1", HTTP_HOST="other:1")
        assert json.loads(body)["HTTP_HOST"] == "other:1"


async def seen_host(scope: dict[str, Any], receive: Any, send: Any) -> None:
    hosts = [bytes(v).decode() for k, v in scope["headers"] if k == b"host"]
    body = json.dumps({"hosts": hosts, "path": scope["path"], "raw": scope["raw_path"].decode()})
    start = {"type": "http.response.start", "status": 200, "headers": []}
    await send(start)
    await send({"type": "http.response.body", "body": body.encode()})


def asgi_seen(path: str, headers: list[tuple[bytes, bytes]], version: str) -> dict[str, Any]:
    scope = {
        "type": "http",
        "http_version": version,
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"a=1",
        "root_path": "",
        "headers": headers,
        "client": ("198.51.100.7", 1),
    }

    async def run() -> dict[str, Any]:
        comm = ApplicationCommunicator(GatewayASGI(seen_host, mode="asgi", allow=LOOPBACK), scope)
        await comm.send_input({"type": "http.request", "body": b""})
        await comm.receive_output(1)
        body = await comm.receive_output(1)
        return dict(json.loads(body["body"]))

    return asyncio.run(run())


class TestASGILayer:
    def test_absolute_form_path_gives_host_and_origin_path(self) -> None:
        seen = asgi_seen("http://a.test:9000/env", [(b"host", b"other:1")], "1.1")
        assert seen == {"hosts": ["a.test:9000"], "path": "/env", "raw": "/env"}

    def test_http10_without_host_gets_one(self) -> None:
        seen = asgi_seen("http://a.test/env", [], "1.0")
        assert seen["hosts"] == ["a.test"]

    def test_origin_form_changes_nothing(self) -> None:
        seen = asgi_seen("/env", [(b"host", b"other:1")], "1.1")
        assert seen == {"hosts": ["other:1"], "path": "/env", "raw": "/env"}


class TestUvicornProtocol:
    """uvicorn's parser drops the authority: its protocol applies the rule first."""

    def request(self, raw: bytes) -> dict[str, Any]:
        from gateway.servers.uvicorn import JSONErrorsHttpTools

        seen: dict[str, Any] = {}

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            seen.update(scope)

        async def run() -> None:
            from uvicorn.config import Config
            from uvicorn.server import ServerState

            config = Config(app=app, lifespan="off")
            config.load()
            protocol = JSONErrorsHttpTools(config=config, server_state=ServerState(), app_state={})
            protocol.connection_made(FakeTransport())  # type: ignore[arg-type]
            protocol.data_received(raw)
            for _ in range(10):
                await asyncio.sleep(0)

        asyncio.run(run())
        return seen

    def test_absolute_form_host(self) -> None:
        scope = self.request(b"GET http://a.test:9000/env?a=1 HTTP/1.1\r\nHost: other:1\r\n\r\n")
        assert [v for k, v in scope["headers"] if k == b"host"] == [b"a.test:9000"]
        assert (scope["path"], scope["query_string"]) == ("/env", b"a=1")

    def test_a_header_name_with_an_underscore_is_dropped_as_gunicorn_does(self) -> None:
        scope = self.request(b"GET /env HTTP/1.1\r\nHost: a\r\nSCRIPT_NAME: /x\r\nX-A: 1\r\n\r\n")
        assert [k for k, _ in scope["headers"]] == [b"host", b"x-a"]

    def test_origin_form_host_unchanged(self) -> None:
        scope = self.request(b"GET /env HTTP/1.1\r\nHost: other:1\r\n\r\n")
        assert [v for k, v in scope["headers"] if k == b"host"] == [b"other:1"]


class TestUvicornRefusesWhatGunicornRefuses:
    """httptools takes these; the protocol refuses them as gunicorn does, in JSON."""

    def answer(self, raw: bytes) -> bytes:
        from uvicorn.config import Config
        from uvicorn.server import ServerState

        from gateway.servers.uvicorn import JSONErrorsHttpTools

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            raise AssertionError("the app must not be called")

        transport = FakeTransport()

        async def run() -> None:
            config = Config(app=app, lifespan="off")
            config.load()
            protocol = JSONErrorsHttpTools(config=config, server_state=ServerState(), app_state={})
            protocol.connection_made(transport)  # type: ignore[arg-type]
            protocol.data_received(raw)
            for _ in range(10):
                await asyncio.sleep(0)

        asyncio.run(run())
        assert transport.closed
        return b"".join(transport.written)

    @pytest.mark.parametrize(
        "head, status",
        [
            ("GET / HTTP/1.1\r\nHost: a\r\n" + "X-H: v\r\n" * 100, 431),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + "a" * 9000 + "\r\n", 431),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n", 505),
            ("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n", 400),
        ],
        ids=["101-fields", "9k-field", "two-hosts", "http2-line", "te-in-http10"],
    )
    def test_refused_in_json(self, head: str, status: int) -> None:
        data = self.answer(head.encode() + b"\r\n")
        assert data.startswith(f"HTTP/1.1 {status} ".encode()), data[:80]
        assert json.loads(data.split(b"\r\n\r\n", 1)[1])["status"] == status


class FakeTransport:
    """The least of an asyncio transport uvicorn's protocol calls on connection_made."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8083), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        pass


class TestHealthzInAbsoluteForm:
    """RFC 9112 §3.2.2: the target is taken apart before the layer answers /healthz."""

    def test_wsgi(self) -> None:
        status, _, body = wsgi_call(
            seen_wsgi, RAW_URI="http://a.test/healthz", PATH_INFO="/healthz"
        )
        assert status == "200 OK" and json.loads(body) == {"status": "ok", "mode": "wsgi"}

    def test_asgi(self) -> None:
        seen = asgi_seen("http://a.test/healthz", [(b"host", b"a.test")], "1.1")
        assert seen == {"status": "ok", "mode": "asgi"}
