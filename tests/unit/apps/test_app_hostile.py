"""Hostile input the app itself must answer, in-process, in all three forms.

The same request goes to the CGI script (a real subprocess), the WSGI callable
and the ASGI callable: a multipart form of 60,000 empty parts, a part in a
charset Python knows but cannot decode with, a stream longer than the server
would let it run, a fragment or an absolute-form target, a WebSocket handshake
on the wrong path. The integration suite (tests/integration/test_hostile_app.py)
sends the same through nginx and straight at each gateway.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from asgiref import testing

from apps.breakfast import asgi_app, kitchen, wsgi_app
from gateway.config import Settings
from gateway.servers import gunicorn as gunicorn_server

SCRIPT = Path(__file__).resolve().parents[3] / "apps" / "breakfast" / "cgi_app.py"
TIMEOUT = 20  # seconds for one step; a CGI run is a Python start-up and a few ms
ApplicationCommunicator: Any = testing.ApplicationCommunicator
MODES = ("cgi", "wsgi", "asgi")


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> str:
        data = json.loads(self.body)
        assert data["status"] == self.status
        return str(data["error"])


# -- one request, three apps ------------------------------------------------------------


def cgi(method: str, path: str, query: str = "", body: bytes = b"", ctype: str = "") -> Answer:
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    if method == "POST":
        env |= {"CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": ctype}
    done = subprocess.run(
        [sys.executable, "-IS", str(SCRIPT)],
        env=env,
        input=body,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    # A crashed script is what the gateway turns into a 502: never acceptable here.
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
    head, _, out = done.stdout.partition(b"\n\n")
    headers = {}
    for line in head.decode("latin-1").split("\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(headers.pop("status").split()[0]), headers, out)


def wsgi(method: str, path: str, query: str = "", body: bytes = b"", ctype: str = "") -> Answer:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(body),
    }
    if method == "POST":
        environ |= {"CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": ctype}
    seen: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append((status, headers))
        return lambda data: None

    out = b"".join(wsgi_app.application(environ, start_response))
    status, headers = seen[-1]
    return Answer(int(status.split()[0]), {k.lower(): v for k, v in headers}, out)


def asgi_scope(method: str, path: str, query: str = "", ctype: str = "") -> dict[str, Any]:
    headers = [(b"host", b"testserver")]
    if ctype:
        headers.append((b"content-type", ctype.encode("latin-1")))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": headers,
    }


async def asgi_exchange(scope: dict[str, Any], body: bytes = b"") -> Answer:
    communicator = ApplicationCommunicator(asgi_app.application, scope)
    await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await communicator.receive_output(TIMEOUT)
    out = b""
    while True:
        message = await communicator.receive_output(TIMEOUT)
        out += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await communicator.wait(TIMEOUT)
    headers = {bytes(k).decode().lower(): bytes(v).decode() for k, v in start["headers"]}
    return Answer(start["status"], headers, out)


def asgi(method: str, path: str, query: str = "", body: bytes = b"", ctype: str = "") -> Answer:
    return asyncio.run(asgi_exchange(asgi_scope(method, path, query, ctype), body))


APPS: dict[str, Callable[..., Answer]] = {"cgi": cgi, "wsgi": wsgi, "asgi": asgi}


def multipart(parts: list[str], boundary: str = "B") -> tuple[str, bytes]:
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts) + f"--{boundary}--\r\n"
    return f"multipart/form-data; boundary={boundary}", body.encode("latin-1")


def field(name: str, value: str, headers: str = "") -> str:
    return f'Content-Disposition: form-data; name="{name}"\r\n{headers}\r\n{value}'


GOOD_FIELDS = [field("first_name", "Ada"), field("last_name", "L"), field("email", "a@b.org")]


# -- item: a multipart form with a huge number of parts -----------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_sixty_thousand_empty_parts_are_refused_by_count(mode: str) -> None:
    ctype, body = multipart([""] * 60_000)
    assert len(body) < kitchen.FORM_MAX_BYTES
    answer = APPS[mode]("POST", "/form", body=body, ctype=ctype)
    assert answer.status == 400
    assert f"at most {kitchen.FORM_MAX_FIELDS}" in answer.error()


@pytest.mark.parametrize("extra, status", [(97, 200), (98, 400)])
def test_the_part_cap_counts_every_part(extra: int, status: int) -> None:
    # 3 fields + 97 unnamed parts = 100 parts: the most a form may have.
    ctype, body = multipart(GOOD_FIELDS + [field("x", "")] * extra)
    assert wsgi("POST", "/form", body=body, ctype=ctype).status == status


def test_the_urlencoded_branch_has_the_same_cap() -> None:
    body = b"&".join([b"first_name=Ada&last_name=L&email=a%40b.org"] + [b"x="] * 98)
    answer = wsgi("POST", "/form", body=body, ctype="application/x-www-form-urlencoded")
    assert answer.status == 400 and f"at most {kitchen.FORM_MAX_FIELDS}" in answer.error()


def test_asgi_parses_the_form_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    parse = kitchen.parse_form

    def recording(content_type: str, body: bytes) -> dict[str, list[str]]:
        threads.append(threading.get_ident())
        return parse(content_type, body)

    async def exchange() -> tuple[Answer, int]:
        ctype, body = multipart(GOOD_FIELDS)
        answer = await asgi_exchange(asgi_scope("POST", "/form", ctype=ctype), body)
        return answer, threading.get_ident()  # the loop's thread

    monkeypatch.setattr(kitchen, "parse_form", recording)
    answer, loop_thread = asyncio.run(exchange())
    assert answer.status == 200
    assert threads and threads[0] != loop_thread


# -- item: a part in a charset Python knows but cannot decode with ----------------------

UNDECODABLE = ["idna", "punycode", "undefined", "base64", "rot13", "zlib", "hex", "no-such"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("charset", UNDECODABLE)
def test_an_undecodable_charset_is_a_400_naming_the_part(mode: str, charset: str) -> None:
    ctype_header = f"Content-Type: text/plain; charset={charset}\r\n"
    parts = [GOOD_FIELDS[0], field("last_name", "xn--\xff", ctype_header), GOOD_FIELDS[2]]
    ctype, body = multipart(parts)
    answer = APPS[mode]("POST", "/form", body=body, ctype=ctype)
    assert answer.status == 400
    assert "part 2 ('last_name')" in answer.error() and charset in answer.error()


@pytest.mark.parametrize(
    "part",
    [
        pytest.param("Content-Disposition: form-data; name*=idna''xn--%ff\r\n\r\nx", id="name"),
        pytest.param(
            "Content-Disposition: form-data; name=email\r\n"
            "Content-Type: text/plain; charset*=undefined''x\r\n\r\nx",
            id="charset",
        ),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_an_undecodable_rfc_2231_parameter_is_a_400(mode: str, part: str) -> None:
    ctype, body = multipart(GOOD_FIELDS[:2] + [part])
    answer = APPS[mode]("POST", "/form", body=body, ctype=ctype)
    assert answer.status == 400 and "charset" in answer.error()


# -- item: streams the server could not finish --------------------------------------------


def test_the_stream_limit_stays_inside_the_request_deadline() -> None:
    # The CGI runner's deadline and gunicorn's sync timeout both derive from
    # timeout_s; a stream the app accepts must end before either.
    deadline_ms = Settings(mode="wsgi").timeout_s * 1000
    assert kitchen.STREAM_MAX_MS < deadline_ms


@pytest.mark.parametrize("mode", ["cgi", "wsgi"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_stream_past_the_limit_is_refused_up_front(mode: str, method: str) -> None:
    answer = APPS[mode](method, "/stream", query="chunks=1000&interval_ms=10000")
    assert answer.status == 400
    if method == "GET":
        assert str(kitchen.STREAM_MAX_MS) in answer.error()


@pytest.mark.parametrize("mode", ["cgi", "wsgi"])
def test_a_stream_at_the_limit_is_accepted(mode: str) -> None:
    # HEAD: the status a GET would get, without waiting out the stream.
    chunks = kitchen.STREAM_MAX_MS // 10_000
    answer = APPS[mode]("HEAD", "/stream", query=f"chunks={chunks}&interval_ms=10000")
    assert answer.status == 200


def test_asgi_streams_are_not_limited() -> None:
    # An awaiting coroutine holds no worker: the whole documented range is served.
    assert asgi("HEAD", "/stream", query="chunks=1000&interval_ms=10000").status == 200


# -- item: fragments and absolute-form targets, ASGI reached directly ---------------------


@pytest.mark.parametrize(
    "path, query, expected",
    [
        pytest.param("/coffee#top", "", 100, id="fragment-in-path"),
        pytest.param("/coffee", "ms=2#frag?ms=3", 2, id="fragment-in-query"),
        pytest.param("/coffee#top", "ms=3", 100, id="query-inside-the-fragment"),
        pytest.param("http://h.test:81/coffee", "ms=1", 1, id="absolute-form"),
        pytest.param("HTTPS://h.test/coffee", "ms=4", 4, id="absolute-form-upper-case"),
    ],
)
def test_asgi_routes_as_the_other_modes_do(path: str, query: str, expected: int) -> None:
    answer = asgi("GET", path, query=query)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["ms"] == expected


# -- item: the WebSocket limits and handshakes ----------------------------------------------


def test_the_asgi_server_gets_the_apps_websocket_limit() -> None:
    options = gunicorn_server.gunicorn_options(Settings(mode="asgi"))
    assert options["websocket_max_message_size"] == kitchen.WS_MAX_MESSAGE_BYTES
    assert kitchen.WS_MAX_MESSAGE_BYTES < 16 * 1024 * 1024  # gunicorn's default


def test_the_asgi_worker_names_every_status_as_python_does() -> None:
    from gunicorn.asgi import protocol

    from gateway.servers.error_pages import use_lab_reason_phrases

    use_lab_reason_phrases()
    assert protocol._REASON_PHRASES[426] == "Upgrade Required"
    assert protocol._REASON_PHRASES[413] == kitchen.status_line(413).partition(" ")[2]


async def handshake(path: str, extensions: dict[str, Any]) -> list[dict[str, Any]]:
    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "path": path, "root_path": ""}
    scope |= {"query_string": b"", "headers": [], "subprotocols": [], "extensions": extensions}
    communicator = ApplicationCommunicator(asgi_app.application, scope)
    await communicator.send_input({"type": "websocket.connect"})
    replies = [await communicator.receive_output(TIMEOUT)]
    if replies[0]["type"] == "websocket.http.response.start":
        replies.append(await communicator.receive_output(TIMEOUT))
    await communicator.wait(TIMEOUT)
    return replies


@pytest.mark.parametrize("path, message", [("/chat", "no such path"), ("/coffee", "it is /ws")])
def test_a_handshake_elsewhere_gets_a_json_404_where_the_server_allows(
    path: str, message: str
) -> None:
    start, body = asyncio.run(handshake(path, {"websocket.http.response": {}}))
    assert start["type"] == "websocket.http.response.start" and start["status"] == 404
    assert (b"content-type", b"application/json") in start["headers"]
    data = json.loads(body["body"])
    assert data["status"] == 404 and message in data["error"]


def test_a_handshake_elsewhere_is_closed_where_the_server_has_no_denial_response() -> None:
    assert asyncio.run(handshake("/chat", {})) == [{"type": "websocket.close", "code": 1008}]


def test_a_denial_response_is_one_framed_http_response() -> None:
    import h11

    from gateway.servers.websocket_denial import _response_bytes

    start = {"status": 404, "headers": [(b"content-type", b"application/json")]}
    wire = _response_bytes(start, b'{"error": "x", "status": 404}')
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/x", headers=[("Host", "t")]))
    client.receive_data(wire)
    response, data = client.next_event(), client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 404
    assert response.reason == b"Not Found"
    assert (b"connection", b"close") in list(response.headers)
    assert isinstance(data, h11.Data) and json.loads(data.data)["status"] == 404
    assert isinstance(client.next_event(), h11.EndOfMessage)


def test_a_denial_response_status_line_reads_as_every_other() -> None:
    from gateway.servers.websocket_denial import _response_bytes

    # 499 has no standard phrase: the lab's class name (gateway.errors.reason).
    wire = _response_bytes({"status": 499, "headers": []}, b"")
    assert wire.startswith(b"HTTP/1.1 499 Client Error\r\n")


def test_a_denial_response_header_with_a_line_break_is_refused() -> None:
    from gunicorn.http.errors import InvalidResponseHeader

    from gateway.servers.websocket_denial import _response_bytes

    with pytest.raises(InvalidResponseHeader):
        _response_bytes({"status": 404, "headers": [(b"x-a", b"1\r\nx-b: 2")]}, b"")
