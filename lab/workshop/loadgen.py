"""A closed-loop load generator that keeps every response's trace headers.

C clients, each a thread with its own ``requests.Session`` (one keep-alive
connection), send a request, wait for the answer, record it, and send the next,
until N requests are done or the duration is up. Each answer becomes a
``Sample``: client-side latency, status, and the gateway's trace headers.

Why threads and requests, not httpx on asyncio: measured on the lab's 2-core
machine against nginx's own ``/nginx-health``, threads with requests Sessions
did about 900-1100 requests/s at 1-50 clients, httpx's AsyncClient 250-800 (it
got slower as clients were added). Both are far below wrk, which is why
``lab bench`` uses wrk for throughput numbers and prints the ratio every run.
This generator is for runs that need every request's trace (timelines, overlap,
pids per request), where a few hundred requests per second is plenty.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

from lab.workshop.analysis import Sample, Summary, parse_steps, parse_trace, summarize

DEFAULT_TIMEOUT_S = 30.0  # nginx's proxy_read_timeout: past it nginx answers 504 anyway


@dataclass(frozen=True)
class LoadResult:
    url: str
    concurrency: int
    samples: list[Sample]
    wall_s: float

    def summary(self) -> Summary:
        return summarize(self.samples, self.wall_s)


def _session() -> requests.Session:
    session = requests.Session()
    # One client, one connection: a pool of one, reused for every request (keep-alive).
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
    session.mount("http://", adapter)
    return session


class _Budget:
    """Shared between clients: may another request start?"""

    def __init__(self, requests_total: int | None, deadline: float | None) -> None:
        self._left = requests_total
        self._deadline = deadline
        self._lock = threading.Lock()

    def take(self) -> bool:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return False
        if self._left is None:
            return True
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True


def one_request(
    session: requests.Session, url: str, headers: Mapping[str, str], timeout_s: float
) -> Sample:
    sent = time.time()
    t0 = time.perf_counter()
    try:
        response = session.get(url, headers=dict(headers), timeout=timeout_s)
        response.content  # noqa: B018 -- read the whole body before stopping the clock
    except requests.RequestException as exc:
        return Sample(sent, time.perf_counter() - t0, 0, error=type(exc).__name__)
    latency_s = time.perf_counter() - t0
    # The steps the app reports in its body (/breakfast), parsed after the clock stopped.
    steps = parse_steps(response.headers.get("Content-Type", ""), response.content)
    return Sample(sent, latency_s, response.status_code, parse_trace(response.headers), steps=steps)


def run_load(
    url: str,
    concurrency: int,
    *,
    requests_total: int | None = None,
    duration_s: float | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_sample: Callable[[Sample], None] | None = None,
) -> LoadResult:
    """GET ``url`` from ``concurrency`` clients until ``requests_total`` or ``duration_s``.

    At least one of the two limits is required, so every run ends. ``on_sample``
    is called from the client threads after each request (progress bars).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if requests_total is None and duration_s is None:
        raise ValueError("give requests_total, duration_s or both, so the run ends")
    deadline = time.monotonic() + duration_s if duration_s is not None else None
    budget = _Budget(requests_total, deadline)
    samples: list[Sample] = []
    lock = threading.Lock()
    sent_headers = dict(headers or {})

    def client() -> None:
        with _session() as session:
            while budget.take():
                sample = one_request(session, url, sent_headers, timeout_s)
                with lock:
                    samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall_s = time.perf_counter() - t0
    samples.sort(key=lambda s: s.sent)
    return LoadResult(url, concurrency, samples, wall_s)


SETTLE_FAST_MS = 50.0  # a health check answered this fast: nothing is queued ahead of it
SETTLE_DEADLINE_S = 60.0


def wait_idle(
    probe_url: str, fast_ms: float = SETTLE_FAST_MS, deadline_s: float = SETTLE_DEADLINE_S
) -> bool:
    """Wait until ``probe_url`` finds nothing queued twice in a row (requests left
    queued by the last run have drained), so one measurement does not pay for the
    previous. Nothing queued: a CGI answer that waited 0 ms for its script slot
    (X-Gateway-Queue-Ms; probe a script, ``idle_probe``), else an answer within
    ``fast_ms``. A failure (refused, 5xx) is not idle, however fast it came: a
    gateway knocked over by the last cell must not look ready. False if it never
    was within ``deadline_s``.
    """
    end = time.monotonic() + deadline_s
    fast_in_a_row = 0
    with _session() as session:
        while time.monotonic() < end:
            sample = one_request(session, probe_url, {}, timeout_s=deadline_s)
            waited = sample.trace.queue_ms
            quick = sample.latency_s * 1000 < fast_ms if waited is None else waited == 0
            fast_in_a_row = fast_in_a_row + 1 if sample.ok and quick else 0
            if fast_in_a_row >= 2:
                return True
            time.sleep(0.05)
    return False


def idle_probe(mode_base: str, mode: str) -> str:
    """What ``wait_idle`` asks under ``mode_base`` (a mode's route): CGI's /healthz
    is answered before the script queue, so there a script is run (``/``) and its
    X-Gateway-Queue-Ms read; elsewhere /healthz waits behind what is queued."""
    return f"{mode_base.rstrip('/')}/" if mode == "cgi" else f"{mode_base.rstrip('/')}/healthz"
