"""The one-line models the workshop's numbers are judged against (pure).

throughput = min(requests in flight at once / time per request, CPUs / CPU time
per request); latency = clients / throughput (Little's law, for a closed loop).
How many requests can be in flight depends on the process model: a sync WSGI
worker holds one, an ASGI event loop as many as there are clients (unless a
blocking call holds the loop: then one per loop), CGI one per script up to its
cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Work:
    """What one request of a scenario costs: time waiting and time on a CPU."""

    wait_s: float
    cpu_s: float
    overlapped_in_asgi: bool = False  # the ASGI app runs the two parts at once
    blocks_the_loop: bool = False  # the ASGI handler waits with time.sleep


# The bench's scenarios (lab.workshop.bench.SCENARIOS), as work per request.
WORK: Final = {
    "io": Work(0.100, 0.0),
    "cpu": Work(0.0, 0.020),
    "mixed": Work(0.050, 0.020, overlapped_in_asgi=True),
    "blocking": Work(0.100, 0.0, blocks_the_loop=True),
}


def model_rps(
    mode: str,
    scenario: str,
    clients: int,
    workers: Mapping[str, int],
    cpus: float,
) -> float | None:
    """Requests/s the model predicts; None where it has nothing to say (hello: no
    work, so only the gateway's own cost; CGI: the process start is not in it)."""
    work = WORK.get(scenario)
    if work is None or mode not in ("wsgi", "asgi"):
        return None
    service = work.wait_s + work.cpu_s
    if mode == "asgi" and work.overlapped_in_asgi:
        service = max(work.wait_s, work.cpu_s)
    if mode == "wsgi":
        in_flight = min(workers.get("wsgi", 1), clients)
    elif work.blocks_the_loop:
        in_flight = min(workers.get("asgi", 1), clients)
    else:
        in_flight = clients
    by_wait = in_flight / service
    busy_cpus = min(cpus, workers.get(mode, 1))  # a process uses at most one CPU at a time
    by_cpu = busy_cpus / work.cpu_s if work.cpu_s > 0 else float("inf")
    return min(by_wait, by_cpu)


def little_latency_ms(clients: int, rps: float) -> float:
    """Mean time in the system of a closed loop of ``clients`` at ``rps`` (Little's law)."""
    return clients / rps * 1000 if rps > 0 else float("inf")
