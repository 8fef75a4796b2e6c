"""Reloads under load: nginx reloads, gunicorn graceful reloads (HUP) and mode switches
while clients keep sending requests. Not one request may fail.

The clients retry an idempotent GET only when the connection closed before any
byte of a response arrived. RFC 9112 §9.3.1: "A user agent MUST NOT
automatically retry a request with a non-idempotent method" -- and a GET is
idempotent, so a client may send it again on a new connection when a server
closed an idle keep-alive connection just as the request went out (the race
every graceful reload has, RFC 9112 §9.6). Any HTTP error status, a timeout,
or a connection lost after part of an answer counts as a failure.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import requests
import urllib3

from lab import faults
from lab.config import LabConfig
from tests.integration.conftest import LAB, MODES, ROOT, Lab

CLIENTS = 6
PATHS = ("/wsgi/", "/cgi/", "/asgi/", "/", "/wsgi/coffee?ms=20", "/asgi/coffee?ms=20")
MAX_RETRIES = 3


@dataclass
class Tally:
    sent: int = 0
    retried: int = 0
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def closed_before_answer(exc: requests.ConnectionError) -> bool:
    """The server closed (or refused) the connection before any byte of an answer.

    urllib3 reports a close before the status line as RemoteDisconnected inside
    ProtocolError ("Connection aborted"), a refused connection as NewConnectionError.
    """
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return True
    if isinstance(reason, urllib3.exceptions.ProtocolError):
        inner = reason.args[1] if len(reason.args) > 1 else None
        return type(inner).__name__ in ("RemoteDisconnected", "ConnectionResetError")
    return False


def client(url: str, stop: threading.Event, tally: Tally, index: int) -> None:
    session = requests.Session()  # keep-alive to nginx, so reloads close idle connections
    i = index
    while not stop.is_set():
        path = PATHS[i % len(PATHS)]
        i += 1
        for attempt in range(MAX_RETRIES + 1):
            try:
                r = session.get(url + path, timeout=10)
            except requests.ConnectionError as exc:
                if closed_before_answer(exc) and attempt < MAX_RETRIES:
                    with tally.lock:
                        tally.retried += 1
                    continue  # RFC 9112 §9.3.1: an idempotent GET may be sent again
                with tally.lock:
                    tally.sent += 1
                    tally.failed.append(f"{path}: {exc}")
                break
            except requests.RequestException as exc:
                with tally.lock:
                    tally.sent += 1
                    tally.failed.append(f"{path}: {exc}")
                break
            with tally.lock:
                tally.sent += 1
                if r.status_code != 200:
                    tally.failed.append(f"{path}: {r.status_code} {r.text[:120]}")
            break


@pytest.fixture
def under_load(lab: Lab) -> Iterator[Callable[[], Tally]]:
    """Clients running for the whole test; call the fixture's value to stop and count."""
    stop = threading.Event()
    tally = Tally()
    threads = [
        threading.Thread(target=client, args=(lab.url, stop, tally, i), daemon=True)
        for i in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)

    def finish() -> Tally:
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(15)
        return tally

    try:
        yield finish
    finally:
        stop.set()


def report(what: str, tally: Tally) -> None:
    print(f"\n{what}: sent {tally.sent}, failed {len(tally.failed)}, retried {tally.retried}")
    assert tally.sent > 0
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
    if lab.target not in ("native", "docker"):
        pytest.skip("LAB_URL names a lab whose processes this run cannot control")
    return lab.target


def test_nginx_reloads_and_mode_switches_drop_nothing(
    target: str, under_load: Callable[[], Tally]
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
    target: str, under_load: Callable[[], Tally], lab: Lab
) -> None:
    cfg = LabConfig.from_env()
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
