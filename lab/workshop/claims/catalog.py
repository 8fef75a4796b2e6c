"""The claims ``lab claims`` tests, and how big each experiment is (pure).

Client counts are not fixed numbers: they follow the worker counts in force
(``lab status --json`` "workers") and the CPUs each gateway may use, so a claim
means the same on a 2-core laptop and a 32-core workstation. A fixed 50 or 100
clients stops telling 2 x CPUs + 1 workers from 4 x CPUs + 1 from about 23
CPUs up, and stops telling ASGI from WSGI on IO from about 33.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

IO_MS: Final = 100
CPU_MS: Final = 20
IO_PATH: Final = f"/coffee?ms={IO_MS}"
CPU_PATH: Final = f"/omelette?ms={CPU_MS}"
BLOCKING_PATH: Final = f"/blocking-coffee?ms={IO_MS}"
# The same handler with its blocking call moved to asyncio.to_thread: the control.
TO_THREAD_PATH: Final = f"{BLOCKING_PATH}&thread=1"
HELLO_PATH: Final = "/"

# Clients per sync WSGI worker where a claim needs a crowd: 4 keeps 3 of every 4
# requests waiting for a worker, so the queue, not the app, sets the numbers.
CLIENTS_PER_WORKER: Final = 4
# Requests each client should complete in a saturated run, so that what is still
# in flight at the end (one request per client, in a closed loop) is a small share
# and the percentiles are not a survivors' view.
COMPLETIONS_PER_CLIENT: Final = 10
MAX_RUN_S: Final = 60.0


@dataclass(frozen=True)
class Claim:
    id: str
    title: str
    claim: str
    experiment: str


@dataclass(frozen=True)
class Sizes:
    """The worker counts in force and the clients each experiment uses."""

    cpus: float  # CPUs the WSGI and ASGI gateways may use (the smaller of the two)
    wsgi_workers: int
    asgi_workers: int

    @property
    def crowd(self) -> int:
        """Clients for the IO-bound and blocking runs: a queue at every sync worker."""
        return CLIENTS_PER_WORKER * self.wsgi_workers

    @property
    def formula_workers(self) -> int:
        return 2 * math.ceil(self.cpus) + 1

    @property
    def four_x_workers(self) -> int:
        return 4 * math.ceil(self.cpus) + 1

    @property
    def formula_clients(self) -> int:
        """Enough clients to keep 4 x CPUs + 1 workers busy, twice over."""
        return 2 * self.four_x_workers


def saturated_run_s(clients: int, model_rps: float, floor_s: float) -> float:
    """Long enough that each client completes COMPLETIONS_PER_CLIENT requests at the
    model's throughput (Little's law: each takes clients / throughput), at least
    ``floor_s`` and at most MAX_RUN_S."""
    if model_rps <= 0:
        return floor_s
    return min(MAX_RUN_S, max(floor_s, COMPLETIONS_PER_CLIENT * clients / model_rps))


CLAIMS: Final = (
    Claim(
        "process-per-request",
        "CGI pays a process start per request",
        "Under CGI every request starts a new process, and that start is what makes CGI slow "
        "(the tutorial calls it loading the script's binary from disk, and names it forking).",
        "GET / through nginx at one client, CGI and WSGI interleaved: p50 latency of each and "
        "the distinct X-Gateway-Pid values among the CGI responses. Where the scripts run "
        "(the host natively, the CGI container under Docker): process creation (/bin/true), "
        "an empty interpreter (the real binary, -I -S), the demo script's imports "
        "(-X importtime), the whole script, and the major page faults of those processes.",
    ),
    Claim(
        "one-at-a-time",
        "A sync WSGI worker serves one request at a time",
        "A WSGI worker handles one request at a time; more requests need more workers.",
        f"GET {IO_PATH} on WSGI (gunicorn sync workers) with {CLIENTS_PER_WORKER} clients per "
        "worker: the most requests any one pid had between X-Gateway-Start and X-Gateway-End "
        "at once, and throughput against workers / sleep. Control: the same detector on a "
        "threaded WSGI worker (gthread).",
    ),
    Claim(
        "worker-formula",
        "Sync workers: 2 x cores + 1",
        "A WSGI server runs at most 2 x cores + 1 workers.",
        f"Two extra WSGI gateways on spare loopback ports (directly, not through nginx) with "
        f"2 x CPUs + 1 and 4 x CPUs + 1 workers, measured in turn; wrk at 2 x (4 x CPUs + 1) "
        f"clients on {IO_PATH} (IO-bound) and, for context, {CPU_PATH} (CPU-bound).",
    ),
    Claim(
        "asgi-wins-io",
        "ASGI wins on IO-bound load",
        "ASGI handles more IO-bound requests per unit of time than WSGI.",
        f"wrk at {CLIENTS_PER_WORKER} clients per sync worker on {IO_PATH}, ASGI and WSGI "
        "through nginx, interleaved; and one client each, where neither queues. Control, "
        "in the same interleaving: WSGI on gunicorn's threaded worker (gthread, as many "
        "processes as the sync workers) on a spare loopback port, straight from this host.",
    ),
    Claim(
        "cpu-little-difference",
        "CPU-bound load shows little difference",
        "On CPU-bound work there is likely no noticeable difference between ASGI and WSGI.",
        f"wrk on {CPU_PATH}, ASGI and WSGI through nginx, interleaved, at "
        f"{CLIENTS_PER_WORKER} clients per sync worker, long enough that each client "
        f"completes {COMPLETIONS_PER_CLIENT} requests: throughput and p99.",
    ),
    Claim(
        "blocking-hurts-asgi",
        "Blocking code makes ASGI worse",
        "Badly written async code can make ASGI slower than WSGI.",
        f"wrk at {CLIENTS_PER_WORKER} clients per sync worker: ASGI {BLOCKING_PATH} "
        f"(time.sleep inside async def) vs the same handler on asyncio.to_thread "
        f"({TO_THREAD_PATH}: the fix for a call that blocks), ASGI {IO_PATH} (asyncio.sleep) "
        f"and WSGI {IO_PATH}, interleaved.",
    ),
)
CLAIM_IDS: Final = tuple(c.id for c in CLAIMS)
