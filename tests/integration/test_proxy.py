"""nginx as the lab's edge: forwarded headers, streaming, upgrades, its own errors, its log.

What the app sees is read back from `/env` in every mode (CGI meta-variables,
the WSGI environ, the ASGI scope) and reduced to one `AppView`, so each check
is written once. nginx's 502 and 504 need a broken gateway: test_faults.py.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from gateway.servers.registry import Wire, listens_on_unix, wire
from lab.settings import LabSettings
from tests.support.contract import json_error
from tests.support.lab import Lab, lab_status, run_lab

# Every server behind each mode: fcgiwrap and the uwsgi server get their
# forwarded headers from their own nginx files (pass_fastcgi.conf, pass_uwsgi.conf).
pytestmark = pytest.mark.every_server(targets=("native",))

ATTACKER = "203.0.113.7"  # TEST-NET-3 (RFC 5737): never a real client here


@dataclass(frozen=True)
class AppView:
    """What the app believes about a request, whichever protocol delivered it."""

    client: str  # REMOTE_ADDR / scope["client"][0]
    scheme: str  # REQUEST_SCHEME (CGI) / wsgi.url_scheme / scope["scheme"]
    mount: str  # SCRIPT_NAME / root_path
    path: str  # PATH_INFO / path after root_path
    host: str  # the Host the app builds URLs with
    headers: dict[str, str]  # request headers, lower-case names

    @classmethod
    def from_env(cls, body: dict[str, Any]) -> AppView:
        v = body["variables"]
        if body["mode"] == "asgi":
            headers = {name.lower(): value for name, value in v["headers"]}
            root = v["root_path"]
            return cls(
                client=v["client"][0],
                scheme=v["scheme"],
                mount=root,
                path=v["path"][len(root) :],
                host=headers.get("host", ""),
                headers=headers,
            )
        headers = {
            k[5:].lower().replace("_", "-"): str(val)
            for k, val in v.items()
            if k.startswith("HTTP_")
        }
        return cls(
            client=v["REMOTE_ADDR"],
            scheme=v.get("wsgi.url_scheme") or v["REQUEST_SCHEME"],
            mount=v["SCRIPT_NAME"],
            path=v["PATH_INFO"],
            host=v["HTTP_HOST"],
            headers=headers,
        )


ROUTES = [
    pytest.param(True, id="mounted"),  # /{mode}/env
    pytest.param(False, id="active"),  # /env with X-Lab-Mode
]


def app_view(lab: Lab, mode: str, mounted: bool, headers: dict[str, str] | None = None) -> AppView:
    path, extra = (f"/{mode}/env", {}) if mounted else ("/env", {"X-Lab-Mode": mode})
    r = lab.get(path, headers={**(headers or {}), **extra})
    assert r.status_code == 200, r.text
    return AppView.from_env(r.json())


def nginx_forwarded(over: Wire, honest: AppView, mode: str, mounted: bool) -> dict[str, str]:
    """The X-Forwarded-* headers nginx sends the app over each wire, with its values.

    Over HTTP (proxy.conf) and uwsgi (pass_uwsgi.conf) nginx states the client,
    scheme, host and mount point in them. Over FastCGI nginx is the CGI server
    itself: it states the client in REMOTE_ADDR and friends (pass_fastcgi.conf),
    and no X-Forwarded-* goes to the app at all.
    """
    if over == "fastcgi":
        return {}
    sent = {
        "x-forwarded-for": honest.client,
        "x-forwarded-proto": "http",
        "x-forwarded-host": honest.host,
    }
    return sent | ({"x-forwarded-prefix": f"/{mode}"} if mounted else {})


class TestForwardedHeaders:
    SPOOFED = {
        "X-Forwarded-For": ATTACKER,
        "Forwarded": f'for={ATTACKER};proto=https;host="evil.example"',
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Prefix": "/evil",
        "X-Real-IP": ATTACKER,
        "X-Forwarded-Ssl": "on",
        "X-Forwarded-Protocol": "ssl",
    }

    @pytest.mark.parametrize("mounted", ROUTES)
    def test_spoofed_forwarded_headers_change_nothing(
        self, lab: Lab, mode: str, server: str, mounted: bool
    ) -> None:
        honest = app_view(lab, mode, mounted)
        spoofed = app_view(lab, mode, mounted, self.SPOOFED)
        # Client address, scheme, mount point, path and host as without the headers.
        assert (spoofed.client, spoofed.scheme, spoofed.mount, spoofed.path, spoofed.host) == (
            honest.client,
            "http",
            f"/{mode}" if mounted else "",
            "/env",
            honest.host,
        )
        assert ATTACKER not in json.dumps(spoofed.headers)
        # The other "who/how is the client" headers do not reach the app at all.
        for name in ("forwarded", "x-real-ip", "x-forwarded-ssl", "x-forwarded-protocol"):
            assert name not in spoofed.headers, name
        # The X-Forwarded-* the app sees are nginx's own values, overwritten
        # rather than appended to, and only those nginx sends over this wire.
        forwarded = {n: v for n, v in spoofed.headers.items() if n.startswith("x-forwarded-")}
        assert forwarded == nginx_forwarded(wire(mode, server), honest, mode, mounted)

    @pytest.mark.parametrize("mounted", ROUTES)
    def test_proxy_header_never_reaches_the_app(self, lab: Lab, mode: str, mounted: bool) -> None:
        # httpoxy: "Proxy:" would become HTTP_PROXY, which HTTP client libraries obey.
        view = app_view(lab, mode, mounted, {"Proxy": f"http://{ATTACKER}:3128"})
        assert "proxy" not in view.headers
        assert ATTACKER not in json.dumps(view.headers)

    def test_header_names_with_underscores_are_dropped(self, lab: Lab, mode: str) -> None:
        # X-Demo_Note and X-Demo-Note would both be HTTP_X_DEMO_NOTE in CGI and WSGI.
        view = app_view(
            lab,
            mode,
            True,
            {"X-Demo-Note": "hyphen", "X-Demo_Note": "underscore", "X_Forwarded_For": ATTACKER},
        )
        assert view.headers["x-demo-note"] == "hyphen"
        assert ATTACKER not in json.dumps(view.headers) and view.client != ATTACKER

    def test_client_request_id_is_replaced_in_the_app_too(self, lab: Lab, mode: str) -> None:
        view = app_view(lab, mode, True, {"X-Request-Id": "client-made-this-up"})
        assert re.fullmatch(r"[0-9a-f]{32}", view.headers["x-request-id"])


# -- streaming and upgrades ---------------------------------------------------------------


def line_arrivals(url: str, headers: dict[str, str] | None = None) -> list[float]:
    """Seconds after the request at which each non-empty line of the body arrived."""
    t0 = time.monotonic()
    arrivals = []
    with requests.get(url, headers=headers, stream=True, timeout=30) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines():
            if line:
                arrivals.append(time.monotonic() - t0)
    return arrivals


def test_stream_on_the_active_route_arrives_line_by_line(lab: Lab, mode: str) -> None:
    arrivals = line_arrivals(
        f"{lab.url}/stream?chunks=4&interval_ms=300", headers={"X-Lab-Mode": mode}
    )
    assert len(arrivals) == 4
    # Streamed, not buffered: the last line is written 3 intervals after the
    # first, so the first cannot have waited for it.
    assert arrivals[-1] - arrivals[0] > 0.6


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        pytest.param("/asgi/events", {}, id="mounted"),
        pytest.param("/events", {"X-Lab-Mode": "asgi"}, id="active-header"),
        pytest.param("/events", {"Cookie": "lab_mode=asgi"}, id="active-cookie"),
    ],
)
def test_events_arrive_one_by_one(lab: Lab, path: str, headers: dict[str, str]) -> None:
    # Server-sent events exist only in ASGI mode (CONTRACT.md); CGI/WSGI say 501.
    arrivals = line_arrivals(f"{lab.url}{path}?count=4&interval_ms=300", headers)
    assert len(arrivals) >= 4
    assert arrivals[-1] - arrivals[0] > 0.6


@pytest.mark.parametrize(
    "route",
    [
        pytest.param({"Cookie": "lab_mode={mode}"}, id="cookie"),  # what a browser can do
        pytest.param({"X-Lab-Mode": "{mode}"}, id="header"),
    ],
)
def test_websocket_through_the_active_route(lab: Lab, mode: str, route: dict[str, str]) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    headers = {k: v.format(mode=mode) for k, v in route.items()}
    ws_url = lab.url.replace("http://", "ws://") + "/ws"
    if mode != "asgi":
        with pytest.raises(InvalidStatus) as caught:
            connect(ws_url, additional_headers=headers, proxy=None, open_timeout=10)
        assert caught.value.response.status_code == 501
        return
    with connect(ws_url, additional_headers=headers, proxy=None, open_timeout=10) as ws:
        ws.send("through nginx")
        assert ws.recv(timeout=10) == "through nginx"


# -- nginx's own error pages ----------------------------------------------------------------


def exchange(lab: Lab, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to nginx; (status, headers with lower-case names, body) of the answer."""
    url = urlsplit(lab.url)
    with socket.create_connection((url.hostname, url.port or 80), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"closed without a full answer: {data!r}"
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, value in (line.split(":", 1) for line in lines[1:])
        )
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split()[1]), headers, body[:length]


def body_limit() -> int:
    done = run_lab("status", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["limits"]["client_max_body_bytes"])


BIG = "a" * (17 * 1024)  # over large_client_header_buffers (16 KiB per line)
HOST = "Host: lab"
# (request line, header lines, nginx's status); every request ends "Connection: close".
ERROR_CASES = [
    pytest.param("GET / HTTP/1.1", [HOST, "X-Lab-Mode: bogus"], 400, id="400-bad-x-lab-mode"),
    pytest.param("GARBAGE", [], 400, id="400-malformed-request-line"),
    pytest.param("GET / HTTP/1.1", [], 400, id="400-http11-without-host"),
    pytest.param("GET / HTTP/1.1", [HOST, f"X-Big: {BIG}"], 400, id="400-header-too-large"),
    pytest.param("GET /lab/nope.txt HTTP/1.1", [HOST], 404, id="404-nginx-own"),
    pytest.param(
        "POST /lab/index.html HTTP/1.1", [HOST, "Content-Length: 0"], 405, id="405-post-to-a-file"
    ),
    pytest.param(
        "POST /wsgi/upload HTTP/1.1",
        [HOST, "Content-Length: {over}"],
        413,
        id="413-body-too-large",
    ),
    pytest.param(f"GET /wsgi/env?{BIG} HTTP/1.1", [HOST], 414, id="414-uri-over-16k"),
    pytest.param(
        "GET /lab/index.html HTTP/1.1", [HOST, "Range: bytes=99999999-"], 416, id="416-range"
    ),
    pytest.param(
        "GET /wsgi/ HTTP/1.1", [HOST, "Transfer-Encoding: gzip"], 501, id="501-transfer-encoding"
    ),
    pytest.param("GET / HTTP/2.0", [HOST], 505, id="505-http-version"),
]


@pytest.mark.parametrize(("request_line", "header_lines", "status"), ERROR_CASES)
def test_nginx_error_pages_are_json(
    lab: Lab, request_line: str, header_lines: list[str], status: int
) -> None:
    lines = [request_line, *header_lines, "Connection: close", "", ""]
    head = "\r\n".join(lines)
    if "{over}" in head:
        head = head.replace("{over}", str(body_limit() + 1))
    got, headers, body = exchange(lab, head.encode("latin-1"))
    assert got == status, body
    assert json_error(status, headers.get("content-type", ""), body) is not None, body


# -- the access log -------------------------------------------------------------------------


def access_log_entry(request_id: str, deadline_s: float = 10.0) -> dict[str, Any]:
    """The JSON access-log line of one request, read from `lab logs` (either target).

    The native target prints the log file; the docker target the containers'
    output, where each line has a "nginx-1  | " prefix.
    """
    end = time.monotonic() + deadline_s
    while True:
        logs = run_lab("logs", timeout=120)
        for line in (logs.stdout + logs.stderr).splitlines():
            if f'"request_id":"{request_id}"' in line:
                return dict(json.loads(line[line.index("{") :]))
        if time.monotonic() > end:
            pytest.fail(f"no access-log line with request id {request_id} in `lab logs`")
        time.sleep(0.5)


@pytest.mark.parametrize("mounted", ROUTES)
def test_access_log_line_says_who_served_it(lab: Lab, mode: str, mounted: bool) -> None:
    path, headers = (f"/{mode}/", {}) if mounted else ("/", {"X-Lab-Mode": mode})
    r = lab.get(path, headers=headers)
    assert r.status_code == 200
    entry = access_log_entry(r.headers["X-Request-Id"])
    assert entry["mode"] == mode
    assert entry["status"] == 200 and entry["upstream_status"] == "200"
    address = entry["upstream_addr"]
    server = lab_status()["servers"][mode]
    if lab.target == "native" and listens_on_unix(mode, server):
        # Natively nginx reaches the gateway on its unix socket (lab.nginx.render.native_socket).
        run = LabSettings.from_env().state_dir / "run"
        assert re.fullmatch(rf"unix:{re.escape(str(run))}/gateway-\d+\.sock", address), address
    else:
        assert re.fullmatch(r"[^\s,]+:\d+", address), address
    assert isinstance(entry["request_time"], int | float) and entry["request_time"] >= 0
    assert float(entry["upstream_response_time"]) >= 0
    assert entry["request"].startswith(f"GET {path} ")
