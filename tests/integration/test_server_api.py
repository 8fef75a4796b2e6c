"""The dashboard's server picker endpoint, /lab/api/servers (lab/control.py), through nginx.

On every target it swaps servers as `lab server` does (a process `lab up` starts
on the host, behind a unix socket nginx proxies to; under Docker the socket's
directory is mounted into nginx's container); bad input is a 4xx JSON error and
changes nothing. Without that process the endpoint is a JSON 503 naming `lab up`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from gateway.servers.registry import SERVERS, default_server
from tests.support.contract import json_error
from tests.support.lab import MODES, Lab, lab_status, run_lab, stop_control, use_server

API = "/lab/api/servers"
JSON = {"Content-Type": "application/json"}


def serving(lab: Lab) -> dict[str, str]:
    """mode -> X-Gateway-Server of GET /<mode>/ through nginx."""
    return {m: lab.get(f"/{m}/").headers.get("X-Gateway-Server", "") for m in MODES}


@pytest.fixture
def own_lab(lab: Lab) -> None:
    if lab.target == "external":
        pytest.skip("LAB_URL names a lab whose processes this run cannot control")


@pytest.fixture
def defaults_after(lab: Lab) -> Iterator[None]:
    yield
    for mode in MODES:
        use_server(mode, default_server(mode))


def test_without_its_host_process_the_endpoint_is_a_json_503_that_names_lab_up(
    lab: Lab, own_lab: None
) -> None:
    """As after plain `docker compose up`: nothing listens on the control socket. nginx
    answers a JSON 503 (not its 502 for a gateway) that names `lab up` and `make
    server`; a POST changes nothing; `lab up` brings the endpoint back."""
    stop_control(lab.target)
    try:
        for got in (
            lab.get(API),
            lab.post(API, json={"mode": "wsgi", "server": "gthread"}, headers=JSON),
        ):
            error = json_error(503, got.headers.get("Content-Type", ""), got.content)
            assert error is not None, (got.status_code, got.text)
            assert "lab up" in error["error"] and "make server" in error["error"]
        assert serving(lab)["wsgi"] == default_server("wsgi")
    finally:
        up = run_lab("up", timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
    assert lab.get(API).status_code == 200


def test_get_lists_the_servers_in_force_and_the_choices(lab: Lab) -> None:
    got = lab.get(API)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["servers"] == lab_status()["servers"] == serving(lab)
    assert body["choices"] == {m: list(SERVERS[m]) for m in MODES}


BAD: list[Any] = [
    pytest.param(b'{"mode": "wsgi", "server": "nope"}', JSON, 400, "unknown server", id="server"),
    pytest.param(b'{"mode": "php", "server": "sync"}', JSON, 400, "unknown mode", id="mode"),
    pytest.param(b'{"mode": "cgi", "server": "gthread"}', JSON, 400, "cgi", id="other-mode"),
    pytest.param(b'{"mode": "wsgi"}', JSON, 400, "exactly", id="missing"),
    pytest.param(b'["wsgi", "gthread"]', JSON, 400, "object", id="list"),
    pytest.param(b"mode=wsgi&server=gthread", JSON, 400, "JSON", id="not-json"),
    pytest.param(
        b'{"mode": "wsgi", "server": "gthread"}',
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "application/json",
        id="form",
    ),
    pytest.param(
        b'{"mode": "wsgi", "server": "gthread"}',
        JSON | {"Origin": "http://evil.example"},
        403,
        "evil.example",
        id="foreign-origin",
    ),
    pytest.param(
        b'{"mode": "wsgi", "server": "gthread", "pad": "' + b"x" * 5000 + b'"}',
        JSON,
        413,
        "larger",
        id="too-big",
    ),
]


@pytest.mark.parametrize(("body", "headers", "status", "says"), BAD)
def test_bad_input_is_a_json_4xx_and_changes_nothing(
    lab: Lab, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    before = serving(lab)
    got = lab.post(API, data=body, headers=headers)
    error = json_error(status, got.headers.get("Content-Type", ""), got.content)
    assert error is not None, (got.status_code, got.text)
    assert says in error["error"]
    assert lab.get(API).json()["swap"] is None or lab.get(API).json()["swap"]["state"] != "swapping"
    assert serving(lab) == before


def test_other_methods_are_405(lab: Lab) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        got = requests.request(method, lab.url + API, json={}, timeout=10)
        error = json_error(405, got.headers.get("Content-Type", ""), got.content)
        assert error is not None, (method, got.status_code, got.text)
        assert got.headers["Allow"] == "GET, POST"
    # Elsewhere it is a JSON 404, and a bad body on the right path a 400.
    got = lab.get(API.replace("servers", "nothing"))
    assert json_error(404, got.headers.get("Content-Type", ""), got.content) is not None
    got = lab.post(API, data=b"", headers=JSON)
    assert got.status_code == 400
    got = lab.post(API + "x", json={})
    assert got.status_code == 404


def test_a_swap_through_the_endpoint_changes_the_server_behind_the_route(
    lab: Lab, defaults_after: None
) -> None:
    origin = {"Origin": lab.url}  # the dashboard's own page
    got = lab.post(API, json={"mode": "wsgi", "server": "gthread"}, headers=origin)
    assert got.status_code == 202, got.text
    assert got.json()["swap"] == {
        "mode": "wsgi",
        "server": "gthread",
        "was": "sync",
        "state": "swapping",
    }
    # A second swap while the first runs is refused.
    busy = lab.post(API, json={"mode": "asgi", "server": "uvicorn"}, headers=origin)
    assert json_error(409, busy.headers.get("Content-Type", ""), busy.content) is not None
    deadline = time.monotonic() + 90
    while (swap := lab.get(API).json()["swap"])["state"] == "swapping":
        assert time.monotonic() < deadline, "the swap did not finish"
        time.sleep(0.5)
    assert swap["state"] == "done", swap
    assert serving(lab)["wsgi"] == "gthread"
    assert lab_status()["servers"]["wsgi"] == "gthread"
    # Asking for the server in force changes nothing: 200, no new swap.
    again = lab.post(API, json={"mode": "wsgi", "server": "gthread"}, headers=origin)
    assert again.status_code == 200 and again.json()["swap"] == swap
