"""The dashboard at /lab/, end to end: nginx serves the page, the page fires
requests through nginx, and everything asserted here is read back from the
page's DOM (the bars' data attributes, the summary, the error list)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable, Iterator

import pytest
from playwright.sync_api import Browser, Page, Route

from lab.routing import MODES
from tests.browser.conftest import (
    DOCS_SCREENSHOT,
    VIEWPORT,
    Bar,
    Dashboard,
)
from tests.support.lab import Lab, workers_in_force

pytestmark = pytest.mark.browser


N = 10
COFFEE_MS = "300"


def overlap_by_pid(bars: Iterable[Bar]) -> dict[str, int]:
    """The most bars open at one instant, per pid (touching ends do not overlap)."""
    by_pid: dict[str, list[Bar]] = defaultdict(list)
    for bar in bars:
        by_pid[bar.pid].append(bar)
    most: dict[str, int] = {}
    for pid, group in by_pid.items():
        events = sorted([(b.start, 1) for b in group] + [(b.end, -1) for b in group])
        open_now = best = 0
        for _, step in events:
            open_now += step
            best = max(best, open_now)
        most[pid] = best
    return most


# Records how many bars the page shows after every change to the panels.
COUNT_BARS = """() => {
  window.barCounts = [];
  new MutationObserver(() => {
    window.barCounts.push(document.querySelectorAll('#panels .bar').length);
  }).observe(document.getElementById('panels'), {childList: true, subtree: true});
}"""


def test_asgi_overlaps_in_one_process_wsgi_never(dashboard: Dashboard, lab: Lab) -> None:
    dashboard.page.evaluate(COUNT_BARS)
    asgi_s = dashboard.fire("asgi", "/coffee", N, ms=COFFEE_MS)
    asgi = dashboard.bars("asgi")
    counts = dashboard.page.evaluate("window.barCounts")
    assert any(0 < c < N for c in counts), f"bars were not drawn as answers arrived: {counts}"
    dashboard.screenshot("asgi-coffee")
    print(f"one click, {N} x /asgi/coffee?ms={COFFEE_MS}: {asgi_s:.2f} s")

    assert len(asgi) == N
    assert {b.mode for b in asgi} == {"asgi"}
    assert {b.status for b in asgi} == {200}
    asgi_overlap = overlap_by_pid(asgi)
    assert max(asgi_overlap.values()) >= 2, f"no ASGI process overlapped: {asgi_overlap}"
    assert int(dashboard.stat("asgi", "max-overlap")) == max(asgi_overlap.values())
    assert int(dashboard.stat("asgi", "processes")) == len(asgi_overlap)
    assert dashboard.stat("asgi", "errors") == "0"

    # More requests than sync workers, so some worker is asked again while the
    # run goes on: one that could overlap two would have.
    fired = max(N, workers_in_force(lab)["wsgi"] + 1)
    wsgi_s = dashboard.fire("wsgi", "/coffee", fired, ms=COFFEE_MS)
    wsgi = dashboard.bars("wsgi")
    dashboard.screenshot("wsgi-coffee")
    print(f"one click, {fired} x /wsgi/coffee?ms={COFFEE_MS}: {wsgi_s:.2f} s")

    assert len(wsgi) == fired
    assert {b.mode for b in wsgi} == {"wsgi"}
    assert {b.status for b in wsgi} == {200}
    wsgi_overlap = overlap_by_pid(wsgi)
    assert len(wsgi_overlap) < len(wsgi), f"one request per worker: {wsgi_overlap}"
    assert set(wsgi_overlap.values()) == {1}, f"a WSGI worker overlapped: {wsgi_overlap}"
    assert dashboard.stat("wsgi", "max-overlap") == "1"
    # Each bar lasts at least the coffee it was asked to wait for.
    assert all(b.end - b.start >= 0.29 for b in asgi + wsgi)


def test_all_three_in_turn(dashboard: Dashboard) -> None:
    seconds = dashboard.fire("all", "/coffee", N, ms=COFFEE_MS)
    print(f"one click, {N} x /coffee?ms={COFFEE_MS} at each of cgi, wsgi, asgi: {seconds:.2f} s")
    print(dashboard.page.inner_text("#run-status"))
    path = dashboard.screenshot("all-three-coffee")
    if os.environ.get("LAB_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(path, DOCS_SCREENSHOT)
        print(f"screenshot: {DOCS_SCREENSHOT}")

    bars = {mode: dashboard.bars(mode) for mode in MODES}
    assert {mode: len(b) for mode, b in bars.items()} == dict.fromkeys(MODES, N)
    # CGI: a process per request, so as many pids as bars.
    assert len({b.pid for b in bars["cgi"]}) == N
    assert set(overlap_by_pid(bars["wsgi"]).values()) == {1}
    assert max(overlap_by_pid(bars["asgi"]).values()) >= 2
    for mode in MODES:
        assert dashboard.page.get_attribute(f"#panel-{mode}", "data-state") == "done"
        assert dashboard.page.inner_text(f"#verdict-{mode}").strip()


def test_a_bad_parameter_shows_the_400_in_the_page(dashboard: Dashboard) -> None:
    page = dashboard.page
    page.select_option("#mode", "wsgi")
    page.fill("#ms", "abc")
    page.fill("#concurrency", "3")
    # Enter in a field submits the form: the keyboard is enough.
    page.press("#ms", "Enter")
    page.wait_for_selector('body[data-run="done"]')

    error = page.locator('#error-list li[data-status="400"]')
    assert error.count() == 1
    text = error.inner_text()
    assert "/wsgi/coffee?ms=abc" in text
    assert "answered by the app (wsgi)" in text and "\u00d73" in text, text
    assert page.is_visible("#errors")
    statuses = {b.status for b in dashboard.bars("wsgi")}
    assert statuses == {400}, "the app's 400 carries trace headers, so it is drawn too"
    assert dashboard.stat("wsgi", "errors") == "3"
    dashboard.screenshot("bad-parameter")


def test_out_of_range_concurrency_is_refused_before_sending(dashboard: Dashboard) -> None:
    page = dashboard.page
    page.fill("#concurrency", "51")
    page.click("#fire")
    page.wait_for_selector("#errors:not([hidden])")
    assert "1 to 50" in page.inner_text("#error-list")
    assert page.get_attribute("body", "data-run") == "idle"


def _nginx_502(route: Route) -> None:
    # The body nginx's error page gives when a gateway is down (CONTRACT.md).
    body = {"error": "the cgi gateway is not answering", "status": 502, "mode": "cgi"}
    route.fulfill(status=502, content_type="application/json", body=json.dumps(body))


def test_a_gateway_down_and_a_network_error_are_listed(dashboard: Dashboard) -> None:
    """Stopping a gateway would disturb others using the lab, so its answers are stood in for."""
    page = dashboard.page
    page.route(re.compile(r"/cgi/coffee\?"), _nginx_502)
    page.route(re.compile(r"/wsgi/coffee\?"), lambda route: route.abort("connectionrefused"))

    dashboard.fire("cgi", "/coffee", 2, ms="10")
    bad_gateway = page.locator('#error-list li[data-status="502"]')
    assert bad_gateway.count() == 1
    assert "nginx (mode cgi)" in bad_gateway.inner_text()
    assert dashboard.bars("cgi") == [], "an answer without trace headers has no bar"
    assert dashboard.stat("cgi", "errors") == "2"

    dashboard.fire("wsgi", "/coffee", 2, ms="10")
    network = page.locator('#error-list li[data-status="0"]')
    assert network.count() == 1
    assert "network error" in network.inner_text()
    dashboard.screenshot("errors")


def test_the_cookie_control_picks_the_mode_of_root(dashboard: Dashboard) -> None:
    page = dashboard.page
    for mode in ("asgi", "cgi", "wsgi"):
        page.select_option("#cookie-mode", mode)
        page.wait_for_selector(f'#root-mode[data-mode="{mode}"]')
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert cookies["lab_mode"]["value"] == mode
        assert cookies["lab_mode"]["path"] == "/"

    # Requests to "/" from this page now go to the cookie's mode.
    page.select_option("#cookie-mode", "asgi")
    page.wait_for_selector('#root-mode[data-mode="asgi"]')
    dashboard.fire("active", "/", 3)
    assert {b.mode for b in dashboard.bars("active")} == {"asgi"}

    page.select_option("#cookie-mode", "")
    page.wait_for_selector('#root-mode:not([data-mode=""])')
    assert "lab_mode" not in {c["name"] for c in page.context.cookies()}
    reached = page.get_attribute("#root-mode", "data-mode")
    assert reached in MODES
    assert "default" in page.inner_text("#root-detail")


def test_bars_are_reachable_by_keyboard_with_details(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.fire("asgi", "/coffee", 3, ms="50")
    labels_missing = page.evaluate(
        "[...document.querySelectorAll('input, select')].filter(e => !e.labels.length).length"
    )
    assert labels_missing == 0
    page.focus("#panel-asgi .bar")
    tip = page.locator("#tooltip")
    assert tip.is_visible()
    request_id = page.get_attribute("#panel-asgi .bar", "data-request-id")
    assert request_id and request_id in tip.inner_text()
    page.keyboard.press("Escape")
    assert not tip.is_visible()


# -- the page's pure module, imported in the browser ------------------------------------

MODEL_CASES = [
    pytest.param("maxOverlap([])", 0, id="overlap-none"),
    pytest.param("maxOverlap([{start: 0, end: 1}, {start: 1, end: 2}])", 1, id="overlap-touching"),
    pytest.param("maxOverlap([{start: 0, end: 2}, {start: 1, end: 3}])", 2, id="overlap-two"),
    pytest.param(
        "maxOverlap([{start: 0, end: 10}, {start: 1, end: 2}, {start: 1.5, end: 3.5},"
        " {start: 3, end: 4}])",
        3,
        id="overlap-nested",
    ),
    pytest.param(
        "packRows([{start: 0, end: 2}, {start: 1, end: 3}, {start: 2, end: 4}])",
        {"rows": [0, 1, 0], "count": 2},
        id="pack-reuses-a-free-row",
    ),
    pytest.param("buildPath('asgi', '/coffee', {ms: '300'})", "/asgi/coffee?ms=300", id="path"),
    pytest.param("buildPath('active', '/', {})", "/", id="path-root-active"),
    pytest.param("buildPath('cgi', '/', {})", "/cgi/", id="path-root-cgi"),
    pytest.param(
        "buildPath('wsgi', '/breakfast', {coffee_ms: '1', omelette_ms: '2'})",
        "/wsgi/breakfast?coffee_ms=1&omelette_ms=2",
        id="path-breakfast",
    ),
    pytest.param("buildPath('cgi', '/coffee', {ms: 'a b'})", "/cgi/coffee?ms=a%20b", id="path-esc"),
    pytest.param("parseConcurrency(' 7 ')", 7, id="concurrency-ok"),
    pytest.param("parseConcurrency('0')", None, id="concurrency-zero"),
    pytest.param("parseConcurrency('51')", None, id="concurrency-too-many"),
    pytest.param("parseConcurrency('2.5')", None, id="concurrency-fraction"),
    pytest.param(
        "parseTrace(n => ({'X-Gateway-Mode': 'asgi'})[n] ?? null)", None, id="trace-incomplete"
    ),
    pytest.param("niceTicks(640)", [0, 200, 400, 600], id="ticks"),
]


@pytest.fixture(scope="module")
def model_page(browser: Browser, dashboard_url: str) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = context.new_page()
    page.goto(dashboard_url)
    yield page
    context.close()


@pytest.mark.parametrize(("expression", "expected"), MODEL_CASES)
def test_model(model_page: Page, expression: str, expected: object) -> None:
    got = model_page.evaluate(
        "async () => { const { maxOverlap, packRows, buildPath, parseConcurrency, parseTrace,"
        f" niceTicks }} = await import('./model.js'); return {expression}; }}"
    )
    assert got == expected


def test_a_run_that_throws_leaves_the_page_usable(dashboard: Dashboard) -> None:
    """If drawing a run throws, the page says so and the Fire button works again
    (it must not stay "Firing..." until a reload)."""
    page = dashboard.page
    # The run's own clock breaks once the click has been handled.
    page.evaluate("() => { performance.now = () => { throw new Error('clock broke'); }; }")
    dashboard.fire("wsgi", "/coffee", 2, ms="10")
    assert page.inner_text("#fire") == "Fire"
    assert page.get_attribute("#fire", "aria-disabled") is None
    assert "clock broke" in page.inner_text("#error-list")
