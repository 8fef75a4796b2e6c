"""Reloads under load: nginx reloads, gunicorn graceful reloads (HUP) and mode switches
while clients keep sending requests. Not one request may fail.

The clients (``tests.support.steady``) send an idempotent GET again, up to
MAX_RETRIES times, only when the connection was closed or refused before any
byte of a response arrived: the race every graceful reload has (RFC 9112
§9.6), which RFC 9112 §9.3.1 lets a client retry. Any HTTP error status, a
timeout, or a connection lost after part of an answer counts as a failure.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from lab.settings import LabSettings
from tests.support import faults
from tests.support.lab import LAB, MODES, ROOT, Lab
from tests.support.steady import SteadyClient, Totals, closed_or_refused, finish

CLIENTS = 6
PATHS = ("/wsgi/", "/cgi/", "/asgi/", "/", "/wsgi/coffee?ms=20", "/asgi/coffee?ms=20")
MAX_RETRIES = 3


@pytest.fixture
def under_load(lab: Lab) -> Iterator[Callable[[], Totals]]:
    """Clients running for the whole test; call the fixture's value to stop and count."""
    clients = [
        SteadyClient(
            # Each client goes through every path, starting at its own.
            [lab.url + PATHS[(i + k) % len(PATHS)] for k in range(len(PATHS))],
            max_seconds=120.0,  # until the test stops it (pytest's timeout is 120 s)
            retries=MAX_RETRIES,
            retryable=closed_or_refused,
        ).start()
        for i in range(CLIENTS)
    ]
    time.sleep(0.5)

    def stop_and_count() -> Totals:
        time.sleep(0.5)
        return finish(clients, timeout_s=15)

    try:
        yield stop_and_count
    finally:
        for client in clients:
            client.stop.set()


def report(what: str, tally: Totals) -> None:
    print(f"\n{what}: sent {tally.sent}, failed {len(tally.failed)}, retried {tally.retried}")
    assert tally.sent >= 20, "the load hardly ran: the reloads were not under load"
    assert not tally.failed, tally.failed[:10]


def lab_cli(*args: str) -> None:
    proc = subprocess.run(
        [*LAB, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def active_mode() -> str:
    proc = subprocess.run(
        [*LAB, "status", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    mode = json.loads(proc.stdout).get("active_mode")
    return mode if mode in MODES else "wsgi"


@pytest.fixture(scope="module")
def target(lab: Lab) -> str:
    if lab.target == "external":
        pytest.skip("LAB_URL names a lab whose processes this run cannot control")
    return lab.target


def test_nginx_reloads_and_mode_switches_drop_nothing(
    target: str, under_load: Callable[[], Totals]
) -> None:
    before = active_mode()
    others = [m for m in MODES if m != before]
    try:
        lab_cli("switch", before)  # a reload to the same config
        for mode in others:
            lab_cli("switch", mode)
    finally:
        lab_cli("switch", before)
    report("nginx reloads + mode switches", under_load())


def test_gateway_graceful_reloads_drop_nothing(
    target: str, under_load: Callable[[], Totals], lab: Lab
) -> None:
    cfg = LabSettings.from_env()
    for mode in MODES:
        worker = int(lab.get(f"/{mode}/").headers["X-Gateway-Worker"])
        family = faults.worker_family(target, mode, worker)
        assert family is not None
        before = {str(pid) for pid in family.workers}
        faults.reload_gateway(cfg, target, mode)
        # HUP: new workers take over; wait until one of them answers.
        deadline = time.monotonic() + 20
        while lab.get(f"/{mode}/").headers["X-Gateway-Worker"] in before:
            assert time.monotonic() < deadline, f"{mode}: no new worker after HUP"
            time.sleep(0.2)
    report("gunicorn HUP on every gateway", under_load())
