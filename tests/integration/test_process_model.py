"""The concurrency model of each mode, read from the trace headers alone.

CGI: a new process per request. WSGI: a sync worker serves one request at a
time, so requests never overlap inside one pid. ASGI: one worker has many
requests in flight, so requests overlap inside one pid.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.support.lab import Lab, workers_in_force

Interval = tuple[float, float]


def fire(lab: Lab, path: str, n: int) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=n) as pool:
        responses = list(pool.map(lambda _: lab.get(path, timeout=60), range(n)))
    for r in responses:
        assert r.status_code == 200, r.text
    return responses


def lanes(responses: list[requests.Response]) -> dict[str, list[Interval]]:
    by_pid: dict[str, list[Interval]] = defaultdict(list)
    for r in responses:
        start, end = float(r.headers["X-Gateway-Start"]), float(r.headers["X-Gateway-End"])
        by_pid[r.headers["X-Gateway-Pid"]].append((start, end))
    return by_pid


def max_overlap(intervals: list[Interval]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def test_max_overlap_counts_concurrent_intervals() -> None:
    assert max_overlap([(0, 1), (1, 2)]) == 1  # touching is not overlapping
    assert max_overlap([(0, 2), (1, 3), (1.5, 4)]) == 3


def test_cgi_runs_a_new_process_per_request(lab: Lab) -> None:
    responses = [lab.get("/cgi/") for _ in range(6)]
    pids = {r.headers["X-Gateway-Pid"] for r in responses}
    workers = {r.headers["X-Gateway-Worker"] for r in responses}
    assert len(pids) == 6, "every CGI request runs in a fresh process"
    assert not pids & workers, "the script is not the process that spawned it"


def test_cgi_scripts_run_side_by_side(lab: Lab) -> None:
    by_pid = lanes(fire(lab, "/cgi/coffee?ms=300", 8))
    assert len(by_pid) == 8
    assert max_overlap([iv for ivs in by_pid.values() for iv in ivs]) > 1


def test_cgi_queues_the_labs_heaviest_load_instead_of_refusing_it(lab: Lab) -> None:
    """100 clients at once, the most the lab's own load runs use (lab bench's top
    recorded level, benchmarks/servers.py's IO level): past the script cap they
    wait their turn (X-Gateway-Queue-Ms), and none is refused with a 503."""
    responses = fire(lab, "/cgi/coffee?ms=100", 100)  # every answer a 200
    waited = [float(r.headers["X-Gateway-Queue-Ms"]) for r in responses]
    assert any(ms > 0 for ms in waited), "the script cap was never reached"


def test_wsgi_sync_worker_serves_one_request_at_a_time(lab: Lab) -> None:
    by_pid = lanes(fire(lab, "/wsgi/coffee?ms=200", 12))
    assert any(len(ivs) > 1 for ivs in by_pid.values()), "12 requests, fewer workers"
    for pid, intervals in by_pid.items():
        assert max_overlap(intervals) == 1, f"worker {pid} overlapped requests"


def test_asgi_worker_has_many_requests_in_flight(lab: Lab) -> None:
    by_pid = lanes(fire(lab, "/asgi/coffee?ms=300", 12))
    assert max(max_overlap(ivs) for ivs in by_pid.values()) > 1


def test_asgi_blocking_coffee_serialises_the_loop(lab: Lab) -> None:
    """time.sleep inside async def: requests in one worker stop overlapping."""
    # More requests at once than ASGI workers, so some worker must take several:
    # only then does "no overlap inside a worker" say anything about its loop.
    n = max(8, 2 * workers_in_force(lab)["asgi"] + 2)
    by_pid = lanes(fire(lab, "/asgi/blocking-coffee?ms=150", n))
    assert any(len(ivs) > 1 for ivs in by_pid.values()), f"{n} requests, fewer workers"
    for pid, intervals in by_pid.items():
        assert max_overlap(intervals) == 1, f"worker {pid} overlapped blocked requests"


def test_asgi_blocking_call_on_a_thread_frees_the_loop(lab: Lab) -> None:
    """The same time.sleep moved to asyncio.to_thread (?thread=1): requests overlap again."""
    n = max(8, 2 * workers_in_force(lab)["asgi"] + 2)
    by_pid = lanes(fire(lab, "/asgi/blocking-coffee?ms=300&thread=1", n))
    assert max(max_overlap(ivs) for ivs in by_pid.values()) > 1
