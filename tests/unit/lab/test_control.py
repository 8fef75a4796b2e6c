"""lab/control.py: the server picker's endpoint, in process (no lab, no sockets).

The WSGI app is driven with wsgiref's own environ defaults; the swap is a
recording function, so each test sees exactly what the endpoint asked for.
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest

from gateway.servers.registry import SERVERS
from lab.control import (
    HEALTH_PATH,
    PATH,
    BadRequest,
    Choice,
    ControlApp,
    Swaps,
    check_origin,
    media_type,
    parse_choice,
)
from lab.errors import LabError
from lab.nginx import render
from lab.nginx.routing import MODES, control_port, gateway_ports, replica_port
from lab.settings import Limits


class Lab:
    """Servers in force and the swaps asked for; ``gate`` holds a swap until set."""

    def __init__(self, fail: str = "") -> None:
        self.servers = {"cgi": "runner", "wsgi": "sync", "asgi": "gunicorn"}
        self.asked: list[tuple[str, str]] = []
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()

    def swap(self, mode: str, server: str) -> None:
        self.asked.append((mode, server))
        self.gate.wait(5)
        if self.fail:
            raise LabError(f"{mode} stays on {self.servers[mode]}: {self.fail}\nmore lines")
        self.servers[mode] = server


def call(
    app: ControlApp,
    method: str = "GET",
    path: str = PATH,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
        "HTTP_HOST": "127.0.0.1:8080",
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key.startswith("CONTENT_") else f"HTTP_{key}"] = value
    got: dict[str, Any] = {}

    def start_response(status: str, hdrs: list[tuple[str, str]]) -> Any:
        got["status"], got["headers"] = int(status.split()[0]), dict(hdrs)
        return lambda data: None

    data = b"".join(app(environ, start_response))
    return got["status"], got["headers"], json.loads(data)


def wait_done(swaps: Swaps) -> dict[str, Any]:
    for _ in range(500):
        if swaps.last is not None and swaps.last["state"] != "swapping":
            return swaps.last
        threading.Event().wait(0.01)
    raise AssertionError("the swap did not finish")


def make(lab: Lab) -> tuple[ControlApp, Swaps]:
    swaps = Swaps(lab.swap)
    return ControlApp(lambda: dict(lab.servers), swaps), swaps


# -- pure parts -------------------------------------------------------------------------


def test_parse_choice_accepts_every_server_of_every_mode() -> None:
    for mode in MODES:
        for server in SERVERS[mode]:
            body = json.dumps({"mode": mode, "server": server}).encode()
            assert parse_choice(body) == Choice(mode, server)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "JSON"),
        (b"\xff", "JSON"),
        (b"[1]", "object"),
        (b'{"mode": "wsgi"}', "exactly"),
        (b'{"mode": "wsgi", "server": "sync", "x": 1}', "exactly"),
        (b'{"mode": "php", "server": "sync"}', "unknown mode"),
        (b'{"mode": ["wsgi"], "server": "sync"}', "unknown mode"),
        (b'{"mode": "wsgi", "server": 3}', "string"),
        (b'{"mode": "wsgi", "server": "uvicorn"}', "unknown server"),
        (b'{"mode": "cgi", "server": "SYNC"}', "unknown server"),
    ],
)
def test_parse_choice_refuses(body: bytes, says: str) -> None:
    with pytest.raises(BadRequest, match=says) as caught:
        parse_choice(body)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        (None, "127.0.0.1:8080", True),
        ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
        ("https://127.0.0.1:8443", "127.0.0.1:8443", True),
        ("http://LOCALHOST:8080", "localhost:8080", True),
        ("http://127.0.0.1:9999", "127.0.0.1:8080", False),
        ("http://evil.example", "127.0.0.1:8080", False),
        ("null", "127.0.0.1:8080", False),
        ("http://127.0.0.1:8080", None, False),
    ],
)
def test_check_origin(origin: str | None, host: str | None, ok: bool) -> None:
    if ok:
        check_origin(origin, host)
    else:
        with pytest.raises(BadRequest) as caught:
            check_origin(origin, host)
        assert caught.value.status == 403


def test_media_type_ignores_parameters_and_case() -> None:
    assert media_type("Application/JSON; charset=utf-8") == "application/json"
    assert media_type("") == ""


def test_the_control_port_meets_no_other_native_port() -> None:
    for lab_port in (8080, 8280):
        others = set(gateway_ports(lab_port).values())
        others |= {lab_port + 4 + i for i in range(3)}  # the gateways' second slots
        others |= {replica_port(lab_port, m, i) for m in MODES for i in range(1, 8)}
        assert control_port(lab_port) not in others | {lab_port}


def test_nginx_proxies_the_api_natively_and_answers_501_under_compose() -> None:
    native = render.target_values("native", limits=Limits(), port=8280, state_dir=render.ROOT)
    assert "proxy_pass http://127.0.0.1:8287" in native["control_pass"]
    compose = render.target_values("compose", limits=Limits())
    assert compose["control_pass"].startswith("return 501 ")
    body = compose["control_pass"].split("'")[1]
    assert json.loads(body)["status"] == 501 and "make server" in json.loads(body)["error"]


# -- the app ----------------------------------------------------------------------------


def test_get_lists_servers_choices_and_no_swap_yet() -> None:
    app, _ = make(Lab())
    status, headers, body = call(app)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert body == {
        "servers": {"cgi": "runner", "wsgi": "sync", "asgi": "gunicorn"},
        "choices": {m: list(SERVERS[m]) for m in MODES},
        "swap": None,
    }
    assert call(app, path=HEALTH_PATH)[0] == 200


def test_post_starts_the_swap_and_reports_how_it_went() -> None:
    lab = Lab()
    lab.gate.clear()
    app, swaps = make(lab)
    status, _, body = call(app, "POST", body=b'{"mode": "wsgi", "server": "gthread"}')
    assert status == 202
    assert body["swap"] == {"mode": "wsgi", "server": "gthread", "was": "sync", "state": "swapping"}
    # A second swap while the first runs: 409, and nothing more is asked of the lab.
    status, _, body = call(app, "POST", body=b'{"mode": "asgi", "server": "uvicorn"}')
    assert status == 409 and body["status"] == 409 and "wsgi" in body["error"]
    lab.gate.set()
    assert wait_done(swaps)["state"] == "done"
    assert lab.asked == [("wsgi", "gthread")]
    assert call(app)[2]["servers"]["wsgi"] == "gthread"


def test_asking_for_the_server_in_force_changes_nothing() -> None:
    lab = Lab()
    app, swaps = make(lab)
    status, _, body = call(app, "POST", body=b'{"mode": "wsgi", "server": "sync"}')
    assert status == 200 and body["swap"] is None and lab.asked == []


def test_a_failed_swap_reports_one_line_and_leaves_the_server() -> None:
    lab = Lab(fail="gthread did not start (address in use)")
    app, swaps = make(lab)
    assert call(app, "POST", body=b'{"mode": "wsgi", "server": "gthread"}')[0] == 202
    done = wait_done(swaps)
    assert done["state"] == "failed"
    assert done["error"] == "wsgi stays on sync: gthread did not start (address in use)"
    assert call(app)[2]["servers"]["wsgi"] == "sync"


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        ("POST", PATH, b'{"mode": "wsgi", "server": "nope"}', {}, 400),
        ("POST", PATH, b"mode=wsgi", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        (
            "POST",
            PATH,
            b'{"mode": "wsgi", "server": "gthread"}',
            {"Content-Type": "text/plain"},
            415,
        ),
        ("POST", PATH, b'{"mode": "wsgi", "server": "gthread"}', {"Origin": "http://evil"}, 403),
        ("POST", PATH, b"{" + b" " * 5000 + b"}", {}, 413),
        ("POST", PATH, b"{}", {"Content-Length": "1e3"}, 400),
        ("PUT", PATH, b'{"mode": "wsgi", "server": "gthread"}', {}, 405),
        ("DELETE", PATH, b"", {}, 405),
        ("GET", "/lab/api/other", b"", {}, 404),
        ("POST", HEALTH_PATH, b"", {}, 404),
    ],
)
def test_bad_requests_are_json_4xx_and_change_nothing(
    method: str, path: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    lab = Lab()
    app, swaps = make(lab)
    got, hdrs, answer = call(app, method, path, body, headers)
    assert (got, answer["status"]) == (status, status) and answer["error"]
    assert hdrs["Content-Type"] == "application/json"
    if status == 405:
        assert hdrs["Allow"] == "GET, POST"
    assert lab.asked == [] and swaps.last is None


def test_a_lab_that_cannot_say_what_runs_is_a_503() -> None:
    def in_force() -> dict[str, str]:
        raise LabError("the lab is not running\ndetails")

    app = ControlApp(in_force, Swaps(Lab().swap))
    status, _, body = call(app)
    assert status == 503 and body == {"error": "the lab is not running", "status": 503}
