"""The dashboard over HTTPS, where Chromium speaks HTTP/2 (it does only over TLS).

The scenarios of test_dashboard.py run here again, imported by name: pytest
collects them in this module too, where the ``dashboard`` fixture below opens
the page at the lab's tls_url instead of its plain URL. Then the tests only
HTTP/2 makes possible: the page knows its protocol, "At once" goes past the
HTTP/1.1 cap, and 12 requests to ASGI are in flight together.

Certificates: Chromium has no command-line switch to add a CA, so this test
does what trusting the lab's CA amounts to. It fetches the certificate nginx
serves, checks it against the lab's CA (ca_file) with a verifying TLS client,
and then tells Chromium to accept exactly that certificate's public key
(--ignore-certificate-errors-spki-list). Any other certificate still fails, as
ERR_CERT_AUTHORITY_INVALID would show: certificate errors are NOT ignored
wholesale.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import Browser

from tests.browser.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DASHBOARD_DIR,
    DASHBOARD_FILES,
    Dashboard,
    opened,
)

# The same scenarios as over HTTP/1.1, collected again here (see above).
from tests.browser.test_dashboard import (  # noqa: F401
    overlap_by_pid,
    test_a_bad_parameter_shows_the_400_in_the_page,
    test_a_gateway_down_and_a_network_error_are_listed,
    test_all_three_in_turn,
    test_asgi_overlaps_in_one_process_wsgi_never,
    test_bars_are_reachable_by_keyboard_with_details,
    test_the_cookie_control_picks_the_mode_of_root,
)
from tests.support.tls_lab import TLSLab, tls_lab  # noqa: F401 (the session fixture)

pytestmark = pytest.mark.browser

# nginx/templates/tls.conf (http2_max_concurrent_streams) and model.js.
MAX_AT_ONCE_HTTP2 = 100
MAX_AT_ONCE_HTTP11 = 50


def openssl(args: list[str], data: bytes) -> bytes:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


def served_key_pin(tls_lab: TLSLab) -> str:  # noqa: F811
    """base64(sha256(SubjectPublicKeyInfo)) of the certificate nginx serves, once
    a client that trusts only the lab's CA has accepted it."""
    url = urlsplit(tls_lab.url)
    context = ssl.create_default_context(cafile=tls_lab.ca_file)
    with (
        socket.create_connection((url.hostname, url.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=url.hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    pem = ssl.DER_cert_to_PEM_cert(der).encode()
    public = openssl(["x509", "-pubkey", "-noout"], pem)
    spki = openssl(["pkey", "-pubin", "-outform", "der"], public)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def h2_browser(browser: Browser, tls_lab: TLSLab) -> Iterator[Browser]:  # noqa: F811
    """A second Chromium from the same Playwright (one per process), pinned to the lab's key."""
    pin = f"--ignore-certificate-errors-spki-list={served_key_pin(tls_lab)}"
    chromium = browser.browser_type.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, pin])
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def h2_dashboard_url(tls_lab: TLSLab) -> str:  # noqa: F811
    """The /lab/ page over TLS, once it is known to be this tree's."""
    for name in DASHBOARD_FILES:
        served = requests.get(f"{tls_lab.url}/lab/{name}", verify=tls_lab.ca_file, timeout=10)
        if served.status_code != 200 or served.content != (DASHBOARD_DIR / name).read_bytes():
            pytest.fail(f"{tls_lab.url}/lab/{name} is not nginx/static/lab/{name} of this tree")
    return f"{tls_lab.url}/lab/"


class HTTP2Dashboard(Dashboard):
    """Screenshots of the scenarios run over HTTP/2 get names of their own."""

    def screenshot(self, name: str) -> Path:
        return super().screenshot(name if name.startswith("http2-") else f"http2-{name}")


@pytest.fixture
def dashboard(h2_browser: Browser, h2_dashboard_url: str) -> Iterator[Dashboard]:
    """This module's dashboard: the page over HTTPS, hence HTTP/2."""
    with opened(h2_browser, h2_dashboard_url, HTTP2Dashboard) as board:
        yield board


# -- what HTTP/2 changes ----------------------------------------------------------------


def fired_protocols(board: Dashboard, path_part: str) -> set[str]:
    return set(
        board.page.evaluate(
            "part => performance.getEntriesByType('resource')"
            ".filter(e => e.name.includes(part)).map(e => e.nextHopProtocol)",
            path_part,
        )
    )


def test_the_page_knows_it_came_over_http2(dashboard: Dashboard) -> None:
    page = dashboard.page
    assert page.get_attribute("body", "data-protocol") == "h2"
    assert "HTTP/2" in page.inner_text("#protocol")
    assert page.get_attribute("#concurrency", "max") == str(MAX_AT_ONCE_HTTP2)
    dashboard.fire("wsgi", "/coffee", 3, ms="10")
    assert fired_protocols(dashboard, "/wsgi/coffee") == {"h2"}


def test_the_page_knows_it_came_over_http11(browser: Browser, dashboard_url: str) -> None:
    """The control, over the plain port: HTTP/1.1, the cap of 50 and the 6-connection note."""
    with opened(browser, dashboard_url) as board:
        page = board.page
        assert page.get_attribute("body", "data-protocol") == "http/1.1"
        assert "HTTP/1.1" in page.inner_text("#protocol")
        assert page.get_attribute("#concurrency", "max") == str(MAX_AT_ONCE_HTTP11)
        board.fire("asgi", "/coffee", 3, ms="10")
        assert "at most 6" in page.inner_text("#connection-note")


def test_twelve_asgi_requests_are_in_flight_together(dashboard: Dashboard) -> None:
    """The picture HTTP/2 exists for: over HTTP/1.1 the 7th request waits in the browser
    for a free connection; over HTTP/2 all 12 start before the first ends."""
    dashboard.fire("asgi", "/coffee", 12, ms="800")
    bars = dashboard.bars("asgi")
    assert len(bars) == 12 and {b.status for b in bars} == {200}
    latest_start = max(b.start for b in bars)
    earliest_end = min(b.end for b in bars)
    assert latest_start < earliest_end, (
        f"the last request started {latest_start - earliest_end:.3f} s after the first ended"
    )
    note = dashboard.page.locator("#connection-note")
    assert note.get_attribute("data-in-flight") == "12"
    assert "6 connections per server does not apply" in note.inner_text()
    dashboard.screenshot("http2-asgi-twelve")


def test_at_once_goes_past_the_http11_cap(dashboard: Dashboard) -> None:
    """60 at once: refused before sending over HTTP/1.1 (cap 50), sent together here."""
    dashboard.fire("asgi", "/coffee", 60, ms="500")
    bars = dashboard.bars("asgi")
    assert len(bars) == 60 and {b.status for b in bars} == {200}
    in_flight = int(dashboard.page.get_attribute("#connection-note", "data-in-flight") or 0)
    assert in_flight > 6, f"only {in_flight} were in progress at once"
    assert sum(overlap_by_pid(bars).values()) >= in_flight


def test_out_of_range_concurrency_over_http2_is_refused_before_sending(
    dashboard: Dashboard,
) -> None:
    page = dashboard.page
    page.fill("#concurrency", str(MAX_AT_ONCE_HTTP2 + 1))
    page.click("#fire")
    page.wait_for_selector("#errors:not([hidden])")
    assert f"1 to {MAX_AT_ONCE_HTTP2}" in page.inner_text("#error-list")
    assert page.get_attribute("body", "data-run") == "idle"
