"""The CGI bridge as gunicorn calls it: a WSGI callable, in-process, under wsgiref.validate.

The script is tests/unit/cgi_scripts/fixture_app.py (PATH_INFO picks a behaviour).
"""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

from gateway.cgi import make_cgi_app
from gateway.cgi.bridge import BridgeError, CGIBridge, redirected_request, request_from_environ
from gateway.cgi.runner import CGITimeout
from gateway.config import Settings
from gateway.framing import BodyTooLarge
from gateway.middleware.wsgi import GatewayWSGI
from gateway.proxy import AllowList

APP = Path(__file__).parent / "cgi_scripts" / "fixture_app.py"
TIMESTAMP = re.compile(r"\d+\.\d{6}")


class Response:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.body = status, body
        self.code = int(status.split()[0])
        self.headers = {k.lower(): v for k, v in headers}

    def json(self) -> Any:
        return json.loads(self.body)


def environ_for(
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    env: dict[str, Any] | None = None,
    **extra: str,
) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "/cgi",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "wsgi.input": io.BytesIO(body or b""),
    }
    if body is not None:
        environ["CONTENT_LENGTH"] = str(len(body))
    environ.update(env or {}, **extra)
    setup_testing_defaults(environ)
    return environ


def call(
    app: Any,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    *,
    validate: bool = True,
    env: dict[str, Any] | None = None,
    **extra: str,
) -> Response:
    captured: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured[:] = [status, headers]
        return lambda data: None

    wsgi = validator(app) if validate else app
    result = wsgi(environ_for(path, method, body, env, **extra), start_response)
    try:
        data = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return Response(captured[0], captured[1], data)


def settings(**changes: Any) -> Settings:
    return Settings(**{"mode": "cgi", "cgi_script": APP, "timeout_s": 10.0, **changes})


@pytest.fixture(scope="module")
def app() -> CGIBridge:
    return make_cgi_app(settings())


def assert_error(resp: Response, code: int, message: str) -> None:
    assert resp.code == code
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["status"] == code
    assert message in body["error"]


def test_meta_variables_from_the_environ(app: CGIBridge) -> None:
    resp = call(
        app, "/env", QUERY_STRING="a=1&b=%20x", HTTP_HOST="lab.example:8080",
        HTTP_X_FOO="bar", HTTP_PROXY="http://evil:3128", HTTP_AUTHORIZATION="Basic eDp5",
        REMOTE_ADDR="203.0.113.7", REMOTE_PORT="40000",
    )  # fmt: skip
    assert resp.status == "200 OK"
    env = resp.json()["env"]
    expected = {
        "SCRIPT_NAME": "/cgi",
        "PATH_INFO": "/env",
        "QUERY_STRING": "a=1&b=%20x",
        "REQUEST_METHOD": "GET",
        "SERVER_NAME": "lab.example",
        "SERVER_PORT": "8080",
        "REMOTE_ADDR": "203.0.113.7",
        "REMOTE_PORT": "40000",
        "HTTP_X_FOO": "bar",
        "GATEWAY_INTERFACE": "CGI/1.1",
    }
    assert {k: env.get(k) for k in expected} == expected
    assert "HTTP_PROXY" not in env and "HTTP_AUTHORIZATION" not in env


def test_trace_headers_name_the_script(app: CGIBridge) -> None:
    resp = call(app, "/env")
    assert resp.headers["x-gateway-pid"] == str(resp.json()["pid"])
    start, end = resp.headers["x-gateway-start"], resp.headers["x-gateway-end"]
    assert TIMESTAMP.fullmatch(start) and TIMESTAMP.fullmatch(end)
    assert float(start) <= float(end) <= time.time()
    assert resp.headers["content-length"] == str(len(resp.body))


def test_a_new_process_per_request(app: CGIBridge) -> None:
    pids = {call(app, "/env").headers["x-gateway-pid"] for _ in range(3)}
    assert len(pids) == 3


def test_script_cannot_forge_trace_or_length(app: CGIBridge) -> None:
    resp = call(app, "/fake-trace")
    assert resp.headers["x-gateway-pid"] != "1"
    assert resp.headers["content-length"] == "2"


def test_post_body_reaches_the_script(app: CGIBridge) -> None:
    resp = call(
        app, "/env", "POST", b"first_name=Ada", CONTENT_TYPE="application/x-www-form-urlencoded"
    )
    info = resp.json()
    assert info["body_bytes"] == 14
    assert info["env"]["CONTENT_LENGTH"] == "14"
    assert info["env"]["CONTENT_TYPE"] == "application/x-www-form-urlencoded"


def test_chunked_body_gets_a_content_length(app: CGIBridge) -> None:
    resp = call(app, "/env", "POST", None, HTTP_TRANSFER_ENCODING="chunked",
                env={"wsgi.input": io.BytesIO(b"abc")})  # fmt: skip
    info = resp.json()
    assert (info["body_bytes"], info["env"]["CONTENT_LENGTH"]) == (3, "3")
    assert "HTTP_TRANSFER_ENCODING" not in info["env"]


def test_status_passes_through(app: CGIBridge) -> None:
    resp = call(app, "/not-found")
    assert (resp.status, resp.body) == ("404 Not Found", b"nope")


def test_head_sends_headers_only(app: CGIBridge) -> None:
    resp = call(app, "/env", "HEAD")
    assert resp.code == 200 and resp.body == b""
    assert int(resp.headers["content-length"]) > 0


def test_local_redirect_is_served_internally(app: CGIBridge) -> None:
    resp = call(app, "/redirect-local", "POST", b"ignored")
    env = resp.json()["env"]
    assert resp.code == 200
    # RFC 3875 §6.2.2: served as a new GET for the local path, without the body.
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["REQUEST_METHOD"]) == (
        "/env", "from=redirect", "GET",
    )  # fmt: skip
    assert "CONTENT_LENGTH" not in env


def test_local_redirect_loop_is_bounded(app: CGIBridge) -> None:
    assert_error(call(app, "/redirect-loop"), 502, "more than 5 local redirects")


def test_client_redirect(app: CGIBridge) -> None:
    # No validator: wsgiref.validate insists on a Content-Type even for a bodiless 302.
    resp = call(app, "/redirect-client", validate=False)
    assert resp.status == "302 Found"
    assert resp.headers["location"] == "http://example.com/elsewhere"


def test_streamed_response(app: CGIBridge) -> None:
    captured: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured.extend([status, dict(headers)])

    result: Any = validator(app)(environ_for("/stream"), start_response)
    try:
        arrivals = [(time.monotonic(), chunk) for chunk in result]
    finally:
        result.close()
    assert b"".join(c for _, c in arrivals) == b"line 0\nline 1\nline 2\n"
    assert arrivals[-1][0] - arrivals[0][0] >= 0.15  # each line when it was written
    status, headers = captured
    assert status == "200 OK" and "X-Gateway-Pid" in headers and "X-Gateway-Start" in headers
    assert "X-Gateway-End" not in headers and "Content-Length" not in headers


@pytest.mark.parametrize(
    "path, message",
    [
        pytest.param("/bad-output", "sent invalid headers", id="bad-output"),
        pytest.param("/crash", "crashed (exit status 1)", id="crash"),
    ],
)
def test_bad_script_is_a_502(app: CGIBridge, path: str, message: str) -> None:
    resp = call(app, path)
    assert_error(resp, 502, message)
    assert "x-gateway-pid" in resp.headers


def test_output_too_large_is_a_502() -> None:
    app = make_cgi_app(settings(cgi_max_output_bytes=1024 * 1024))
    assert_error(call(app, "/output-flood"), 502, "exceeded 1048576 bytes")


def test_timeout_is_a_504() -> None:
    resp = call(make_cgi_app(settings(timeout_s=0.5)), "/sleep")
    assert_error(resp, 504, "longer than 0.5 s")
    assert TIMESTAMP.fullmatch(resp.headers["x-gateway-end"])


def test_busy_with_no_queue_is_a_503_with_retry_after() -> None:
    app = make_cgi_app(settings(cgi_max_scripts=1, cgi_queue_max=0))
    app.slots.acquire()  # one script already running
    try:
        resp = call(app, "/env")
    finally:
        app.slots.release()
    assert_error(resp, 503, "1 CGI scripts are running and 0 requests are waiting")
    assert resp.headers["retry-after"] == "1"
    assert call(app, "/env").code == 200


def test_past_the_cap_a_request_waits_its_turn_and_says_how_long() -> None:
    app = make_cgi_app(settings(cgi_max_scripts=1, cgi_queue_max=1, cgi_queue_wait_s=10))
    app.slots.acquire()  # one script already running, for 0.3 s more
    threading.Timer(0.3, app.slots.release).start()
    resp = call(app, "/env")
    assert resp.code == 200
    assert float(resp.headers["x-gateway-queue-ms"]) >= 250  # it waited for the slot


def test_a_request_that_waits_out_its_time_is_a_503_saying_so() -> None:
    app = make_cgi_app(settings(cgi_max_scripts=1, cgi_queue_max=1, cgi_queue_wait_s=0.2))
    app.slots.acquire()
    try:
        resp = call(app, "/env")
    finally:
        app.slots.release()
    assert_error(resp, 503, "waited 0.2 s for one of 1 CGI scripts")
    assert resp.headers["retry-after"] == "1"
    assert float(resp.headers["x-gateway-queue-ms"]) >= 200


def test_a_script_cannot_fake_the_queue_header() -> None:
    resp = call(make_cgi_app(settings()), "/env")
    assert resp.headers["x-gateway-queue-ms"] == "0.000"


def test_body_over_the_limit_is_a_413_before_any_script_runs() -> None:
    # The bridge runs inside GatewayWSGI (gateway.servers.gunicorn.build_app),
    # whose 413 it is: one check, one message (gateway.framing).
    bridge = make_cgi_app(settings(max_body_bytes=10, cgi_script=APP.with_name("missing.sh")))
    app = GatewayWSGI(bridge, mode="cgi", allow=AllowList.parse("127.0.0.1"), max_body_bytes=10)
    assert_error(call(app, "/env", "POST", b"x" * 11), 413, "over the limit of 10 bytes")
    assert_error(
        call(app, "/env", "POST", None, HTTP_TRANSFER_ENCODING="chunked",
             env={"wsgi.input": io.BytesIO(b"x" * 11)}),
        413, "over the limit of 10 bytes",
    )  # fmt: skip
    # Called alone, the bridge still bounds the chunked body it holds in memory.
    with pytest.raises(BodyTooLarge):
        call(bridge, "/env", "POST", None, HTTP_TRANSFER_ENCODING="chunked",
             env={"wsgi.input": io.BytesIO(b"x" * 11)})  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        # No validator for this one: wsgiref.validate rejects it first (as gunicorn would).
        pytest.param({"CONTENT_LENGTH": "12abc"}, "invalid Content-Length", id="bad-length"),
        pytest.param({"HTTP_X_BAD": "a\0b"}, "NUL", id="nul-in-header"),
    ],
)
def test_bad_request_values_are_a_400(app: CGIBridge, extra: dict[str, str], message: str) -> None:
    assert_error(call(app, "/env", validate=False, env=extra), 400, message)


def test_unstartable_script_is_a_502() -> None:
    app = make_cgi_app(settings(cgi_script=APP.with_name("missing.sh")))
    assert_error(call(app, "/env"), 502, "cannot start the CGI script")


@pytest.mark.parametrize(
    "host, scheme, expected",
    [
        pytest.param("lab.example", "http", ("lab.example", 80), id="default-http"),
        pytest.param("lab.example", "https", ("lab.example", 443), id="default-https"),
        pytest.param("[::1]:8443", "http", ("[::1]", 8443), id="ipv6"),
        pytest.param("lab.example:bad", "http", ("127.0.0.1", 80), id="bad-port-ignored"),
    ],
)
def test_server_name_and_port_from_host(host: str, scheme: str, expected: tuple[str, int]) -> None:
    env = environ_for("/env", env={"wsgi.url_scheme": scheme}, HTTP_HOST=host)
    env.update(SERVER_NAME="127.0.0.1", SERVER_PORT="80")
    req = request_from_environ(env, None)
    assert (req.server_name, req.server_port) == expected


def test_header_names_are_rebuilt_from_the_environ() -> None:
    req = request_from_environ(environ_for("/env", HTTP_X_REQUEST_ID="r1"), None)
    assert ("X-Request-Id", "r1") in req.headers


@pytest.mark.parametrize(
    "script_name, location, path_info, query",
    [
        pytest.param("/cgi", "/cgi/env?x=1", "/env", "x=1", id="under-the-mount"),
        pytest.param("/cgi", "/cgi", "", "", id="the-mount-itself"),
        pytest.param("", "/caf%C3%A9", "/caf\xc3\xa9", "", id="decoded-at-the-root"),
    ],
)
def test_redirected_request(script_name: str, location: str, path_info: str, query: str) -> None:
    req = request_from_environ(environ_for("/x", "POST", b"abc", SCRIPT_NAME=script_name), 3)
    new = redirected_request(req, location)
    assert (new.method, new.path_info, new.query_string, new.content_length) == (
        "GET", path_info, query, None,
    )  # fmt: skip


def test_redirect_outside_the_mount_is_refused() -> None:
    req = request_from_environ(environ_for("/x"), None)
    with pytest.raises(BridgeError, match="outside"):
        redirected_request(req, "/wsgi/env")


def test_no_content_has_no_length(app: CGIBridge) -> None:
    resp = call(app, "/no-content")
    assert resp.status == "204 No Content"
    assert "content-length" not in resp.headers and resp.body == b""


def test_head_keeps_the_scripts_content_length(app: CGIBridge) -> None:
    resp = call(app, "/fake-trace", "HEAD")
    assert resp.headers["content-length"] == "999" and resp.body == b""


def test_valid_response_then_exit_1_is_served(
    app: CGIBridge, caplog: pytest.LogCaptureFixture
) -> None:
    resp = call(app, "/exit-1-after-response")
    assert resp.json() == {"ok": True}
    assert "exited 1 after a valid response" in caplog.text


def test_stream_that_runs_past_the_deadline_is_cut() -> None:
    app = make_cgi_app(settings(timeout_s=0.5))
    result: Any = app(environ_for("/stream-forever"), lambda s, h, e=None: None)
    chunks = iter(result)
    assert next(chunks) == b"first\n"
    with pytest.raises(CGITimeout):
        next(chunks)
    result.close()


def test_a_stalled_body_is_a_408_at_the_script_deadline_and_closes() -> None:
    # The client announced 10 bytes, sent 3 and stopped: the script is reading
    # stdin, and the read from the client gives up at the script's deadline.
    ours, client = socket.socketpair()
    closed: list[bool] = []
    with ours, client:
        client.sendall(b"abc")
        env = {
            "wsgi.input": ours.makefile("rb"),
            "gunicorn.socket": ours,
            "gateway.close_connection": lambda: closed.append(True),
            "CONTENT_LENGTH": "10",
        }
        # The client never sends the rest nor leaves: without the deadline this hangs.
        resp = call(make_cgi_app(settings(timeout_s=0.5)), "/read-to-eof", "POST", env=env)
        assert ours.gettimeout() is None  # the socket is the server's again
    assert_error(resp, 408, "did not arrive in time")
    assert closed == [True]


def test_a_header_too_long_for_one_environment_string_is_a_431() -> None:
    # One header repeated: the server joins the copies into one HTTP_* value.
    huge = ",".join(["x" * 8000] * 20)
    resp = call(make_cgi_app(settings()), "/env", HTTP_X_REPEATED=huge)
    assert_error(resp, 431, "HTTP_X_REPEATED")


@pytest.mark.parametrize("host", ["a:\u00b2", "a:\u0661\u0662"])
def test_a_host_port_in_unicode_digits_is_not_a_port(host: str) -> None:
    # str.isdigit() is true for both; int() raised on "²" (a 500) and read "١٢" as 12.
    req = request_from_environ(environ_for("/env", HTTP_HOST=host, SERVER_PORT="8000"), None)
    assert req.server_port == 8000
