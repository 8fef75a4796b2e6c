"""The dashboard at /lab/ driven in headless Chromium.

The lab comes from the session ``lab`` fixture (tests/conftest.py): LAB_URL, else a
lab already answering on 127.0.0.1:$LAB_PORT, else ``lab up`` (and ``lab
down`` after). The browser is the machine's Chromium (LAB_CHROMIUM, default
/usr/bin/chromium) driven by Playwright; Playwright's own browser downloads
are never used.

Screenshots go to results/screenshots/ (LAB_SCREENSHOTS overrides);
LAB_DOCS_SCREENSHOT=1 also refreshes docs/dashboard.png for the README.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.lab import ROOT, Lab

CHROMIUM = os.environ.get("LAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DASHBOARD_DIR = ROOT / "nginx" / "static" / "lab"
DASHBOARD_FILES = (
    "index.html",
    "dashboard.js",
    "model.js",
    "servers.js",
    "timeline.js",
    "dashboard.css",
)
SCREENSHOTS = Path(os.environ.get("LAB_SCREENSHOTS", str(ROOT / "results" / "screenshots")))
DOCS_SCREENSHOT = ROOT / "docs" / "dashboard.png"
VIEWPORT = {"width": 1600, "height": 1000}
RUN_TIMEOUT_MS = 60_000
# Chromium aborts requests in flight when a network interface comes or goes
# (a Docker container starting elsewhere on the machine): the page shows them
# as network errors, correctly, but such a run says nothing about the lab.
NETWORK_CHANGED = "ERR_NETWORK_CHANGED"


@pytest.fixture(scope="session")
def dashboard_url(lab: Lab) -> str:
    """The /lab/ page, once it is known to be this tree's (an old image serves an old page)."""
    for name in DASHBOARD_FILES:
        served = requests.get(f"{lab.url}/lab/{name}", timeout=10)
        if served.status_code != 200 or served.content != (DASHBOARD_DIR / name).read_bytes():
            pytest.fail(
                f"{lab.url}/lab/{name} is not nginx/static/lab/{name} of this tree "
                f"(status {served.status_code}): rebuild the nginx image or restart the lab"
            )
    return f"{lab.url}/lab/"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set LAB_CHROMIUM)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass(frozen=True)
class Bar:
    """One bar of a timeline, read back from its data attributes."""

    index: int
    mode: str
    server: str
    pid: str
    worker: str
    start: float
    end: float
    status: int
    request_id: str


@dataclass
class Dashboard:
    page: Page
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def fire(
        self, mode: str, endpoint: str = "/coffee", concurrency: int | str = 10, **params: str
    ) -> float:
        """Fill the form, press Fire, wait until the run is drawn; seconds from click to done."""
        for attempt in (1, 2):
            self.console.clear()
            seconds = self._fire_once(mode, endpoint, concurrency, params)
            if not any(NETWORK_CHANGED in line for line in self.console) or attempt == 2:
                return seconds
            print(f"Chromium reported {NETWORK_CHANGED} during the run; firing it again")
        raise AssertionError("unreachable")

    def _fire_once(
        self, mode: str, endpoint: str, concurrency: int | str, params: dict[str, str]
    ) -> float:
        page = self.page
        page.select_option("#mode", mode)
        page.select_option("#endpoint", endpoint)
        for name, value in params.items():
            page.fill(f"#{name}", value)
        page.fill("#concurrency", str(concurrency))
        run_id = int(page.get_attribute("body", "data-run-id") or 0) + 1
        started = time.monotonic()
        page.click("#fire")
        page.wait_for_selector(
            f'body[data-run="done"][data-run-id="{run_id}"]', timeout=RUN_TIMEOUT_MS
        )
        return time.monotonic() - started

    def bars(self, panel: str) -> list[Bar]:
        raw = self.page.eval_on_selector_all(
            f"#panel-{panel} .bar", "bars => bars.map(b => ({...b.dataset}))"
        )
        return [
            Bar(
                index=int(b["index"]),
                mode=b["mode"],
                server=b.get("server", ""),
                pid=b["pid"],
                worker=b["worker"],
                start=float(b["start"]),
                end=float(b["end"]),
                status=int(b["status"]),
                request_id=b["requestId"],
            )
            for b in raw
        ]

    def stat(self, panel: str, name: str) -> str:
        value = self.page.get_attribute(f"#summary-{panel}-{name}", "data-value")
        assert value is not None, f"no summary value {name} for {panel}"
        return value

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path


@contextmanager
def opened(browser: Browser, url: str, kind: type[Dashboard] | None = None) -> Iterator[Dashboard]:
    """A fresh context (no cookies) with the page at ``url`` loaded and ready."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = context.new_page()
    board = (kind or Dashboard)(page)
    page.on("console", lambda message: board.console.append(message.text))
    page.on("pageerror", lambda error: board.page_errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector('body[data-ready="true"]')
    try:
        yield board
        assert board.page_errors == [], f"the page raised: {board.page_errors}"
    finally:
        context.close()


@pytest.fixture
def dashboard(browser: Browser, dashboard_url: str) -> Iterator[Dashboard]:
    """A fresh browser context (no cookies) with /lab/ loaded and ready."""
    with opened(browser, dashboard_url) as board:
        yield board
