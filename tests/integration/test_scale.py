"""`lab scale MODE N`: N replicas of one gateway behind nginx, on whichever target runs.

nginx spreads a mode's requests over its replicas round robin. Each answer
says who served it: X-Gateway-Host (the container under Docker) and
X-Gateway-Worker (the gunicorn worker's pid). Natively every replica shares the
host name, so a replica is told apart by its gunicorn master: the worker's
parent process, read from /proc (the suite runs on the lab's host there).

Scaling down takes the surplus out of nginx before stopping it, so a steady
stream of requests sees no failure. The `one_replica` fixture puts the mode
back to one replica whatever happens: the rest of the suite relies on it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Lab, _lab
from tests.support.steady import SteadyClient, finish, header

MODE = "wsgi"
REPLICAS = 3
REQUESTS = 60
THREADS = 6
LOOPS = 2  # steady clients during the scale-down


def lab_cli(*args: str) -> tuple[int, str]:
    """Run `lab ARGS`; (exit status, stdout + stderr)."""
    done = _lab(*args, timeout=300)
    return done.returncode, done.stdout + done.stderr


def replicas_in_status() -> dict[str, int]:
    code, out = lab_cli("status", "--json")
    assert code == 0, out
    info = json.loads(out)
    assert {"target", "url", "active_mode", "gateways", "limits"} <= set(info), info
    replicas: dict[str, int] = info["replicas"]
    return replicas


def parent_pid(pid: str) -> str:
    """The parent of process ``pid`` (a gunicorn worker's master), "?" once it is gone."""
    try:
        # pid (comm) state ppid ...: comm may hold spaces, so split after ")".
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    except (OSError, IndexError):
        return "?"


def replica_of(lab: Lab, host: str, worker: str) -> str:
    """Which replica served an answer: its container, or natively its gunicorn master."""
    return f"host {host}" if lab.target != "native" else f"master {parent_pid(worker)}"


@pytest.fixture
def one_replica(lab: Lab) -> Iterator[None]:
    """Start and end the test with one replica of MODE."""
    code, out = lab_cli("scale", MODE, "1")
    assert code == 0, out
    yield
    code, out = lab_cli("scale", MODE, "1")
    assert code == 0, f"could not go back to one {MODE} replica: {out}"


def fire(lab: Lab, n: int) -> list[tuple[str, str]]:
    """``n`` GETs of /MODE/, THREADS at a time, each on a new connection: (host, worker)."""

    def one(_: int) -> tuple[str, str]:
        r = requests.get(f"{lab.url}/{MODE}/", timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["X-Gateway-Mode"] == MODE
        return r.headers["X-Gateway-Host"], r.headers["X-Gateway-Worker"]

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(one, range(n)))


def test_scale_up_spreads_requests_and_scale_down_drops_none(lab: Lab, one_replica: None) -> None:
    alone = {replica_of(lab, h, w) for h, w in fire(lab, REQUESTS // 2)}
    assert len(alone) == 1, f"one replica before scaling: {alone}"

    started = time.monotonic()
    code, out = lab_cli("scale", MODE, str(REPLICAS))
    up_s = time.monotonic() - started
    assert code == 0, out
    assert replicas_in_status()[MODE] == REPLICAS

    # `lab scale` returns once nginx uses every replica: no waiting here.
    answers = fire(lab, REQUESTS)
    replicas = Counter(replica_of(lab, h, w) for h, w in answers)
    print(
        f"\nscale {MODE} 1 -> {REPLICAS} took {up_s:.2f}s; {REQUESTS} requests: "
        f"{len(set(answers))} distinct (host, worker) pairs from replicas {dict(replicas)}"
    )
    assert "master ?" not in replicas, "every worker that answered is still running"
    assert len(replicas) == REPLICAS, f"nginx spreads over every replica: {dict(replicas)}"
    assert len(set(answers)) >= REPLICAS

    url = f"{lab.url}/{MODE}/"
    loops = [
        SteadyClient([url], key=header("X-Gateway-Host"), max_seconds=90.0).start()
        for _ in range(LOOPS)
    ]
    try:
        time.sleep(0.5)
        started = time.monotonic()
        code, out = lab_cli("scale", MODE, "1")
        down_s = time.monotonic() - started
        assert code == 0, out
        time.sleep(0.5)  # requests served after the scale-down
    finally:
        done = finish(loops)
    print(
        f"scale {MODE} {REPLICAS} -> 1 took {down_s:.2f}s under {LOOPS} steady clients: "
        f"{done.sent} requests, {len(done.failed)} failed, "
        f"{done.retried} retried after a closed idle connection; "
        f"answered by X-Gateway-Host {dict(done.seen)}"
    )
    assert done.finished
    assert done.sent >= 20, "the loops hardly ran: the scale-down was not under load"
    assert done.failed == []
    assert replicas_in_status()[MODE] == 1
    after = {replica_of(lab, h, w) for h, w in fire(lab, REQUESTS // 2)}
    assert len(after) == 1, f"one replica after scaling down: {after}"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("fastcgi", "2"), id="unknown-mode"),
        pytest.param((MODE, "0"), id="zero"),
        pytest.param((MODE, "9"), id="too-many"),
        pytest.param((MODE, "three"), id="not-a-number"),
    ],
)
def test_bad_scale_exits_nonzero_and_changes_nothing(lab: Lab, args: tuple[str, str]) -> None:
    before = replicas_in_status()
    code, out = lab_cli("scale", *args)
    assert code != 0
    assert "Traceback" not in out and out.strip(), out
    assert replicas_in_status() == before
