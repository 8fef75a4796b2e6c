"""Switching the mode of `/` at run time with the lab CLI, on whichever target runs.

`lab switch` and `lab split` re-render nginx's active_mode.conf, test it and
reload nginx gracefully. These tests check that a switch drops no request,
that a weighted split spreads requests as asked, and that bad input changes
nothing. Every test puts the original default back (the `original` fixture):
the rest of the suite relies on it.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.integration.conftest import MODES, Lab, _lab
from tests.support.steady import SteadyClient, finish

SPLIT = {"wsgi": 70, "asgi": 30}
SPLIT_REQUESTS = 1000
# Observed shares within this many binomial standard deviations of the asked
# ones: 5 sigma fails a correct split about once in 1.7 million runs.
SIGMAS = 5


def lab_cli(*args: str) -> tuple[int, str]:
    """Run `lab ARGS`; (exit status, stdout + stderr)."""
    done = _lab(*args, timeout=120)
    return done.returncode, done.stdout + done.stderr


def active_mode() -> str:
    code, out = lab_cli("status", "--json")
    assert code == 0, out
    active = json.loads(out)["active_mode"]
    assert isinstance(active, str), out
    return active


def default_of_root(lab: Lab) -> str:
    """The mode serving `/` with no X-Lab-Mode header and no cookie."""
    r = lab.get("/")
    assert r.status_code == 200, r.text
    return r.headers["X-Gateway-Mode"]


@pytest.fixture
def original(lab: Lab) -> Iterator[str]:
    """The active mode (or split) before the test; put back after it, whatever happened."""
    before = active_mode()
    yield before
    code, out = lab_cli("split" if "=" in before else "switch", before)
    assert code == 0, f"could not restore the default {before!r}: {out}"


def test_switch_to_each_mode_and_back(lab: Lab, original: str, mode: str) -> None:
    code, out = lab_cli("switch", mode)
    assert code == 0, out
    assert active_mode() == mode
    # `lab switch` returns once the switch is in effect: no waiting here.
    assert {default_of_root(lab) for _ in range(5)} == {mode}


# -- three switches while requests keep coming ------------------------------------------


def test_three_switches_during_a_steady_loop_drop_nothing(lab: Lab, original: str) -> None:
    start = original if original in MODES else default_of_root(lab)
    others = [m for m in MODES if m != start]
    sequence = [*others, start]  # three switches, ending where it began
    loop = SteadyClient([lab.url + "/"], max_requests=5000).start()
    try:
        time.sleep(0.3)
        for mode in sequence:
            code, out = lab_cli("switch", mode)
            assert code == 0, out
            time.sleep(0.3)  # requests served by the new mode
    finally:
        done = finish([loop])
    print(
        f"\nthree switches {' -> '.join([start, *sequence])}: {done.sent} requests sent, "
        f"{len(done.failed)} failed, {done.retried} retried after a closed idle "
        f"connection; served by {dict(done.seen)}"
    )
    assert done.finished
    assert done.sent >= 20, "the loop hardly ran: the switches were not under load"
    assert done.failed == []
    assert set(sequence) <= set(done.seen), "every mode switched to served requests"


# -- a weighted split -------------------------------------------------------------------


def fire(url: str, n: int) -> Counter[str]:
    """``n`` GETs of ``url``, 16 at a time, each on a new connection with no cookie."""

    def one(_: int) -> str:
        r = requests.get(url, timeout=30)  # a new session each time: no cookie, new connection
        return r.headers.get("X-Gateway-Mode", f"HTTP {r.status_code}")

    with ThreadPoolExecutor(max_workers=16) as pool:
        return Counter(pool.map(one, range(n)))


def test_split_spreads_requests_by_weight(lab: Lab, original: str) -> None:
    label = ",".join(f"{m}={w}" for m, w in SPLIT.items())
    code, out = lab_cli("split", label)
    assert code == 0, out
    assert active_mode() == label
    seen = fire(lab.url + "/", SPLIT_REQUESTS)
    shares = {m: round(seen[m] / SPLIT_REQUESTS, 3) for m in seen}
    print(f"\nsplit {label}, {SPLIT_REQUESTS} requests: observed shares {shares}")
    assert set(seen) <= set(SPLIT), f"only the split's modes, and no errors: {seen}"
    for mode, percent in SPLIT.items():
        p = percent / 100
        sigma = math.sqrt(SPLIT_REQUESTS * p * (1 - p))
        expected = SPLIT_REQUESTS * p
        assert abs(seen[mode] - expected) <= SIGMAS * sigma, (mode, seen[mode], expected, sigma)

    code, out = lab_cli("split", "")
    assert code == 0, out
    plain = active_mode()
    assert plain in MODES
    assert set(fire(lab.url + "/", 50)) == {plain}
    if original in MODES:
        assert plain == original, '`lab split ""` goes back to the mode before the split'


def test_header_and_cookie_still_win_over_a_split(lab: Lab, original: str) -> None:
    code, out = lab_cli("split", "wsgi=50,asgi=50")
    assert code == 0, out
    for _ in range(5):
        assert lab.get("/", headers={"X-Lab-Mode": "cgi"}).headers["X-Gateway-Mode"] == "cgi"
        assert lab.get("/", cookies={"lab_mode": "cgi"}).headers["X-Gateway-Mode"] == "cgi"


# -- bad input changes nothing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "arg", "message"),
    [
        pytest.param("switch", "bogus", "bogus", id="switch-unknown-mode"),
        pytest.param("switch", "WSGI", "WSGI", id="switch-mode-case"),
        pytest.param("split", "wsgi=90,asgi=20", "sum to 100", id="split-sum"),
        pytest.param("split", "wsgi=90,bogus=10", "bogus", id="split-unknown-mode"),
        pytest.param("split", "wsgi=ninety,asgi=10", "whole number", id="split-not-a-number"),
        pytest.param("split", "wsgi=90.5,asgi=9.5", "whole number", id="split-fraction"),
    ],
)
def test_bad_input_exits_nonzero_and_changes_nothing(
    lab: Lab, original: str, command: str, arg: str, message: str
) -> None:
    served_before = default_of_root(lab)
    code, out = lab_cli(command, arg)
    assert code != 0
    assert message in out and "Traceback" not in out
    assert active_mode() == original
    if original in MODES:
        assert {default_of_root(lab) for _ in range(5)} == {served_before}


# -- the switched mode survives nginx itself going away -----------------------------------


def test_switched_mode_survives_an_nginx_restart(lab: Lab, original: str) -> None:
    from lab.settings import LabSettings
    from tests.support import faults

    chosen = next(m for m in MODES if m != default_of_root(lab))
    code, out = lab_cli("switch", chosen)
    assert code == 0, out
    faults.restart_nginx(LabSettings.from_env(), lab.target)
    assert active_mode() == chosen
    assert {default_of_root(lab) for _ in range(5)} == {chosen}
