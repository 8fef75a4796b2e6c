"""Slow and dead peers: what nginx and gunicorn do when a client or a gateway misbehaves.

Real processes and sockets on the suite's lab (either target), through
``tests.support.faults``; the 504 case runs on a small native lab of its own with a
2 s proxy_read_timeout (the suite's lab keeps the default 30 s). Each test
puts the lab back as it found it.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from lab.settings import LabSettings
from lab.system.ports import first_free
from lab.targets.native_nginx import find_nginx
from tests.support import faults
from tests.support.lab import ROOT, Lab

SLOW_CLIENTS = 50
SLOW_SECONDS = 6.0  # how long each slow client keeps trickling


@pytest.fixture(scope="module")
def target(lab: Lab) -> str:
    if lab.target == "external":
        pytest.skip("LAB_URL names a lab whose processes this run cannot control")
    return lab.target


@pytest.fixture(scope="module")
def cfg() -> LabSettings:
    return LabSettings.from_env()


def assert_json_error(r: requests.Response, status: int, mode: str | None = None) -> None:
    assert r.status_code == status, r.text[:200]
    body = r.json()
    assert body["status"] == status
    if mode is not None:
        assert body["mode"] == mode, body


def access_entry(cfg: LabSettings, target: str, probe: str) -> dict[str, object]:
    """nginx's access log line for the request whose target contains ``probe``."""
    deadline = time.monotonic() + 10
    while True:
        for entry in reversed(faults.access_log(cfg, target)):
            if probe in str(entry.get("request", "")):
                return entry
        if time.monotonic() > deadline:
            pytest.fail(f"no access log line for {probe}")
        time.sleep(0.2)


# -- slow clients --------------------------------------------------------------------


def slow_client(host: str, port: int, kind: str, stop: threading.Event) -> bool:
    """Hold a partial request open, a few bytes at a time; True if still connected at the end."""
    if kind == "header":
        head = f"GET /wsgi/coffee?ms=1 HTTP/1.1\r\nHost: {host}:{port}\r\nX-Slow: "
        drip = b"a"
    else:
        head = (
            f"POST /wsgi/upload HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 100000\r\n\r\n"
        )
        drip = b"b" * 10
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(head.encode())
            end = time.monotonic() + SLOW_SECONDS
            while time.monotonic() < end and not stop.is_set():
                time.sleep(0.5)
                sock.sendall(drip)
            return True
    except OSError:
        return False


def timed_get(url: str) -> float:
    started = time.perf_counter()
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, r.text[:200]
    assert r.headers["X-Gateway-Mode"] == "wsgi"
    return time.perf_counter() - started


def test_slow_clients_do_not_hold_up_a_sync_worker(lab: Lab) -> None:
    """50 clients trickling headers or bodies: nginx holds them, the sync workers stay free.

    nginx reads the whole request (proxy_request_buffering on) before a gateway
    sees it, so a normal request is answered about as fast as without them.
    """
    url = f"{lab.url}/wsgi/coffee?ms=50"
    baseline = statistics.median(timed_get(url) for _ in range(5))
    host, port = "127.0.0.1", int(lab.url.rsplit(":", 1)[1])
    stop = threading.Event()
    with ThreadPoolExecutor(SLOW_CLIENTS) as pool:
        kinds = ["header", "body"] * (SLOW_CLIENTS // 2)
        holders = [pool.submit(slow_client, host, port, k, stop) for k in kinds]
        time.sleep(1.0)  # every slow client connected and trickling
        started = time.monotonic()
        loaded = [timed_get(url) for _ in range(5)]
        done_at = time.monotonic()
        still_open = sum(not h.done() for h in holders)
        stop.set()
        connected = sum(h.result() for h in holders)
    print(
        f"\nslow clients: {SLOW_CLIENTS}; GET {url}: baseline median {baseline * 1000:.0f} ms, "
        f"with slow clients median {statistics.median(loaded) * 1000:.0f} ms, "
        f"max {max(loaded) * 1000:.0f} ms"
    )
    # The normal requests finished while the slow ones were still trickling...
    assert still_open == SLOW_CLIENTS and done_at - started < SLOW_SECONDS - 1
    assert connected == SLOW_CLIENTS
    # ...each within a generous bound of its own uncontended time (50 ms of work).
    assert max(loaded) < 10 * baseline + 0.5


# -- a dead gateway --------------------------------------------------------------------


def test_dead_gateway_is_502_naming_the_mode_and_recovers(
    lab: Lab, cfg: LabSettings, target: str
) -> None:
    """A stopped gateway: nginx answers with a JSON error naming the mode, then recovers.

    Natively the port refuses the connection: 502 at once. Under Docker the
    stopped container's address is gone from the network, so the connection
    attempt goes unanswered until proxy_connect_timeout (5 s): nginx calls that
    504. Either way nothing waits for proxy_read_timeout.
    """
    dead = 502 if target == "native" else 504
    faults.stop_gateway(cfg, target, "wsgi")
    try:
        started = time.monotonic()
        assert_json_error(lab.get("/wsgi/"), dead, "wsgi")
        assert_json_error(lab.get("/", headers={"X-Lab-Mode": "wsgi"}), dead, "wsgi")
        assert time.monotonic() - started < 15
        # The other modes do not care.
        assert lab.get("/asgi/").status_code == 200
        probe = uuid.uuid4().hex
        r = lab.post(f"/wsgi/upload?probe={probe}", data=b"x" * 1000)
        assert_json_error(r, dead, "wsgi")
    finally:
        faults.start_gateway(cfg, target, "wsgi")
    # nginx tried the POST once: one upstream address, one upstream status.
    entry = access_entry(cfg, target, probe)
    assert "," not in str(entry["upstream_addr"]), entry
    r = lab.get("/wsgi/")
    assert r.status_code == 200 and r.headers["X-Gateway-Mode"] == "wsgi"


def test_post_is_never_replayed_when_the_gateway_dies_holding_it(
    lab: Lab, cfg: LabSettings, target: str
) -> None:
    """A POST delivered to a hung gateway that then dies is sent upstream once, never again.

    nginx passes a request to another try only for idempotent methods unless
    proxy_next_upstream says non_idempotent (the lab's config does not). The
    access log's upstream_addr lists every try: it must hold one address.

    Natively SIGKILL reaches the stopped processes before they run again: the
    app never saw the POST and nginx answers 502. ``docker kill`` thaws a
    paused container to kill it, so there the app may get to answer part or all
    of it before it dies; the client then sees the answer cut short, or whole.
    """
    probe = uuid.uuid4().hex
    faults.freeze_gateway(cfg, target, "wsgi")
    outcome: list[requests.Response | requests.RequestException] = []

    def send() -> None:
        try:
            outcome.append(lab.post(f"/wsgi/upload?probe={probe}", data=b"y" * 1000, timeout=30))
        except requests.RequestException as exc:
            outcome.append(exc)

    try:
        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(1.0)  # nginx has connected and sent it; nobody answers
        assert not outcome
        faults.kill_gateway(cfg, target, "wsgi")  # dies holding the unanswered POST
        sender.join(30)
    finally:
        faults.start_gateway(cfg, target, "wsgi")
    assert outcome, "the POST got no answer"
    entry = access_entry(cfg, target, probe)
    assert "," not in str(entry["upstream_addr"]), entry  # one try
    answer = outcome[0]
    if target == "native":
        assert isinstance(answer, requests.Response), answer
        assert_json_error(answer, 502, "wsgi")
    elif isinstance(answer, requests.Response) and answer.status_code == 200:
        # Thawed by `docker kill`, the worker may finish the one try before it dies:
        # the POST was then served once, whole (the access log shows one try).
        assert answer.json()["bytes"] == 1000, answer.text[:200]
    elif isinstance(answer, requests.Response):
        assert_json_error(answer, 502, "wsgi")
    else:
        cut_short = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)
        assert isinstance(answer, cut_short), answer


def test_frozen_gateway_holds_requests_and_recovers_when_thawed(
    lab: Lab, cfg: LabSettings, target: str
) -> None:
    faults.freeze_gateway(cfg, target, "asgi")
    held: list[requests.Response] = []
    try:
        sender = threading.Thread(target=lambda: held.append(lab.get("/asgi/", timeout=30)))
        sender.start()
        with pytest.raises(requests.Timeout):
            requests.get(f"{lab.url}/asgi/", timeout=1.5)
    finally:
        faults.thaw_gateway(cfg, target, "asgi")
    sender.join(20)
    assert held and held[0].status_code == 200  # answered once the gateway ran again
    assert lab.get("/asgi/").status_code == 200


# -- a worker killed mid-run ------------------------------------------------------------


def test_killed_worker_is_replaced(lab: Lab, target: str) -> None:
    first = lab.get("/wsgi/")
    victim = int(first.headers["X-Gateway-Worker"])
    family = faults.worker_family(target, "wsgi", victim)
    assert family is not None and victim in family.workers
    n = len(family.workers)
    # Give every worker a slow request, then kill the victim in the middle of its one.
    with ThreadPoolExecutor(n) as pool:
        running = [pool.submit(lab.get, "/wsgi/coffee?ms=1500") for _ in range(n)]
        time.sleep(0.5)
        faults.kill_worker(target, "wsgi", victim)
        results = [f.result() for f in running]
    statuses = [r.status_code for r in results]
    # One request per worker (a sync worker takes the next only when done), so
    # the victim was in the middle of one: that one is lost, the others are not.
    assert sorted(statuses) == [200] * (n - 1) + [502], statuses
    for r in results:
        if r.status_code != 200:
            assert_json_error(r, 502, "wsgi")  # the victim's own request, not retried
    # The master starts a replacement...
    survivor = next(pid for pid in family.workers if pid != victim)
    deadline = time.monotonic() + 15
    while True:
        now = faults.worker_family(target, "wsgi", survivor)
        if now is not None and len(now.workers) == n and victim not in now.workers:
            break
        assert time.monotonic() < deadline, f"no replacement for worker {victim}: {now}"
        time.sleep(0.2)
    new = set(now.workers) - set(family.workers)
    assert len(new) == 1 and now.master == family.master
    # ...which serves: n slow requests at once occupy every worker, the new one too.
    with ThreadPoolExecutor(n) as pool:
        after = list(pool.map(lambda _: lab.get("/wsgi/coffee?ms=500"), range(n)))
    assert all(r.status_code == 200 for r in after)
    assert new & {int(r.headers["X-Gateway-Worker"]) for r in after}


# -- a handler slower than proxy_read_timeout: a small lab of its own -------------------


def free_base_port() -> int:
    """A port P with P..P+3 free on 127.0.0.1 (nginx and three gateways)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base > 60000:
            continue
        if first_free([base], 4) is not None:
            return base
    raise RuntimeError("no four free ports in a row")


@pytest.fixture(scope="module")
def short_timeout_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A native lab with proxy_read_timeout 2 s, on spare ports, down at the end."""
    if find_nginx() is None:
        pytest.fail("no nginx binary on this host for a native lab of its own: make system-deps")
    port = free_base_port()
    state = tmp_path_factory.mktemp("short-timeout-lab")
    env = os.environ | {
        "LAB_TARGET": "native",
        "LAB_PORT": str(port),
        "LAB_TLS_PORT": str(free_base_port()),  # not the suite's lab's
        "LAB_STATE_DIR": str(state),
        "LAB_PROXY_READ_TIMEOUT_S": "2",
    }
    env.pop("LAB_URL", None)

    def lab_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lab.cli", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    up = lab_cli("up")
    try:
        if up.returncode != 0:
            pytest.fail(f"own lab did not start:\n{up.stdout}\n{up.stderr}")
        yield f"http://127.0.0.1:{port}"
    finally:
        down = lab_cli("down")
        assert down.returncode == 0, down.stderr


@pytest.mark.parametrize("which", ["wsgi", "asgi"])
def test_handler_slower_than_proxy_read_timeout_is_504_naming_the_mode(
    short_timeout_lab: str, which: str
) -> None:
    started = time.monotonic()
    r = requests.get(f"{short_timeout_lab}/{which}/coffee?ms=4000", timeout=30)
    assert_json_error(r, 504, which)
    assert 1.5 < time.monotonic() - started < 4
    assert "2s" in r.json()["error"]
    # The gateway is fine afterwards.
    assert requests.get(f"{short_timeout_lab}/{which}/", timeout=10).status_code == 200


def test_cgi_script_past_the_timeout_is_504(short_timeout_lab: str) -> None:
    # The CGI runner's own deadline is the lab's timeout too: whichever of the
    # script kill and nginx's read timeout comes first answers, both 504 JSON.
    r = requests.get(f"{short_timeout_lab}/cgi/coffee?ms=4000", timeout=30)
    assert r.status_code == 504
    body = r.json()
    assert body["status"] == 504
    # Whoever answered (nginx names the mode in the body, the gateway in its header)
    # says it was CGI; a 504 that names no mode at all fails.
    assert body.get("mode") == "cgi" or r.headers.get("X-Gateway-Mode") == "cgi"
