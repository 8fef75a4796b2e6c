"""Verdict rules for ``lab claims``: pure functions from recorded numbers to a verdict.

Each rule reads the numbers its experiment recorded (a mapping, as saved in
``claims.json``) and compares them with named thresholds. Nothing here measures
anything, so the rules are unit-tested on recorded results, and a report can be
re-judged from its JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

Level = Literal["holds", "holds with a caveat", "does not hold"]
HOLDS: Final[Level] = "holds"
CAVEAT: Final[Level] = "holds with a caveat"
FAILS: Final[Level] = "does not hold"

Numbers = Mapping[str, float]

# -- thresholds -----------------------------------------------------------------------

# 1. A process start must cost at least this much extra latency (CGI p50 minus
#    WSGI p50 on "hello" at one client) to count as a cost: below it the
#    difference is within run-to-run noise on a busy laptop.
MIN_PROCESS_COST_MS: Final = 2.0
# 1. Reading the interpreter's binary (from the page cache) taking less than this
#    share of the per-request overhead means the cost is not "loading a binary
#    from disk" but starting a fresh interpreter (fork, exec, init, imports).
BINARY_READ_SHARE: Final = 0.10

# 2. Measured throughput within +-this share of workers / IO time is "as if each
#    worker served one request at a time" (the rest is proxy and scheduling cost).
THROUGHPUT_TOLERANCE: Final = 0.25

# 3. 4 x cores + 1 workers giving at least this much more IO-bound throughput than
#    2 x cores + 1 means the formula is not a ceiling.
MIN_WORKER_GAIN: Final = 0.10

# 4. ASGI "wins" on IO-bound load when it serves at least this many times WSGI's
#    requests per second; a win smaller than that (but > 1 + NOISE) is a caveat.
CLEAR_WIN_RATIO: Final = 1.5
NOISE: Final = 0.10

# 5. "Little difference" on CPU-bound load: ASGI/WSGI throughput within +-this share.
LITTLE_DIFFERENCE: Final = 0.20
# 5. Beyond LITTLE_DIFFERENCE but within this share: a difference, not a large one.
MODERATE_DIFFERENCE: Final = 0.50

# 6. Blocking code "makes ASGI worse" when /blocking-coffee serves at most this
#    share of ASGI's own /coffee throughput.
BLOCKED_SHARE: Final = 0.5


@dataclass(frozen=True)
class Verdict:
    level: Level
    why: str


# -- rules ----------------------------------------------------------------------------


def process_per_request(n: Numbers) -> Verdict:
    """requests, distinct_pids, cgi_p50_ms, wsgi_p50_ms, binary_read_ms, interpreter_start_ms."""
    if n["distinct_pids"] < n["requests"]:
        return Verdict(
            FAILS,
            f"{n['requests']:.0f} CGI requests ran in only {n['distinct_pids']:.0f} processes, "
            "so processes were reused.",
        )
    overhead = n["cgi_p50_ms"] - n["wsgi_p50_ms"]
    if overhead < MIN_PROCESS_COST_MS:
        return Verdict(
            FAILS,
            f"every request got a new process, but CGI was only {overhead:.1f} ms slower than "
            f"WSGI (threshold {MIN_PROCESS_COST_MS} ms).",
        )
    if n["binary_read_ms"] < BINARY_READ_SHARE * overhead:
        return Verdict(
            CAVEAT,
            f"each request got a new process and cost {overhead:.0f} ms more than WSGI, but "
            f"reading the interpreter binary takes {n['binary_read_ms']:.2f} ms (it is in the "
            f"page cache); the cost is starting a fresh interpreter (fork, exec, init, imports: "
            f"{n['interpreter_start_ms']:.0f} ms for an empty one), not loading from disk.",
        )
    return Verdict(
        HOLDS,
        f"each request got a new process and cost {overhead:.0f} ms more than WSGI.",
    )


def one_at_a_time(n: Numbers) -> Verdict:
    """max_overlap, workers, io_ms, rps."""
    if n["max_overlap"] > 1:
        return Verdict(
            FAILS,
            f"a WSGI worker had {n['max_overlap']:.0f} requests in its app code at once.",
        )
    expected = n["workers"] * 1000 / n["io_ms"]
    ratio = n["rps"] / expected if expected else 0.0
    if abs(ratio - 1) <= THROUGHPUT_TOLERANCE:
        return Verdict(
            HOLDS,
            f"no worker ever overlapped two requests, and {n['rps']:.1f} req/s is "
            f"{ratio:.2f} x the {expected:.0f} req/s that {n['workers']:.0f} workers doing one "
            f"{n['io_ms']:.0f} ms wait at a time allow.",
        )
    return Verdict(
        CAVEAT,
        f"no worker ever overlapped two requests, but {n['rps']:.1f} req/s is {ratio:.2f} x "
        f"the {expected:.0f} req/s one-at-a-time predicts, so something else also limits it.",
    )


def worker_formula(n: Numbers) -> Verdict:
    """cores, workers_formula, workers_4x, io_rps_1, io_rps_formula, io_rps_4x."""
    gain = n["io_rps_4x"] / n["io_rps_formula"] - 1 if n["io_rps_formula"] else 0.0
    if gain >= MIN_WORKER_GAIN:
        return Verdict(
            FAILS,
            f"as a maximum it does not: {n['workers_4x']:.0f} workers served {gain:.0%} more "
            f"IO-bound requests/s than {n['workers_formula']:.0f}; waiting workers use no CPU, "
            "so 2 x cores + 1 is a starting point for mixed load, not a ceiling.",
        )
    return Verdict(
        HOLDS,
        f"{n['workers_4x']:.0f} workers served only {gain:+.0%} requests/s compared with "
        f"{n['workers_formula']:.0f}, so more workers than the formula did not help here.",
    )


def asgi_wins_io(n: Numbers) -> Verdict:
    """asgi_rps, wsgi_rps, concurrency."""
    ratio = n["asgi_rps"] / n["wsgi_rps"] if n["wsgi_rps"] else float("inf")
    if ratio >= CLEAR_WIN_RATIO:
        return Verdict(
            HOLDS,
            f"at {n['concurrency']:.0f} clients ASGI served {ratio:.1f} x WSGI's requests/s: "
            "its workers keep every wait in flight, WSGI's queue behind a fixed worker count.",
        )
    if ratio >= 1 + NOISE:
        return Verdict(
            CAVEAT,
            f"ASGI served {ratio:.2f} x WSGI's requests/s: ahead, but by less than "
            f"{CLEAR_WIN_RATIO} x at this concurrency.",
        )
    return Verdict(FAILS, f"ASGI served only {ratio:.2f} x WSGI's requests/s on IO-bound load.")


def cpu_little_difference(n: Numbers) -> Verdict:
    """asgi_rps, wsgi_rps."""
    ratio = n["asgi_rps"] / n["wsgi_rps"] if n["wsgi_rps"] else float("inf")
    if abs(ratio - 1) <= LITTLE_DIFFERENCE:
        return Verdict(
            HOLDS,
            f"ASGI served {ratio:.2f} x WSGI's requests/s: both are limited by the same cores.",
        )
    if abs(ratio - 1) <= MODERATE_DIFFERENCE:
        return Verdict(
            CAVEAT,
            f"ASGI served {ratio:.2f} x WSGI's requests/s: a difference, from process counts "
            "and overheads rather than from async, since the CPU is the limit either way.",
        )
    return Verdict(FAILS, f"ASGI served {ratio:.2f} x WSGI's requests/s on CPU-bound load.")


def blocking_hurts_asgi(n: Numbers) -> Verdict:
    """asgi_blocking_rps, asgi_coffee_rps, wsgi_coffee_rps."""
    share = n["asgi_blocking_rps"] / n["asgi_coffee_rps"] if n["asgi_coffee_rps"] else 1.0
    if share > BLOCKED_SHARE:
        return Verdict(
            FAILS,
            f"/blocking-coffee kept {share:.0%} of ASGI's /coffee throughput.",
        )
    if n["asgi_blocking_rps"] < n["wsgi_coffee_rps"]:
        return Verdict(
            HOLDS,
            f"time.sleep in async def cut ASGI to {share:.0%} of its /coffee throughput and "
            f"below WSGI ({n['asgi_blocking_rps']:.1f} vs {n['wsgi_coffee_rps']:.1f} req/s): "
            "each blocked event loop serves one request at a time, and there are fewer loops "
            "than WSGI workers.",
        )
    return Verdict(
        CAVEAT,
        f"blocking cut ASGI to {share:.0%} of its /coffee throughput, but it still matched or "
        "beat WSGI, because it has at least as many event loops as WSGI has workers.",
    )


RULES: Final[dict[str, Callable[[Numbers], Verdict]]] = {
    "process-per-request": process_per_request,
    "one-at-a-time": one_at_a_time,
    "worker-formula": worker_formula,
    "asgi-wins-io": asgi_wins_io,
    "cpu-little-difference": cpu_little_difference,
    "blocking-hurts-asgi": blocking_hurts_asgi,
}


def judge(claim_id: str, numbers: Numbers) -> Verdict:
    return RULES[claim_id](numbers)
