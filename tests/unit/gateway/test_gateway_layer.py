"""The gateway layer in-process: trust, mount points, /healthz and trace headers.

The WSGI layer runs under wsgiref.validate (PEP 3333 turned into assertions);
the ASGI layer through asgiref's ApplicationCommunicator.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest
from asgiref.testing import ApplicationCommunicator

from gateway.middleware import asgi as asgi_layer
from gateway.middleware import wsgi as wsgi_layer
from gateway.middleware.asgi import GatewayASGI
from gateway.middleware.wsgi import GatewayWSGI
from gateway.preflight import HOST_MISSING
from gateway.proxy import AllowList
from gateway.servers.error_pages import json_error

LOOPBACK = AllowList.parse("127.0.0.1")


# --- stand-in apps that report what they saw ---------------------------------------------


def seen_wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = json.dumps(
        {k: environ.get(k) for k in ("SCRIPT_NAME", "PATH_INFO", "REMOTE_ADDR", "HTTP_HOST")}
        | {"scheme": environ["wsgi.url_scheme"], "rid": environ.get("HTTP_X_REQUEST_ID")}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def streaming_wsgi(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one\n"
    yield b"two\n"


def wsgi_call(app: Any, **environ: Any) -> tuple[str, dict[str, str], bytes]:
    # wsgiref.validate insists on keys a real server always sets.
    base = {"REMOTE_ADDR": "127.0.0.1", "QUERY_STRING": "", "SCRIPT_NAME": "", "PATH_INFO": "/"}
    env: dict[str, Any] = base | environ
    setup_testing_defaults(env)
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured.update(status=status, headers=dict(headers))
        return lambda data: None

    result = validator(GatewayWSGI(app, mode="wsgi", allow=LOOPBACK))(env, start_response)
    try:
        body = b"".join(result)
    finally:
        result.close()  # type: ignore[attr-defined]
    return captured["status"], captured["headers"], body


class TestWSGILayer:
    def test_trace_headers_on_a_finished_response(self) -> None:
        status, headers, _ = wsgi_call(seen_wsgi)
        assert status == "200 OK"
        assert headers["X-Gateway-Mode"] == "wsgi"
        assert headers["X-Gateway-Pid"] == headers["X-Gateway-Worker"] == str(os.getpid())
        assert float(headers["X-Gateway-Start"]) <= float(headers["X-Gateway-End"])
        assert len(headers["X-Request-Id"]) == 32

    def test_streamed_response_carries_start_only(self) -> None:
        _, headers, body = wsgi_call(streaming_wsgi)
        assert body == b"one\ntwo\n"
        assert "X-Gateway-Start" in headers and "X-Gateway-End" not in headers

    def test_trusted_peer_moves_mount_point_and_client(self) -> None:
        _, _, body = wsgi_call(
            seen_wsgi,
            PATH_INFO="/wsgi/env",
            HTTP_X_FORWARDED_PREFIX="/wsgi",
            HTTP_X_FORWARDED_FOR="203.0.113.5",
            HTTP_X_FORWARDED_PROTO="https",
            HTTP_X_FORWARDED_HOST="lab.example",
            HTTP_X_REQUEST_ID="abc123",
        )
        seen = json.loads(body)
        assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("/wsgi", "/env")
        assert (seen["REMOTE_ADDR"], seen["scheme"]) == ("203.0.113.5", "https")
        assert (seen["HTTP_HOST"], seen["rid"]) == ("lab.example", "abc123")

    def test_untrusted_peer_changes_nothing(self) -> None:
        _, headers, body = wsgi_call(
            seen_wsgi,
            REMOTE_ADDR="198.51.100.7",
            PATH_INFO="/wsgi/env",
            HTTP_X_FORWARDED_PREFIX="/wsgi",
            HTTP_X_FORWARDED_FOR="203.0.113.5",
            HTTP_X_REQUEST_ID="spoofed",
        )
        seen = json.loads(body)
        assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("", "/wsgi/env")
        assert seen["REMOTE_ADDR"] == "198.51.100.7"
        assert headers["X-Request-Id"] != "spoofed"

    @pytest.mark.parametrize("path", ["/healthz", "/wsgi/healthz"])
    def test_healthz_is_answered_by_the_gateway(self, path: str) -> None:
        status, headers, body = wsgi_call(
            seen_wsgi, PATH_INFO=path, HTTP_X_FORWARDED_PREFIX="/wsgi"
        )
        assert status == "200 OK" and json.loads(body) == {"status": "ok", "mode": "wsgi"}
        assert headers["X-Gateway-Mode"] == "wsgi"

    def test_app_set_trace_headers_are_kept(self) -> None:
        def cgi_like(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain"), ("X-Gateway-Pid", "42")])
            return [b"x"]

        _, headers, _ = wsgi_call(cgi_like)
        assert headers["X-Gateway-Pid"] == "42"
        assert headers["X-Gateway-Worker"] == str(os.getpid())


# --- ASGI ----------------------------------------------------------------------------------


async def seen_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})
        return
    body = json.dumps(
        {
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "client": scope.get("client"),
            "scheme": scope.get("scheme"),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    if scope["path"].endswith("/stream"):
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
    await send({"type": "http.response.body", "body": body})


def asgi_call(
    path: str, headers: list[tuple[bytes, bytes]] | None = None, client: str = "127.0.0.1"
) -> tuple[int, dict[str, str], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"lab.test"), *(headers or [])],
        "client": (client, 50000),
        "server": ("127.0.0.1", 8083),
    }

    async def run() -> tuple[int, dict[str, str], bytes]:
        comm = ApplicationCommunicator(GatewayASGI(seen_asgi, mode="asgi", allow=LOOPBACK), scope)
        await comm.send_input({"type": "http.request", "body": b""})
        start = await comm.receive_output(1)
        body = b""
        while True:
            msg = await comm.receive_output(1)
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        hdrs = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return start["status"], hdrs, body

    return asyncio.run(run())


class TestASGILayer:
    def test_trace_headers_and_mount_point(self) -> None:
        status, headers, body = asgi_call(
            "/asgi/env",
            [
                (b"x-forwarded-prefix", b"/asgi"),
                (b"x-forwarded-for", b"203.0.113.5"),
                (b"x-forwarded-proto", b"https"),
            ],
        )
        seen = json.loads(body)
        assert status == 200
        # ASGI: path keeps the root_path in front of it.
        assert (seen["path"], seen["root_path"]) == ("/asgi/env", "/asgi")
        assert (seen["client"][0], seen["scheme"]) == ("203.0.113.5", "https")
        assert headers["x-gateway-mode"] == "asgi"
        assert float(headers["x-gateway-start"]) <= float(headers["x-gateway-end"])

    def test_untrusted_peer_changes_nothing(self) -> None:
        _, _, body = asgi_call(
            "/asgi/env",
            [(b"x-forwarded-prefix", b"/asgi"), (b"x-forwarded-for", b"1.2.3.4")],
            client="198.51.100.7",
        )
        seen = json.loads(body)
        assert (seen["root_path"], seen["client"][0]) == ("", "198.51.100.7")

    def test_streamed_response_carries_start_only(self) -> None:
        _, headers, body = asgi_call("/stream")
        assert body.startswith(b"a")
        assert "x-gateway-start" in headers and "x-gateway-end" not in headers

    def test_healthz(self) -> None:
        status, headers, body = asgi_call("/asgi/healthz", [(b"x-forwarded-prefix", b"/asgi")])
        assert status == 200 and json.loads(body)["mode"] == "asgi"

    def test_websocket_accept_carries_trace_headers(self) -> None:
        scope = {
            "type": "websocket",
            "path": "/ws",
            "root_path": "",
            "headers": [(b"host", b"lab.test")],
            "client": ("127.0.0.1", 1),
            "query_string": b"",
        }

        async def run() -> dict[str, Any]:
            comm = ApplicationCommunicator(
                GatewayASGI(seen_asgi, mode="asgi", allow=LOOPBACK), scope
            )
            await comm.send_input({"type": "websocket.connect"})
            return await comm.receive_output(1)

        accept = asyncio.run(run())
        names = {k.decode().lower() for k, _ in accept["headers"]}
        assert {"x-gateway-mode", "x-gateway-pid", "x-request-id"} <= names


class TestHostRequired:
    """RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400, in both layers."""

    def test_wsgi(self) -> None:
        assert wsgi_call(seen_wsgi, SERVER_PROTOCOL="HTTP/1.1")[0] == "200 OK"  # with Host
        env: dict[str, Any] = {"SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}
        setup_testing_defaults(env)
        del env["HTTP_HOST"]
        captured: list[str] = []
        result = GatewayWSGI(seen_wsgi, mode="wsgi", allow=LOOPBACK)(
            env, lambda s, h, e=None: captured.append(s)
        )
        assert captured == ["400 Bad Request"]
        assert json.loads(b"".join(result))["status"] == 400

    def test_asgi(self) -> None:
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "path": "/",
            "root_path": "",
            "headers": [],
            "client": ("127.0.0.1", 1),
        }

        async def run() -> dict[str, Any]:
            comm = ApplicationCommunicator(
                GatewayASGI(seen_asgi, mode="asgi", allow=LOOPBACK), scope
            )
            await comm.send_input({"type": "http.request", "body": b""})
            return await comm.receive_output(1)

        assert asyncio.run(run())["status"] == 400


class TestRefusedBeforeTheApp:
    """A body the gateway will not take is refused before the app reads a byte."""

    def call(self, **environ: Any) -> tuple[str, bytes]:
        env: dict[str, Any] = {"REMOTE_ADDR": "198.51.100.7", "REQUEST_METHOD": "POST"}
        setup_testing_defaults(env)
        env |= environ
        seen: list[str] = []
        layer = GatewayWSGI(seen_wsgi, mode="wsgi", allow=LOOPBACK, max_body_bytes=10)
        body = b"".join(layer(env, lambda s, h, e=None: seen.append(s)))
        return seen[0], body

    def test_declared_body_over_the_limit_is_413(self) -> None:
        status, body = self.call(CONTENT_LENGTH="11")
        assert status.startswith("413") and json.loads(body)["status"] == 413

    def test_body_at_the_limit_reaches_the_app(self) -> None:
        assert self.call(CONTENT_LENGTH="10")[0] == "200 OK"

    def test_unknown_transfer_coding_is_501(self) -> None:
        status, body = self.call(HTTP_TRANSFER_ENCODING="gzip, chunked")
        assert status.startswith("501") and "gzip" in json.loads(body)["error"]


class _SlowSocket:
    """A gunicorn.socket stand-in that records the timeouts drain sets."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def gettimeout(self) -> float | None:
        return None

    def settimeout(self, value: float | None) -> None:
        self.timeouts.append(value)


def test_closing_a_response_drains_the_body_the_app_left_unread() -> None:
    # An app that answers before reading (a form over its limit) leaves the body
    # in the socket; the sync worker then closes, and nginx, still sending it,
    # reports a 502 instead of the answer. Closing the response reads it first.
    sock = _SlowSocket()
    environ = {"wsgi.input": io.BytesIO(b"x" * 300_000), "gunicorn.socket": sock}
    assert wsgi_layer.drain(environ, limit=1_000_000) == 300_000
    assert sock.timeouts[-1] is None  # the socket's own timeout is back
    # No more than the body limit, and nothing past the time budget.
    environ = {"wsgi.input": io.BytesIO(b"x" * 300_000)}
    assert wsgi_layer.drain(environ, limit=100_000) <= 100_000 + wsgi_layer.DRAIN_CHUNK
    environ = {"wsgi.input": io.BytesIO(b"x" * 300_000)}
    assert wsgi_layer.drain(environ, limit=None, budget_s=0) == 0
    # A body that breaks while being read ends the drain quietly.
    broken = {"wsgi.input": wsgi_layer.LimitedInput(io.BytesIO(b"x" * 300_000), 10)}
    assert wsgi_layer.drain(broken, limit=None) == 0


class TestWebSocketRefusedBeforeTheApp:
    """A handshake the layer refuses gets the JSON error an HTTP request would get."""

    def refuse(self, extensions: dict[str, Any]) -> list[dict[str, Any]]:
        scope = {
            "type": "websocket",
            "http_version": "1.1",
            "path": "/ws",
            "root_path": "",
            "headers": [],  # no Host: RFC 9112 §3.2, a 400 straight at a gateway
            "client": ("198.51.100.7", 1),
            "query_string": b"",
            "extensions": extensions,
        }

        async def run() -> list[dict[str, Any]]:
            comm = ApplicationCommunicator(
                GatewayASGI(seen_asgi, mode="asgi", allow=LOOPBACK), scope
            )
            await comm.send_input({"type": "websocket.connect"})
            sent = [await comm.receive_output(1)]
            if sent[0]["type"] == "websocket.http.response.start":
                sent.append(await comm.receive_output(1))
            return sent

        return asyncio.run(run())

    def test_with_the_denial_extension_a_json_400(self) -> None:
        start, body = self.refuse({"websocket.http.response": {}})
        assert (start["type"], start["status"]) == ("websocket.http.response.start", 400)
        headers = {bytes(k).lower(): v for k, v in start["headers"]}
        assert headers[b"content-type"] == b"application/json"
        assert b"x-gateway-mode" in headers
        assert json.loads(body["body"]) == {"error": HOST_MISSING, "status": 400}

    def test_without_it_the_only_no_is_a_close(self) -> None:
        (close,) = self.refuse({})
        assert close["type"] == "websocket.close"


def reading_wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    data = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [data]


class TestAnUnreadChunkedBodyEndsTheConnection:
    """A chunked body the app left unread: the connection closes after the answer."""

    def closes(self, app: Any, **environ: Any) -> bool:
        env: dict[str, Any] = {"REMOTE_ADDR": "198.51.100.7", "REQUEST_METHOD": "POST"}
        setup_testing_defaults(env)
        env |= environ
        closed: list[bool] = []

        class Response:
            def force_close(self) -> None:
                closed.append(True)

            def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Any:
                return lambda data: None

        result = GatewayWSGI(app, mode="wsgi", allow=LOOPBACK)(env, Response().start_response)
        b"".join(result)
        result.close()  # type: ignore[attr-defined]
        return bool(closed)

    def test_unread(self) -> None:
        assert self.closes(seen_wsgi, HTTP_TRANSFER_ENCODING="chunked")

    def test_read_to_its_end_keeps_the_connection(self) -> None:
        assert not self.closes(reading_wsgi, HTTP_TRANSFER_ENCODING="chunked")

    def test_a_declared_length_keeps_the_connection(self) -> None:
        assert not self.closes(seen_wsgi, CONTENT_LENGTH="0")


def test_the_asgi_layer_drains_a_declared_body_the_app_left_unread() -> None:
    # The ASGI twin: after the app answers, the layer receives the rest, so the
    # server sees the body framed to its end and need not cut the connection.
    chunks = [b"x" * 1000, b"y" * 1000, b""]
    received = []

    async def receive() -> dict[str, Any]:
        body = chunks.pop(0)
        received.append(body)
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    async def answer_early(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    layer = GatewayASGI(answer_early, mode="asgi", allow=AllowList.parse("127.0.0.1"))
    scope = {
        "type": "http", "http_version": "1.1", "method": "POST", "path": "/form",
        "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1),
        "headers": [(b"host", b"x"), (b"content-length", b"2000")],
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(layer(scope, receive, send))
    assert sent[0]["status"] == 413
    assert received == [b"x" * 1000, b"y" * 1000, b""]  # read to the end, after the answer


def test_the_asgi_drain_gives_up_on_a_silent_sender() -> None:
    async def silent() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    tracked = asgi_layer._TrackedReceive(silent)
    assert asyncio.run(asgi_layer.drain(tracked, None, budget_s=0.5)) == 0


# --- an app that fails ---------------------------------------------------------------------


async def fails_at_once(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("boom")


async def fails_after_start(scope: Any, receive: Any, send: Any) -> None:
    # The start is held by the layer until the first body message: nothing went out.
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("boom")


async def returns_without_an_answer(scope: Any, receive: Any, send: Any) -> None:
    return None


async def fails_mid_stream(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"a", "more_body": True})
    raise RuntimeError("boom")


def run_asgi(app: Any, scope: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The messages the layer sends for one GET /, as a server would get them."""
    scope = scope or {
        "type": "http", "http_version": "1.1", "method": "GET", "path": "/",
        "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1),
        "headers": [(b"host", b"lab.test")],
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(GatewayASGI(app, mode="asgi", allow=LOOPBACK)(scope, receive, send))
    return sent


class TestAnAppThatFailsBeforeItsResponse:
    """A 500 in the lab's JSON under every ASGI server, as gunicorn answers WSGI's."""

    @pytest.mark.parametrize("app", [fails_at_once, fails_after_start, returns_without_an_answer])
    def test_is_a_json_500_that_closes_the_connection(self, app: Any) -> None:
        start, body = run_asgi(app)
        assert start["status"] == 500
        headers = {bytes(k).lower(): v for k, v in start["headers"]}
        assert headers[b"content-type"] == b"application/json"
        assert headers[b"connection"] == b"close"
        assert b"x-gateway-mode" in headers
        assert json.loads(body["body"]) == {"error": "internal server error", "status": 500}

    def test_reads_as_gunicorns_own_500(self) -> None:
        # gunicorn answers a WSGI app's exception itself (Worker.handle_error,
        # an empty message) and the asyncio worker's ("Internal Server Error").
        (_, body) = run_asgi(fails_at_once)
        for message in ("", "Internal Server Error"):
            assert json_error(500, message).endswith(body["body"])

    def test_after_the_start_went_out_the_server_cuts_the_connection(self) -> None:
        with pytest.raises(RuntimeError, match="boom"):
            run_asgi(fails_mid_stream)


class TestTheAppGetsTheRequestId:
    """The app reads the id the response carries, as a WSGI app reads HTTP_X_REQUEST_ID."""

    @staticmethod
    async def echo_ids(scope: Any, receive: Any, send: Any) -> None:
        ids = [bytes(v).decode() for k, v in scope["headers"] if bytes(k) == b"x-request-id"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(ids).encode()})

    def ids(self, client: str) -> tuple[list[str], str]:
        start, body = run_asgi(
            self.echo_ids,
            {
                "type": "http", "http_version": "1.1", "method": "GET", "path": "/env",
                "root_path": "", "query_string": b"", "client": (client, 1),
                "headers": [(b"host", b"lab.test"), (b"X-Request-Id", b"abc123")],
            },
        )  # fmt: skip
        answered = {bytes(k).lower(): bytes(v).decode() for k, v in start["headers"]}
        return json.loads(body["body"]), answered[b"x-request-id"]

    def test_from_a_trusted_peer(self) -> None:
        assert self.ids("127.0.0.1") == (["abc123"], "abc123")

    def test_from_anyone_else_the_gateways_own(self) -> None:
        seen, answered = self.ids("198.51.100.7")
        assert seen == [answered] and answered != "abc123"
