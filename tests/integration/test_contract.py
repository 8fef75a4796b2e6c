"""Every endpoint of the demo app, through nginx, in every mode under every server.

Written once and run for each (mode, server) pair (the `mode` fixture puts the
pair's server behind the mode with `lab server`; CONTRACT.md, "Servers behind
each route"): where CONTRACT.md says the modes differ (/breakfast timing, /ws
and /events), the expectation branches on the mode. The servers differ in none
of it: that is the contract.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time

import pytest
import requests

from tests.support.contract import check_breakfast_steps, json_error
from tests.support.lab import Lab

pytestmark = pytest.mark.every_server

TRACE = ("X-Gateway-Mode", "X-Gateway-Pid", "X-Gateway-Worker", "X-Gateway-Start", "X-Request-Id")


def assert_json_error(r: requests.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    body = json_error(status, r.headers.get("Content-Type", ""), r.content)
    assert body is not None, r.text
    return body


class TestTraceHeaders:
    def test_every_app_response_is_traced(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/")
        assert r.status_code == 200
        for name in (*TRACE, "X-Gateway-End"):
            assert name in r.headers, name
        assert r.headers["X-Gateway-Mode"] == mode
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"])  # nginx's $request_id
        start, end = float(r.headers["X-Gateway-Start"]), float(r.headers["X-Gateway-End"])
        assert start <= end and abs(start - time.time()) < 60

    def test_the_server_names_itself(self, lab: Lab, mode: str, server: str) -> None:
        for path in ("/", "/coffee?ms=nope", "/no/such/page"):
            r = lab.get(f"/{mode}{path}")
            assert r.headers["X-Gateway-Server"] == server, path
        r = lab.get("/", headers={"X-Lab-Mode": mode})  # the active-mode route too
        assert (r.headers["X-Gateway-Mode"], r.headers["X-Gateway-Server"]) == (mode, server)

    def test_client_request_id_is_replaced_at_the_edge(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/", headers={"X-Request-Id": "client-made-this-up"})
        assert r.headers["X-Request-Id"] != "client-made-this-up"

    def test_errors_are_traced_too(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/coffee?ms=nope")
        assert r.headers["X-Gateway-Mode"] == mode


class TestRoot:
    def test_who_served_it(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/")
        body = r.json()
        assert set(body) >= {"mode", "pid", "worker", "requests_served", "server"}
        assert body["mode"] == mode
        assert str(body["pid"]) == r.headers["X-Gateway-Pid"]
        assert str(body["worker"]) == r.headers["X-Gateway-Worker"]
        assert body["requests_served"] >= 1

    def test_healthz_is_the_gateways_own(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/healthz")
        assert r.status_code == 200 and r.json()["mode"] == mode

    def test_unknown_path_is_404_json(self, lab: Lab, mode: str) -> None:
        assert_json_error(lab.get(f"/{mode}/no/such/page"), 404)


class TestEnv:
    def test_mount_point_as_the_protocol_defines_it(self, lab: Lab, mode: str) -> None:
        body = lab.get(f"/{mode}/env?x=1").json()
        assert body["mode"] == mode
        v = body["variables"]
        if mode == "asgi":
            # ASGI: root_path is the mount point and path still includes it.
            assert (v["root_path"], v["path"]) == ("/asgi", "/asgi/env")
            assert v["query_string"] == "x=1"
        else:
            # CGI (RFC 3875 §4.1.13, §4.1.5) and WSGI (PEP 3333) split it.
            assert (v["SCRIPT_NAME"], v["PATH_INFO"]) == (f"/{mode}", "/env")
            assert v["QUERY_STRING"] == "x=1"

    def test_the_server_address_is_one_the_protocol_allows(self, lab: Lab, mode: str) -> None:
        """Natively nginx reaches each gateway on a unix socket, under Docker on TCP:
        either way the app sees an address its protocol allows."""
        v = lab.get(f"/{mode}/env").json()["variables"]
        if mode == "asgi":
            # ASGI scope ``server``: [host, port], [path, None] for a unix socket, or None.
            server = v["server"]
            assert server is None or (
                isinstance(server, list)
                and len(server) == 2
                and (
                    (isinstance(server[1], int) and server[0])
                    or (server[1] is None and str(server[0]).startswith("/"))
                )
            ), server
        else:
            # RFC 3875 §4.1.14-15 and PEP 3333: SERVER_NAME and SERVER_PORT are
            # the host and port the client addressed (here nginx's).
            assert v["SERVER_NAME"] and str(v["SERVER_PORT"]).isdigit(), v

    def test_active_route_has_no_mount_point(self, lab: Lab, mode: str) -> None:
        v = lab.get("/env", headers={"X-Lab-Mode": mode}).json()["variables"]
        if mode == "asgi":
            assert (v["root_path"], v["path"]) == ("", "/env")
        else:
            assert (v["SCRIPT_NAME"], v["PATH_INFO"]) == ("", "/env")


class TestForm:
    FIELDS = {"first_name": "Ada", "last_name": "<Lovelace>", "email": "ada@example.org"}

    def test_form_page_posts_back_under_the_mount_point(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/form")
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
        for name in self.FIELDS:
            assert f'name="{name}"' in r.text
        assert f'action="/{mode}/form"' in r.text

    def test_urlencoded_thanks_by_escaped_name(self, lab: Lab, mode: str) -> None:
        r = lab.post(f"/{mode}/form", data=self.FIELDS)
        assert r.status_code == 200, r.text
        assert "Ada" in r.text and "&lt;Lovelace&gt;" in r.text and "<Lovelace>" not in r.text

    def test_multipart_thanks_by_name(self, lab: Lab, mode: str) -> None:
        files = {k: (None, v) for k, v in self.FIELDS.items()}
        r = lab.post(f"/{mode}/form", files=files)
        assert r.status_code == 200, r.text
        assert "Ada" in r.text

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            pytest.param({"first_name": ""}, "first_name", id="empty-first-name"),
            pytest.param({"email": "not-an-address"}, "email", id="bad-email"),
            pytest.param({"last_name": None}, "last_name", id="missing-last-name"),
        ],
    )
    def test_bad_field_is_400_naming_it(
        self, lab: Lab, mode: str, change: dict[str, str | None], field: str
    ) -> None:
        data = {k: v for k, v in (self.FIELDS | change).items() if v is not None}
        body = assert_json_error(lab.post(f"/{mode}/form", data=data), 400)
        assert body.get("field") == field or field in str(body["error"])


BAD_NUMBERS = ["abc", "-1", "1.5", "10001", "", "1e3", "0x10"]


class TestKitchen:
    def test_coffee(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/coffee?ms=50")
        assert r.status_code == 200 and r.json()["ms"] == 50
        assert float(r.headers["X-Gateway-End"]) - float(r.headers["X-Gateway-Start"]) >= 0.045

    def test_coffee_default(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/coffee")
        assert r.status_code == 200 and r.json()["ms"] == 100  # the documented default

    def test_omelette(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/omelette?ms=50")
        assert r.status_code == 200 and r.json()["ms"] == 50

    def test_blocking_coffee(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/blocking-coffee?ms=20")
        assert r.status_code == 200 and r.json()["ms"] == 20

    def test_breakfast_overlaps_only_in_asgi(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/breakfast?coffee_ms=1000&omelette_ms=100")
        assert r.status_code == 200
        elapsed = r.json()["elapsed_ms"]
        # One after the other can never beat coffee + omelette (1100 ms); side by
        # side, the omelette's 100 ms of CPU fits inside the 1000 ms wait, even on
        # a machine so busy that CPU work takes ten times its CPU time.
        if mode == "asgi":
            assert elapsed < 1100, "the coffee should brew while the omelette cooks"
        else:
            assert elapsed >= 1095, "one after the other: at least coffee + omelette"

    def test_breakfast_steps_lie_inside_the_request(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/breakfast?coffee_ms=200&omelette_ms=50")
        assert r.status_code == 200
        start, end = float(r.headers["X-Gateway-Start"]), float(r.headers["X-Gateway-End"])
        check_breakfast_steps(mode, r.content, start, end, coffee_ms=200)

    @pytest.mark.parametrize("endpoint", ["coffee", "omelette", "blocking-coffee"])
    @pytest.mark.parametrize("value", BAD_NUMBERS)
    def test_bad_ms_is_400(self, lab: Lab, mode: str, endpoint: str, value: str) -> None:
        assert_json_error(lab.get(f"/{mode}/{endpoint}?ms={value}"), 400)

    @pytest.mark.parametrize(
        "query", ["coffee_ms=x", "omelette_ms=-5", "coffee_ms=20000", "omelette_ms=1.0"]
    )
    def test_bad_breakfast_is_400(self, lab: Lab, mode: str, query: str) -> None:
        assert_json_error(lab.get(f"/{mode}/breakfast?{query}"), 400)


class TestStream:
    def test_first_line_arrives_long_before_the_last(self, lab: Lab, mode: str) -> None:
        t0 = time.monotonic()
        arrivals = []
        with requests.get(
            f"{lab.url}/{mode}/stream?chunks=4&interval_ms=300", stream=True, timeout=30
        ) as r:
            assert r.status_code == 200
            assert "X-Gateway-End" not in r.headers  # streamed: Start only
            for line in r.iter_lines():
                if line:
                    arrivals.append(time.monotonic() - t0)
        assert len(arrivals) == 4
        # Streamed, not buffered: the first line comes about 3 intervals before the last.
        assert arrivals[-1] - arrivals[0] > 0.6

    @pytest.mark.parametrize("query", ["chunks=1001", "chunks=a", "interval_ms=-1"])
    def test_bad_stream_is_400(self, lab: Lab, mode: str, query: str) -> None:
        assert_json_error(lab.get(f"/{mode}/stream?{query}"), 400)


class TestUpload:
    def test_body_read_as_a_stream(self, lab: Lab, mode: str) -> None:
        data = os.urandom(3 * 1024 * 1024 + 7)
        r = lab.post(f"/{mode}/upload", data=data)
        assert r.status_code == 200, r.text
        assert r.json() == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def test_16_mib_is_accepted(self, lab: Lab, mode: str) -> None:
        data = os.urandom(16 * 1024 * 1024)
        r = lab.post(f"/{mode}/upload", data=data, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()

    def test_too_large_is_413_json(self, lab: Lab, mode: str) -> None:
        r = lab.post(f"/{mode}/upload", data=b"x" * (16 * 1024 * 1024 + 1), timeout=120)
        assert_json_error(r, 413)

    def test_empty_body(self, lab: Lab, mode: str) -> None:
        r = lab.post(f"/{mode}/upload", data=b"")
        assert r.json() == {"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}


class TestLongLivedConnections:
    def test_events(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/events?count=3", stream=True)
        if mode != "asgi":
            assert_json_error(r, 501)
            return
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        data = [line for line in r.iter_lines(decode_unicode=True) if line.startswith("data:")]
        assert len(data) == 3
        json.loads(data[0].removeprefix("data:"))

    def test_websocket_echo(self, lab: Lab, mode: str) -> None:
        if mode != "asgi":
            assert_json_error(lab.get(f"/{mode}/ws"), 501)
            return
        from websockets.sync.client import connect

        ws_url = lab.url.replace("http://", "ws://") + f"/{mode}/ws"
        with connect(ws_url, open_timeout=10) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            ws.send(b"\x00\x01")
            assert ws.recv(timeout=10) == b"\x00\x01"
