"""Verdict rules for ``lab claims``: pure functions from recorded numbers to a verdict.

Each claim has a one-line model that the workshop states in prose:

* throughput = min(workers / service time, CPUs / CPU time per request);
* latency = clients / throughput (Little's law, for a closed loop of clients);
* a blocked event loop serves one request at a time: loops / sleep time; the same
  call on ``asyncio.to_thread`` serves min(clients, loops x threads) / sleep time.

Each rule compares what was measured with that model (measured / model) and
with the other side of the comparison, with thresholds given as fractions of
the model. Repeats are interleaved A/B/A/B by the experiments and recorded as
lists; the rules judge the median and look at the range. When the evidence
cannot carry a verdict (errors, a busy machine at the start, a very uneven
split of requests over processes, or a range that straddles a threshold) the
verdict is "inconclusive: rerun", never a guess.

Nothing here measures anything, so the rules are unit-tested on recorded and
synthetic numbers, and a report is re-judged from its JSON (``--rejudge``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Final

from lab.workshop.claims.evidence import (
    CAVEAT,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    MIN_COMPLETIONS_PER_CLIENT,
    MIN_PID_BALANCE,
    Level,
    Numbers,
    Verdict,
    fmt_spread,
    med,
    noise,
    paired,
    rerun,
    spread,
    straddles,
    values,
)

__all__ = [
    "CAVEAT",
    "FAILS",
    "HOLDS",
    "INCONCLUSIVE",
    "MIN_COMPLETIONS_PER_CLIENT",
    "MIN_PID_BALANCE",
    "RULES",
    "Level",
    "Verdict",
    "judge",
]

# -- thresholds, as fractions of a model ------------------------------------------------

# Measured throughput at least this share of the model (and at most 1 / this share
# above it) counts as "the model explains it".
MODEL_FLOOR: Final = 0.75
MODEL_CEILING: Final = 1.25
# 1. The script run alone (spawn, interpreter, imports, work) must account for at
#    least this share of CGI's extra latency for "the process start is the cost".
PROCESS_SHARE: Final = 0.5
# 1. Fewer major page faults (pages read from disk) than this per process: the
#    start did not wait on the disk in any way that matters next to its milliseconds.
MAX_FAULTS_PER_PROCESS: Final = 1.0
# 3. More workers help when they bring at least this share of the gain the model
#    predicts (min(workers, clients) / sleep).
GAIN_SHARE: Final = 0.5
# 4. ASGI "wins" when its lead over WSGI is at least this share of the lead the
#    model predicts (clients / workers when every ASGI wait overlaps).
WIN_SHARE: Final = 0.5
# 5. "Little difference": ASGI / WSGI throughput within 1 +- this.
LITTLE_DIFFERENCE: Final = 0.20
MODERATE_DIFFERENCE: Final = 0.50
# 5. A tail (p99) this many times the other side's is a difference worth a caveat.
TAIL_RATIO: Final = 2.0
# 5, 6. "Worse" or "better" needs a lead of at least this share.
NOISE: Final = 0.10
# -- rules ----------------------------------------------------------------------------


def process_per_request(n: Numbers) -> Verdict:
    """requests, distinct_pids, cgi_p50_ms[], wsgi_p50_ms[], spawn_ms, interpreter_ms,
    imports_ms, script_ms, major_faults, probe_processes (+ errors, load_1m_start, machine_cpus)."""
    overheads = [
        c - w for c, w in zip(values(n, "cgi_p50_ms"), values(n, "wsgi_p50_ms"), strict=False)
    ]
    script = med(n, "script_ms")
    # Model: CGI = WSGI + one run of the script as a fresh process.
    ratios = paired(values(n, "cgi_p50_ms"), [w + script for w in values(n, "wsgi_p50_ms")])
    model = {"cgi_p50 / (wsgi_p50 + script run)": spread(ratios)}
    if reasons := noise(n):
        return rerun(reasons, model)
    if med(n, "distinct_pids") < med(n, "requests"):
        return Verdict(
            FAILS,
            f"{med(n, 'requests'):.0f} CGI requests ran in only "
            f"{med(n, 'distinct_pids'):.0f} processes, so processes were reused.",
            model,
        )
    shares = [script / o if o > 0 else 0.0 for o in overheads]
    if straddles(shares, PROCESS_SHARE):
        return rerun(
            [f"the script's share of CGI's extra latency straddles {PROCESS_SHARE}"], model
        )
    parts = (
        f"process creation {med(n, 'spawn_ms'):.1f} ms, an empty interpreter "
        f"{med(n, 'interpreter_ms'):.1f} ms, the script's imports {med(n, 'imports_ms'):.1f} ms, "
        f"the whole script {script:.1f} ms"
    )
    overhead = statistics.median(overheads)
    if statistics.median(shares) < PROCESS_SHARE:
        return Verdict(
            FAILS,
            f"each request got a new process, but running the script alone ({script:.1f} ms) "
            f"explains less than {PROCESS_SHARE:.0%} of CGI's {overhead:.1f} ms extra latency.",
            model,
        )
    # The other side of the model: a script that alone takes much longer than the
    # CGI requests that run it was timed under other load, and explains nothing.
    if statistics.median(ratios) < MODEL_FLOOR:
        return rerun(
            [
                f"the script run alone ({script:.1f} ms) took longer than CGI's whole "
                f"request ({med(n, 'cgi_p50_ms'):.1f} ms): the parts were timed under "
                "other load, so they cannot say where the request's time went"
            ],
            model,
        )
    if "fcgiwrap_p50_ms" in n:
        fcgiwrap = med(n, "fcgiwrap_p50_ms")
        model["fcgiwrap_p50 / (wsgi_p50 + script run)"] = spread(
            paired(values(n, "fcgiwrap_p50_ms"), [w + script for w in values(n, "wsgi_p50_ms")])
        )
        parts += (
            f"; behind nginx + fcgiwrap, CGI's usual way, the same script took "
            f"{fcgiwrap:.1f} ms against the lab runner's {med(n, 'cgi_p50_ms'):.1f} ms"
        )
    faults = med(n, "major_faults")
    per_process = faults / med(n, "probe_processes")
    if per_process < MAX_FAULTS_PER_PROCESS:
        return Verdict(
            CAVEAT,
            f"a new process per request holds: CGI cost {overhead:.1f} ms more than WSGI, and "
            f"the script run alone accounts for it ({parts}). Loading from disk does not: "
            f"{faults:.0f} major page faults in {med(n, 'probe_processes'):.0f} processes, so "
            "next to nothing was read from disk; the cost is starting an interpreter and "
            "importing modules, every time.",
            model,
        )
    return Verdict(
        HOLDS,
        f"each request got a new process and cost {overhead:.1f} ms more than WSGI ({parts}); "
        f"the script processes also had {per_process:.1f} major page faults each (pages read "
        "from disk).",
        model,
    )


def one_at_a_time(n: Numbers) -> Verdict:
    """workers, io_ms, max_overlap, rps[], control_max_overlap (a threaded WSGI worker)."""
    expected = med(n, "workers") * 1000 / med(n, "io_ms")
    ratios = [r / expected for r in values(n, "rps")]
    model = {"rps / (workers / sleep)": spread(ratios)}
    if reasons := noise(n):
        return rerun(reasons, model)
    if med(n, "max_overlap") > 1:
        return Verdict(
            FAILS,
            f"a sync WSGI worker had {med(n, 'max_overlap'):.0f} requests in its app code at once.",
            model,
        )
    if med(n, "control_max_overlap") <= 1:
        return rerun(
            [
                "the same detector saw no overlap on the threaded (gthread) control either, so "
                "it may be blind to overlap"
            ],
            model,
        )
    if straddles(ratios, MODEL_FLOOR) or straddles(ratios, MODEL_CEILING):
        return rerun(["measured / model straddles a threshold over the repeats"], model)
    ratio = statistics.median(ratios)
    control = (
        f"the same detector saw {med(n, 'control_max_overlap'):.0f} requests at once in "
        "one threaded WSGI worker (gthread), so this is the sync worker's property, not WSGI's"
    )
    if ratio < MODEL_FLOOR:
        return Verdict(
            CAVEAT,
            f"no sync worker ever overlapped two requests ({control}), but throughput is only "
            f"{ratio:.2f} x workers / sleep: something else also limits it.",
            model,
        )
    if ratio > MODEL_CEILING:
        return Verdict(
            CAVEAT,
            f"no sync worker ever overlapped two requests ({control}), but throughput is "
            f"{ratio:.2f} x workers / sleep: more capacity than the workers counted.",
            model,
        )
    return Verdict(
        HOLDS,
        f"for gunicorn's sync worker: none ever overlapped two requests, and throughput is "
        f"{ratio:.2f} x the {expected:.0f} req/s that {med(n, 'workers'):.0f} workers doing "
        f"one {med(n, 'io_ms'):.0f} ms wait at a time allow; {control}.",
        model,
    )


def worker_formula(n: Numbers) -> Verdict:
    """cpus, workers_formula, workers_4x, clients, io_ms, io_rps_formula[], io_rps_4x[]."""
    wf, w4, clients = med(n, "workers_formula"), med(n, "workers_4x"), med(n, "clients")
    predicted = min(w4, clients) / min(wf, clients) - 1
    gains = [g - 1 for g in paired(values(n, "io_rps_4x"), values(n, "io_rps_formula"))]
    shares = [g / predicted if predicted > 0 else 0.0 for g in gains]
    io_s = med(n, "io_ms") / 1000
    model = {
        "formula rps / (workers / sleep)": spread(
            [r * io_s / wf for r in values(n, "io_rps_formula")]
        ),
        "4x rps / (workers / sleep)": spread([r * io_s / w4 for r in values(n, "io_rps_4x")]),
        "measured gain / predicted gain": spread(shares),
    }
    if reasons := noise(n):
        return rerun(reasons, model)
    if predicted <= 0:
        return rerun([f"{clients:.0f} clients cannot tell {wf:.0f} from {w4:.0f} workers"], model)
    if straddles(shares, GAIN_SHARE):
        return rerun([f"the gain straddles {GAIN_SHARE:.0%} of the predicted gain"], model)
    gain, share = statistics.median(gains), statistics.median(shares)
    if share >= GAIN_SHARE:
        return Verdict(
            FAILS,
            f"as a maximum it does not: {w4:.0f} workers served {gain:.0%} more IO-bound "
            f"requests/s than {wf:.0f} ({share:.2f} of the {predicted:.0%} the model predicts); "
            "waiting workers use no CPU, so 2 x CPUs + 1 is a starting point, not a ceiling.",
            model,
        )
    return Verdict(
        HOLDS,
        f"{w4:.0f} workers served only {gain:+.0%} requests/s compared with {wf:.0f}, "
        f"{share:.2f} of the {predicted:.0%} the model predicts: more workers did not help here.",
        model,
    )


def asgi_wins_io(n: Numbers) -> Verdict:
    """clients, io_ms, wsgi_workers, asgi_rps[], wsgi_rps[] (+ asgi_p50_c1_ms, wsgi_p50_c1_ms)."""
    io_s = med(n, "io_ms") / 1000
    clients, workers = med(n, "clients"), med(n, "wsgi_workers")
    predicted = clients / min(workers, clients)
    ratios = paired(values(n, "asgi_rps"), values(n, "wsgi_rps"))
    model = {
        "asgi rps / (clients / sleep)": spread([r * io_s / clients for r in values(n, "asgi_rps")]),
        "wsgi rps / (workers / sleep)": spread([r * io_s / workers for r in values(n, "wsgi_rps")]),
        "asgi/wsgi / predicted": spread([r / predicted for r in ratios]),
    }
    if reasons := noise(n):
        return rerun(reasons, model)
    threshold = 1 + WIN_SHARE * (predicted - 1)
    if straddles(ratios, threshold):
        return rerun([f"ASGI / WSGI straddles {threshold:.2f} over the repeats"], model)
    ratio = statistics.median(ratios)
    control = ""
    if "gthread_rps" in n:
        threads = paired(values(n, "gthread_rps"), values(n, "asgi_rps"))
        model["gthread/asgi"] = spread(threads)
        control = (
            " WSGI on threads (gthread, as many processes as the sync workers, straight at "
            f"a spare gateway, not through nginx) served {fmt_spread(spread(threads))} x "
            "ASGI's requests/s (median, lowest-highest)"
        )
        if "asgi_rss_mib" in n and med(n, "asgi_rss_mib") > 0:
            control += (
                f", with {med(n, 'gthread_rss_mib'):.0f} MiB per process against ASGI's "
                f"{med(n, 'asgi_rss_mib'):.0f} MiB"
            )
        control += "."
    if ratio >= threshold:
        return Verdict(
            HOLDS,
            f"against gunicorn's sync workers: at {clients:.0f} clients ASGI served "
            f"{ratio:.1f} x their requests/s (the model: {predicted:.1f} x, clients / sync "
            "workers): each wait is in flight at once in an event loop, while the sync "
            "workers' requests queue. The gain is cheap concurrency per process, not faster "
            f"requests.{control}",
            model,
        )
    if ratio >= 1 + NOISE:
        return Verdict(
            CAVEAT,
            f"ASGI served {ratio:.2f} x WSGI's requests/s: ahead, but by less than half of the "
            f"{predicted:.1f} x the model predicts.",
            model,
        )
    return Verdict(
        FAILS, f"ASGI served only {ratio:.2f} x WSGI's requests/s on IO-bound load.", model
    )


def cpu_little_difference(n: Numbers) -> Verdict:
    """clients, cpu_ms, cpus, asgi_workers, wsgi_workers, asgi_rps[], wsgi_rps[],
    asgi_p99_ms[], wsgi_p99_ms[], asgi_completions_per_client[], asgi_pid_balance[]."""
    cpu_s = med(n, "cpu_ms") / 1000
    cpus = med(n, "cpus")

    def capacity(workers: float) -> float:
        return min(workers, cpus) / cpu_s

    ratios = paired(values(n, "asgi_rps"), values(n, "wsgi_rps"))
    tails = paired(values(n, "asgi_p99_ms"), values(n, "wsgi_p99_ms"))
    model = {
        "asgi rps / (CPUs / CPU time)": spread(
            [r / capacity(med(n, "asgi_workers")) for r in values(n, "asgi_rps")]
        ),
        "wsgi rps / (CPUs / CPU time)": spread(
            [r / capacity(med(n, "wsgi_workers")) for r in values(n, "wsgi_rps")]
        ),
        "asgi/wsgi p99": spread(tails),
    }
    if reasons := noise(n, ("asgi_pid_balance",)):
        return rerun(reasons, model)
    lo, hi = 1 - LITTLE_DIFFERENCE, 1 + LITTLE_DIFFERENCE
    if straddles(ratios, lo) or straddles(ratios, hi):
        return rerun([f"ASGI / WSGI throughput straddles {lo:.2f} or {hi:.2f}"], model)
    ratio = statistics.median(ratios)
    if abs(ratio - 1) > MODERATE_DIFFERENCE:
        return Verdict(
            FAILS, f"ASGI served {ratio:.2f} x WSGI's requests/s on CPU-bound load.", model
        )
    if abs(ratio - 1) > LITTLE_DIFFERENCE:
        return Verdict(
            CAVEAT,
            f"ASGI served {ratio:.2f} x WSGI's requests/s: a difference, from process counts "
            "and overheads rather than from async, since the CPUs are the limit either way.",
            model,
        )
    completions = min(
        values(n, "asgi_completions_per_client") + values(n, "wsgi_completions_per_client")
    )
    if completions < MIN_COMPLETIONS_PER_CLIENT:
        return rerun(
            [
                f"throughput agrees ({ratio:.2f} x), but only {completions:.1f} requests per "
                "client completed, so the tails are lower bounds: run longer"
            ],
            model,
        )
    if straddles(tails, TAIL_RATIO) or straddles([1 / t for t in tails if t], TAIL_RATIO):
        return rerun([f"the p99 ratio straddles {TAIL_RATIO} x over the repeats"], model)
    tail = statistics.median(tails)
    if tail >= TAIL_RATIO or (tail and 1 / tail >= TAIL_RATIO):
        return Verdict(
            CAVEAT,
            f"for throughput it holds ({ratio:.2f} x WSGI's requests/s, both near CPUs / CPU "
            f"time), but the tail differs: ASGI's p99 is {tail:.1f} x WSGI's. An event loop "
            "accepts every connection and serves them in loop order; sync workers take them "
            "first come, first served from the kernel's queue.",
            model,
        )
    return Verdict(
        HOLDS,
        f"ASGI served {ratio:.2f} x WSGI's requests/s and its p99 is {tail:.1f} x WSGI's: "
        "both are limited by the CPUs the gateways may use.",
        model,
    )


def blocking_hurts_asgi(n: Numbers) -> Verdict:
    """io_ms, asgi_workers, wsgi_workers, clients, threads, asgi_blocking_rps[],
    asgi_fixed_rps[], asgi_coffee_rps[], wsgi_coffee_rps[] (+ asgi_fixed_pid_balance[]).

    Two models: blocked, a loop serves one sleep at a time (loops / sleep); fixed,
    the same call on ``asyncio.to_thread`` sleeps on the default executor's
    threads, so min(clients, loops x threads) sleeps at once.
    """
    io_s = med(n, "io_ms") / 1000
    loops, workers = med(n, "asgi_workers"), med(n, "wsgi_workers")
    at_once = min(med(n, "clients"), loops * med(n, "threads"))
    blocked, fixed = values(n, "asgi_blocking_rps"), values(n, "asgi_fixed_rps")
    per_loop = [r * io_s / loops for r in blocked]
    recovered = [r * io_s / at_once for r in fixed]
    model = {
        "blocking rps / (loops / sleep)": spread(per_loop),
        "to_thread rps / (min(clients, loops x threads) / sleep)": spread(recovered),
        "to_thread / blocking": spread(paired(fixed, blocked)),
        "blocking / wsgi": spread(paired(blocked, values(n, "wsgi_coffee_rps"))),
        "blocking / asgi coffee": spread(paired(blocked, values(n, "asgi_coffee_rps"))),
    }
    if reasons := noise(n, ("asgi_fixed_pid_balance",)):
        return rerun(reasons, model)
    if straddles(per_loop, MODEL_CEILING):
        return rerun(["blocking throughput straddles the one-request-per-loop model"], model)
    if statistics.median(per_loop) > MODEL_CEILING:
        return Verdict(
            FAILS,
            f"/blocking-coffee served {statistics.median(per_loop):.2f} x loops / sleep: the "
            "loops were not blocked.",
            model,
        )
    # The control: the same handler with the blocking call on a thread.
    if straddles(recovered, MODEL_FLOOR):
        return rerun([f"the asyncio.to_thread control straddles {MODEL_FLOOR} x its model"], model)
    fix = (
        f"the same handler with asyncio.to_thread served {statistics.median(fixed):.1f} req/s, "
        f"{statistics.median(recovered):.2f} x its model (min({med(n, 'clients'):.0f} clients, "
        f"{loops:.0f} loops x {med(n, 'threads'):.0f} threads) / sleep)"
    )
    if statistics.median(recovered) < MODEL_FLOOR:
        return Verdict(
            CAVEAT,
            f"time.sleep in async def makes each loop serve one request at a time "
            f"({statistics.median(per_loop):.2f} x loops / sleep), but the control did not "
            f"recover: {fix}, so something besides the blocked loop limits this handler.",
            model,
        )
    vs_wsgi = paired(blocked, values(n, "wsgi_coffee_rps"))
    worse = 1 - NOISE
    if straddles(vs_wsgi, worse):
        return rerun([f"blocking ASGI / WSGI straddles {worse:.2f}"], model)
    share = statistics.median(vs_wsgi)
    counts = f"{loops:.0f} event loops vs {workers:.0f} sync workers"
    if share < worse:
        return Verdict(
            HOLDS,
            f"time.sleep in async def makes each loop serve one request at a time "
            f"({statistics.median(per_loop):.2f} x loops / sleep), so ASGI fell to {share:.2f} "
            f"x WSGI's /coffee throughput ({counts}); {fix}. The fix is an await that "
            "suspends: asyncio.sleep, or asyncio.to_thread for a call that blocks.",
            model,
        )
    return Verdict(
        CAVEAT,
        f"blocking makes each loop serve one request at a time, but with {counts} ASGI still "
        f"served {share:.2f} x WSGI: it hurts ASGI, it does not make it worse than WSGI here; "
        f"{fix}.",
        model,
    )


RULES: Final[dict[str, Callable[[Numbers], Verdict]]] = {
    "process-per-request": process_per_request,
    "one-at-a-time": one_at_a_time,
    "worker-formula": worker_formula,
    "asgi-wins-io": asgi_wins_io,
    "cpu-little-difference": cpu_little_difference,
    "blocking-hurts-asgi": blocking_hurts_asgi,
}


# What makes a run noisy without saying anything about the claim itself.
NOISE_KEYS: Final = ("errors", "load_1m_start")


def judge(claim_id: str, numbers: Numbers) -> Verdict:
    """The rule's verdict. When it is inconclusive because of errors or a busy machine,
    the reader also learns where the numbers point once those are set aside, marked
    as such: a lean, not a verdict."""
    verdict = RULES[claim_id](numbers)
    quiet = {k: v for k, v in numbers.items() if k not in NOISE_KEYS}
    if verdict.level != INCONCLUSIVE or len(noise(numbers)) == len(noise(quiet)):
        return verdict  # conclusive, or inconclusive for a reason of its own
    lean = RULES[claim_id](quiet)
    if lean.level == INCONCLUSIVE:
        return verdict
    return Verdict(
        INCONCLUSIVE,
        f'{verdict.why} Set aside, the numbers lean to "{lean.level}": {lean.why}',
        verdict.model,
    )
