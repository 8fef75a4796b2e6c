"""lab/control.py: the server picker's endpoint, in process, and its unix-socket process.

The WSGI app is driven with wsgiref's own environ defaults; the swap is a
recording function, so each test sees exactly what the endpoint asked for.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import status_line
from gateway.servers.registry import SERVERS
from lab.control import (
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
from lab.routing import MODES, RenderError
from lab.settings import Limits
from lab.targets.control_process import (
    HEALTH_PATH,
    UnixHTTPConnection,
    answers,
    control_command,
    prepare_dir,
)


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


def test_nginx_proxies_the_api_to_the_control_socket_on_every_target(tmp_path: Path) -> None:
    native = render.target_values("native", limits=Limits(), port=8280, state_dir=tmp_path)
    socket_path = tmp_path / "control-native" / "control.sock"
    assert native["control_pass"].endswith(f"proxy_pass http://unix:{socket_path}:")
    compose = render.target_values("compose", limits=Limits())
    assert compose["control_pass"].endswith("proxy_pass http://unix:/run/lab-control/control.sock:")
    # No network address anywhere: nothing but nginx reaches the process.
    for values in (native, compose):
        assert "127.0.0.1" not in values["control_pass"]
        assert "include proxy.conf;" in values["control_pass"]


def test_one_control_directory_per_target(tmp_path: Path) -> None:
    sockets = {render.control_socket(tmp_path, t) for t in ("native", "docker", "swarm")}
    assert len({p.parent for p in sockets}) == 3
    with pytest.raises(RenderError, match="too long"):
        render.control_socket(tmp_path / ("x" * 120), "docker")


def test_a_dead_control_socket_is_a_json_503_that_names_lab_up() -> None:
    """nginx's 502 for the control location becomes a 503 naming `lab up` and `make server`;
    every other location keeps its 502."""
    conf = (render.TEMPLATE_DIR / "server.conf").read_text()
    location = conf[conf.index("location /lab/api/ {") :]
    assert "set $lab_control on;" in location[: location.index("}")]
    page = conf[conf.index("location = /_error/502 {") :]
    page = page[: page.index("\n    }\n")]
    branch = page[page.index("if ($lab_control) {") :]
    body = json.loads(branch.split("return 503 '", 1)[1].split("';", 1)[0])
    assert body["status"] == 503 and "lab up" in body["error"] and "make server" in body["error"]
    assert "return 502 '" in page[page.index("}") :]


def test_the_nginx_image_user_is_the_group_given_the_socket() -> None:
    """nginx/Dockerfile runs as www-data: uid and gid 33 in Debian's base-passwd."""
    dockerfile = (render.ROOT / "nginx" / "Dockerfile").read_text()
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users == ["www-data"]
    assert render.NGINX_CONTAINER_GID == 33


def test_the_directory_admits_the_group_only(tmp_path: Path) -> None:
    """With a group: 0710 and 0660 (nginx's user reaches the socket, lists nothing, others
    get nothing); without: the lab's user alone."""
    mine = tmp_path / "native"
    assert prepare_dir(mine, None) == (0o700, 0o600)
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700
    shared = tmp_path / "docker"
    gid = os.getgid()  # a group this user may always give
    assert prepare_dir(shared, gid) == (0o710, 0o660)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o710 and shared.stat().st_gid == gid


def test_the_process_serves_the_app_on_its_unix_socket(tmp_path: Path) -> None:
    """``python -m lab.control SOCKET GROUP``: HTTP on the socket, modes as promised, and
    the socket gone again after SIGTERM."""
    socket_path = tmp_path / "control-docker" / "control.sock"
    proc = subprocess.Popen(
        [*control_command(socket_path, os.getgid())],
        cwd=render.ROOT,
        env=os.environ | {"LAB_STATE_DIR": str(tmp_path), "LAB_TARGET": "native"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not answers(socket_path):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
            time.sleep(0.05)
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o660
        assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o710
        conn = UnixHTTPConnection(socket_path, 5.0)
        conn.request("GET", PATH)
        got = conn.getresponse()
        # The app's listing, as JSON, through wsgiref's HTTP on the socket.
        assert got.status == 200 and got.getheader("Content-Type") == "application/json"
        assert json.loads(got.read())["choices"] == {m: list(SERVERS[m]) for m in MODES}
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert not socket_path.exists()
    assert not answers(socket_path)


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


def test_a_bug_is_a_json_500_with_the_traceback_in_the_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def in_force() -> dict[str, str]:
        raise KeyError("servers")

    app = ControlApp(in_force, Swaps(Lab().swap))
    status, headers, body = call(app)
    assert (status, body["status"], headers["Content-Type"]) == (500, 500, "application/json")
    assert "KeyError" in body["error"] and "Traceback" in capsys.readouterr().err


def test_status_lines_are_the_gateways_own() -> None:
    lines: list[str] = []
    app, _ = make(Lab())
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": PATH,
        "CONTENT_LENGTH": "5000",
        "CONTENT_TYPE": "application/json",
        "wsgi.input": io.BytesIO(b" " * 5000),
    }
    app(environ, lambda status, headers: lines.append(status))  # type: ignore[arg-type,func-returns-value]
    assert lines == [status_line(413)]
