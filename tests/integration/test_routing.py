"""Which mode serves `/`: X-Lab-Mode header, else lab_mode cookie, else the default."""

from __future__ import annotations

import pytest

from tests.support.contract import json_error
from tests.support.lab import MODES, Lab


def test_header_picks_the_mode(lab: Lab, mode: str) -> None:
    r = lab.get("/", headers={"X-Lab-Mode": mode})
    assert r.status_code == 200 and r.headers["X-Gateway-Mode"] == mode


def test_cookie_picks_the_mode(lab: Lab, mode: str) -> None:
    r = lab.get("/", cookies={"lab_mode": mode})
    assert r.headers["X-Gateway-Mode"] == mode


def test_header_beats_cookie(lab: Lab) -> None:
    r = lab.get("/", headers={"X-Lab-Mode": "asgi"}, cookies={"lab_mode": "cgi"})
    assert r.headers["X-Gateway-Mode"] == "asgi"


@pytest.mark.parametrize("value", ["fastcgi", "WSGI ", "cgi,asgi"])
def test_unknown_header_is_400_json(lab: Lab, value: str) -> None:
    r = lab.get("/", headers={"X-Lab-Mode": value})
    assert r.status_code == 400
    assert json_error(400, r.headers.get("Content-Type", ""), r.content) is not None, r.text


def test_unknown_cookie_is_ignored(lab: Lab) -> None:
    default = lab.get("/").headers["X-Gateway-Mode"]
    r = lab.get("/", cookies={"lab_mode": "fastcgi"})
    assert r.status_code == 200 and r.headers["X-Gateway-Mode"] == default in MODES


def test_nginx_health_is_nginx_itself(lab: Lab) -> None:
    r = lab.get("/nginx-health")
    assert r.status_code == 200 and "X-Gateway-Mode" not in r.headers


def test_dashboard_is_served(lab: Lab) -> None:
    r = lab.get("/lab/")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
