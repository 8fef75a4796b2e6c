"""The server picker on /lab/: the server in force per mode, a swap from the page, and
the server that ran each request in the live view (X-Gateway-Server).

The picker swaps on every target (lab/control.py, a process `lab up` starts on
the host, behind /lab/api/servers). Without that process (a lab started by
plain `docker compose up`) it shows each mode's server read-only and says to
use `lab up` or `make server`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gateway.servers.registry import SERVERS, default_server
from tests.browser.conftest import Dashboard
from tests.support.lab import MODES, Lab, lab_status, run_lab, stop_control, use_server

SWAP_TIMEOUT_MS = 120_000


def picked(dashboard: Dashboard) -> dict[str, str]:
    page = dashboard.page
    page.wait_for_selector('body[data-servers="ready"]')
    return {m: page.eval_on_selector(f"#server-{m}", "s => s.value") for m in MODES}


@pytest.fixture
def defaults_after(lab: Lab) -> Iterator[None]:
    yield
    for mode in MODES:
        use_server(mode, default_server(mode))


def test_the_picker_shows_the_server_in_force_per_mode(dashboard: Dashboard, lab: Lab) -> None:
    assert picked(dashboard) == lab_status()["servers"]
    page = dashboard.page
    assert page.get_attribute("#server-status", "data-state") == "ready"
    for mode in MODES:
        options = page.eval_on_selector_all(f"#server-{mode} option", "os => os.map(o => o.value)")
        assert options == list(SERVERS[mode])
        assert not page.eval_on_selector(f"#server-{mode}", "s => s.disabled")


def test_without_the_host_process_the_picker_is_read_only_and_says_lab_up(
    dashboard: Dashboard, lab: Lab
) -> None:
    """The endpoint's JSON 503 (nothing on the control socket) reaches the page: each
    mode's server from X-Gateway-Server, the selects disabled, the reason shown."""
    if lab.target == "external":
        pytest.skip("LAB_URL names a lab whose processes this run cannot control")
    page = dashboard.page
    stop_control(lab.target)
    try:
        page.reload()
        page.wait_for_selector('body[data-ready="true"]')
        assert picked(dashboard) == lab_status()["servers"]
        assert page.get_attribute("#server-status", "data-state") == "read-only"
        status = page.inner_text("#server-status")
        assert "lab up" in status and "make server" in status, status
        assert all(page.eval_on_selector(f"#server-{m}", "s => s.disabled") for m in MODES)
    finally:
        up = run_lab("up", timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr


def test_picking_a_server_swaps_it_and_the_bars_name_it(
    dashboard: Dashboard, lab: Lab, defaults_after: None
) -> None:
    page = dashboard.page
    dashboard.fire("wsgi", "/coffee", 4, ms="200")
    assert {b.server for b in dashboard.bars("wsgi")} == {"sync"}
    assert page.inner_text("#panel-wsgi .server-note") == ""
    assert picked(dashboard)["wsgi"] == "sync"
    page.select_option("#server-wsgi", "gthread")
    page.wait_for_selector(
        '#server-status[data-state="done"], #server-status[data-state="failed"]',
        timeout=SWAP_TIMEOUT_MS,
    )
    assert page.get_attribute("#server-status", "data-state") == "done", page.inner_text(
        "#server-status"
    )
    assert "wsgi is now served by gthread" in page.inner_text("#server-status")
    assert lab_status()["servers"]["wsgi"] == "gthread"
    dashboard.fire("wsgi", "/coffee", 4, ms="200")
    bars = dashboard.bars("wsgi")
    assert len(bars) == 4 and {b.server for b in bars} == {"gthread"}
    assert dashboard.stat("wsgi", "servers") == "gthread"
    assert "gthread worker" in page.inner_text("#panel-wsgi .server-note")
    # The tooltip of a bar names its server too.
    page.focus("#panel-wsgi .bar")
    assert "gthread" in page.inner_text("#tooltip")
    dashboard.screenshot("server-picker-gthread")


def test_a_second_swap_while_one_runs_is_refused(
    dashboard: Dashboard, lab: Lab, defaults_after: None
) -> None:
    """A second swap asked while one runs is refused (409) and the page says why."""
    page = dashboard.page
    picked(dashboard)
    # Two swaps at once, as two tabs would ask: the second is refused.
    statuses = page.evaluate(
        """async () => {
            const post = (body) => fetch('/lab/api/servers', {method: 'POST',
                headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
            const a = await post({mode: 'asgi', server: 'uvicorn'});
            const b = await post({mode: 'wsgi', server: 'gthread'});
            return [a.status, b.status, await b.json()];
        }"""
    )
    assert statuses[0] == 202 and statuses[1] == 409, statuses
    assert statuses[2]["status"] == 409 and "asgi" in statuses[2]["error"]
    deadline = time.monotonic() + SWAP_TIMEOUT_MS / 1000
    while lab.get("/lab/api/servers").json()["swap"]["state"] == "swapping":
        assert time.monotonic() < deadline, "the first swap did not finish"
        time.sleep(0.5)
    assert lab_status()["servers"] == {"cgi": "runner", "wsgi": "sync", "asgi": "uvicorn"}
