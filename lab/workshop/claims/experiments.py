"""The experiment behind each claim: what it measures, recorded as plain numbers.

Comparisons are repeated and interleaved (A, B, A, B, ...) so that a change in
the machine's load hits both sides alike; each repeat is one entry of a list,
and ``lab.workshop.claims.verdicts`` judges the median and the range. Throughput comes
from wrk (the Python generator would be the limit at these rates); facts per
request (pids, overlap) from ``lab.workshop.loadgen``, which keeps every
response's trace headers. The worker-count experiment starts its own WSGI
gateways on spare loopback ports, straight from this host (not through nginx,
not in Docker), and stops them afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from gateway import trace
from lab.errors import LabError
from lab.settings import ROOT
from lab.system import processes, procfs
from lab.system.ports import first_free
from lab.workshop.analysis import Sample, max_overlap
from lab.workshop.claims import cgi_probe
from lab.workshop.claims.catalog import (
    BLOCKING_PATH,
    CPU_MS,
    CPU_PATH,
    HELLO_PATH,
    IO_MS,
    IO_PATH,
    TO_THREAD_PATH,
    Sizes,
    saturated_run_s,
)
from lab.workshop.common import mode_url
from lab.workshop.servers import server_swapped

SPARE_PORTS: Final = range(18091, 18191)  # extra WSGI gateways for the worker-count claim
GATEWAY_START_S: Final = 30.0
PROBE_ROUNDS: Final = 20
CGI_CONTROL_CLIENTS: Final = 8  # below the CGI gateway's script cap (16 by default)
# What cgi_probe times, each ``rounds`` times, each run a process of its own.
PROBE_PARTS: Final = (
    "spawn_ms",
    "interpreter_ms",
    "runner_interpreter_ms",
    "imports_ms",
    "script_ms",
)
CGI_SCRIPT_IN_CONTAINER: Final = "/app/apps/breakfast/cgi_app.py"

Numbers = dict[str, Any]


class ServerUnavailable(LabError):
    """The gateway cannot run the server a control asks for (no server matrix)."""


@dataclass(frozen=True)
class Context:
    """What every experiment needs: the lab, its sizes and the run's settings."""

    base: str
    sizes: Sizes
    target: str | None
    repeats: int
    duration_s: float
    requests_total: int
    servers: dict[str, str] = field(default_factory=dict)  # mode -> server, when known


# -- measuring primitives ---------------------------------------------------------------


def idle_url(url: str) -> str:
    """What shows the gateway behind ``url`` idle (loadgen.idle_probe), on the same
    route: ``/wsgi/coffee?ms=1`` -> ``/wsgi/healthz``; ``/cgi/coffee`` -> ``/cgi/``."""
    from lab.workshop.loadgen import idle_probe

    route = url.split("?", 1)[0].rsplit("/", 1)[0]
    return idle_probe(route, route.rsplit("/", 1)[-1])


def pid_balance(pids: dict[int, int], expected: int) -> float:
    """Least / most requests per process; 0 when fewer processes answered than expected."""
    if not pids or len(pids) < expected:
        return 0.0
    return min(pids.values()) / max(pids.values())


def wrk_cell(url: str, clients: int, duration_s: float, expected_pids: int = 1) -> Numbers:
    """One wrk run as the numbers a rule reads; waits for the gateway to drain after."""
    from lab.workshop.loadgen import wait_idle
    from lab.workshop.wrk import run_wrk

    result = run_wrk(url, clients, duration_s)
    s = result.summary()
    wait_idle(idle_url(url))
    return {
        "rps": round(s.rps, 2),
        "p50_ms": round(s.p50_ms, 1),
        "p99_ms": round(s.p99_ms, 1),
        "errors": s.errors,
        "requests": s.requests,
        "seconds": round(result.duration_s, 2),
        # A closed loop: at the end each client has one request still in flight,
        # which wrk's percentiles never count.
        "in_flight_at_end": clients,
        "completions_per_client": round(s.requests / clients, 1),
        "pid_balance": round(pid_balance(result.pids, expected_pids), 2),
        "rss_mib": rss_mib(result.pids),  # of the processes that answered
    }


def interleave(repeats: int, cells: dict[str, Callable[[], Numbers]]) -> dict[str, list[Any]]:
    """Run each cell once per repeat, in turn (A, B, A, B): ``{"A_rps": [..], ...}``."""
    out: dict[str, list[Any]] = {}
    for _ in range(repeats):
        for name, cell in cells.items():
            for key, value in cell().items():
                out.setdefault(f"{name}_{key}", []).append(value)
    return out


def errors_of(numbers: dict[str, list[Any]]) -> list[float]:
    """Failed requests per repeat, over every side of the comparison."""
    keys = [k for k in numbers if k.endswith("_errors")]
    return [sum(numbers[k][i] for k in keys) for i in range(len(numbers[keys[0]]))] if keys else []


# -- 1. CGI: where the time goes ----------------------------------------------------------


def probe_cgi(target: str | None, rounds: int = PROBE_ROUNDS) -> dict[str, Any]:
    """cgi_probe where the CGI scripts run: this host natively, the CGI container under Docker."""
    if target == "docker":
        from lab.settings import LabSettings
        from lab.targets.docker.compose import compose_args, compose_env

        argv = compose_args(
            "exec", "-T", "gateway-cgi", "python", "-c", cgi_probe.source(),
            CGI_SCRIPT_IN_CONTAINER, str(rounds),
        )  # fmt: skip
        env = compose_env(LabSettings.from_env(), os.environ)
    else:
        script = str(ROOT / "apps" / "breakfast" / "cgi_app.py")
        argv, env = [sys.executable, "-c", cgi_probe.source(), script, str(rounds)], None
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise LabError(f"the CGI cost probe failed: {done.stderr.strip()[-300:]}")
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def exp_process_per_request(ctx: Context) -> Numbers:
    from lab.workshop.loadgen import run_load

    per = max(5, ctx.requests_total // ctx.repeats)
    numbers: dict[str, Any] = {"cgi_p50_ms": [], "wsgi_p50_ms": [], "errors": []}
    pids: set[int | None] = set()
    total = 0
    cgi_url = mode_url(ctx.base, "cgi", HELLO_PATH)
    for _ in range(ctx.repeats):
        cgi = run_load(cgi_url, 1, requests_total=per)
        wsgi = run_load(mode_url(ctx.base, "wsgi", HELLO_PATH), 1, requests_total=per)
        numbers["cgi_p50_ms"].append(round(cgi.summary().p50_ms, 2))
        numbers["wsgi_p50_ms"].append(round(wsgi.summary().p50_ms, 2))
        numbers["errors"].append(cgi.summary().errors + wsgi.summary().errors)
        pids |= {s.trace.pid for s in cgi.samples}
        total += len(cgi.samples)
    probe = probe_cgi(ctx.target)
    numbers |= {"requests": total, "distinct_pids": len(pids - {None})}
    for key in PROBE_PARTS:
        numbers[key] = [round(x, 2) for x in probe[key]]
    numbers["major_faults"] = probe["major_faults"]
    numbers["probe_processes"] = len(PROBE_PARTS) * probe["rounds"]
    if ctx.servers.get("cgi") == "runner":
        # The control: the same script behind nginx + fcgiwrap, CGI's usual way behind
        # nginx, so the lab's own runner can be told apart from CGI itself.
        with server_swapped("cgi", "fcgiwrap"):
            numbers["fcgiwrap_p50_ms"] = [
                round(run_load(cgi_url, 1, requests_total=per).summary().p50_ms, 2)
                for _ in range(ctx.repeats)
            ]
    return numbers


# -- 2. one request at a time per sync worker ---------------------------------------------


def exp_one_at_a_time(ctx: Context) -> Numbers:
    from lab.workshop.loadgen import run_load

    clients = ctx.sizes.crowd
    numbers: dict[str, Any] = {
        "workers": ctx.sizes.wsgi_workers,
        "clients": clients,
        "io_ms": IO_MS,
    }
    rps, overlaps, control, errors, control_errors, seen = [], [], [], [], [], set()
    with contextlib.ExitStack() as stack:
        # The control: gunicorn's threaded worker (gthread), the same app, as many
        # workers, on a spare port; the same detector must see requests overlap in one
        # pid. Without a server matrix, the CGI gateway's bridge is the threaded worker
        # (a WSGI app on one gthread worker): its scripts overlap per X-Gateway-Worker.
        try:
            control_url, _ = stack.enter_context(wsgi_gateway(ctx.sizes.wsgi_workers, "gthread"))
            control_clients, by = clients, "pid"
        except ServerUnavailable:
            control_url, by = mode_url(ctx.base, "cgi", ""), "worker"
            control_clients = min(clients, CGI_CONTROL_CLIENTS)
        for _ in range(ctx.repeats):
            run = run_load(mode_url(ctx.base, "wsgi", IO_PATH), clients, requests_total=3 * clients)
            s = run.summary()
            rps.append(round(s.rps, 2))
            overlaps.append(s.max_overlap or 0)
            seen |= {x.trace.pid for x in run.samples}
            ctl = run_load(
                control_url + IO_PATH, control_clients, requests_total=3 * control_clients
            )
            control.append(overlap_by(ctl.samples, by))
            control_errors.append(ctl.summary().errors)
            errors.append(s.errors)
    return numbers | {
        "rps": rps,
        "max_overlap": max(overlaps),
        "pids_seen": len(seen - {None}),
        "control_max_overlap": max(control),
        "control_errors": control_errors,  # not evidence about the sync worker: reported apart
        "errors": errors,
    }


def overlap_by(samples: list[Sample], by: str) -> int:
    """Most requests in app code at once in one process: by pid, or by the worker
    that started them (a CGI script is its own pid; its worker is the bridge)."""
    groups: dict[int, list[tuple[float, float]]] = {}
    for x in samples:
        key, t = (x.trace.pid if by == "pid" else x.trace.worker), x.trace
        if x.ok and key is not None and t.start is not None and t.end is not None:
            groups.setdefault(key, []).append((t.start, t.end))
    return max((max_overlap(v) for v in groups.values()), default=0)


# -- 3. 2 x cores + 1 ---------------------------------------------------------------------


def free_port(candidates: range = SPARE_PORTS) -> int:
    port = first_free(candidates)
    if port is None:
        raise LabError(f"no free port in {candidates.start}..{candidates.stop - 1}")
    return port


def rss_mib(pids: Iterable[int]) -> float:
    """Mean resident memory of ``pids`` on this host, MiB (0: none readable, e.g. in a
    container). RSS counts pages shared after the fork in every process."""
    sizes = [kib / 1024 for pid in pids if (kib := procfs.rss_kib(pid)) is not None]
    return round(sum(sizes) / len(sizes), 1) if sizes else 0.0


def rss_mib_per_process(pgid: int) -> float:
    """Mean resident memory of the processes in group ``pgid`` (master included), MiB."""
    return rss_mib(p.pid for p in procfs.read_proc() if p.pgrp == pgid)


@contextlib.contextmanager
def wsgi_gateway(workers: int, server: str = "sync") -> Iterator[tuple[str, int]]:
    """A WSGI gateway with ``workers`` workers of ``server`` (gunicorn's sync or gthread
    worker) on a spare port, straight from this host: (url, process group)."""
    import requests

    port = free_port()  # a gateway already listening keeps its port: bind fails
    env = os.environ | {
        "GATEWAY_WORKERS": str(workers),
        "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_SERVER": server,
    }
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "gateway", "serve", "--mode", "wsgi", "--port", str(port)]
    try:
        with processes.running(
            f"gateway-wsgi-{server}-claims", cmd, health_url=url + "/healthz", env=env,
            cwd=ROOT, deadline_s=GATEWAY_START_S,
        ) as pgid:  # fmt: skip
            # Touch every worker once so none is measured on its first request.
            for _ in range(2 * workers):
                with contextlib.suppress(requests.RequestException):
                    requests.get(url + "/", timeout=5)
            running = requests.get(url + "/", timeout=5).headers.get(trace.SERVER, "sync")
            if running != server:  # a gateway that cannot run ``server`` must not pass for one
                raise ServerUnavailable(f"the spare gateway on {url} runs {running}, not {server}")
            yield url, pgid
    except processes.StartFailed as failed:
        raise LabError(
            f"a WSGI gateway with {workers} workers did not start on {url}: {failed}"
        ) from None


def exp_worker_formula(ctx: Context) -> Numbers:
    cpus = procfs.cpu_limit()  # the spare gateways run here, with this process's CPUs
    sizes = Sizes(cpus, ctx.sizes.wsgi_workers, ctx.sizes.asgi_workers)
    wf, w4, clients = sizes.formula_workers, sizes.four_x_workers, sizes.formula_clients
    run_s = saturated_run_s(clients, wf * 1000 / IO_MS, ctx.duration_s)
    with wsgi_gateway(wf) as (url_f, pg_f), wsgi_gateway(w4) as (url_4, pg_4):
        numbers: dict[str, Any] = interleave(
            ctx.repeats,
            {
                "io_formula": lambda: wrk_cell(url_f + IO_PATH, clients, run_s),
                "io_4x": lambda: wrk_cell(url_4 + IO_PATH, clients, run_s),
            },
        )
        cpu_f = wrk_cell(url_f + CPU_PATH, clients, ctx.duration_s)
        cpu_4 = wrk_cell(url_4 + CPU_PATH, clients, ctx.duration_s)
        rss = {
            "rss_mib_formula": rss_mib_per_process(pg_f),
            "rss_mib_4x": rss_mib_per_process(pg_4),
        }
    return {
        "cpus": cpus,
        "workers_formula": wf,
        "workers_4x": w4,
        "clients": clients,
        "io_ms": IO_MS,
        "io_rps_formula": numbers["io_formula_rps"],
        "io_rps_4x": numbers["io_4x_rps"],
        "cpu_rps_formula": cpu_f["rps"],
        "cpu_rps_4x": cpu_4["rps"],
        "errors": errors_of(numbers),
        **rss,
    }


# -- 4-6. through nginx, ASGI against WSGI ------------------------------------------------


def exp_asgi_wins_io(ctx: Context) -> Numbers:
    from lab.workshop.loadgen import run_load

    sz, clients = ctx.sizes, ctx.sizes.crowd
    run_s = saturated_run_s(clients, sz.wsgi_workers * 1000 / IO_MS, ctx.duration_s)
    # The control: WSGI on threads (gthread, as many workers as the sync server), on a
    # spare port straight from this host; it keeps waits in flight as the loop does.
    cells: dict[str, Callable[[], Numbers]] = {
        "asgi": lambda: wrk_cell(mode_url(ctx.base, "asgi", IO_PATH), clients, run_s),
        "wsgi": lambda: wrk_cell(mode_url(ctx.base, "wsgi", IO_PATH), clients, run_s),
    }
    with contextlib.ExitStack() as stack:
        try:
            threaded, _ = stack.enter_context(wsgi_gateway(sz.wsgi_workers, "gthread"))
            cells["gthread"] = lambda: wrk_cell(threaded + IO_PATH, clients, run_s)
        except ServerUnavailable:
            pass  # no server matrix: the comparison without its control
        n = interleave(ctx.repeats, cells)
    one = {
        m: run_load(mode_url(ctx.base, m, IO_PATH), 1, requests_total=10).summary().p50_ms
        for m in ("asgi", "wsgi")
    }
    return {
        "clients": clients,
        "io_ms": IO_MS,
        "wsgi_workers": sz.wsgi_workers,
        "asgi_workers": sz.asgi_workers,
        "asgi_rps": n["asgi_rps"],
        "wsgi_rps": n["wsgi_rps"],
        "asgi_p50_ms": n["asgi_p50_ms"],
        "wsgi_p50_ms": n["wsgi_p50_ms"],
        "asgi_p50_c1_ms": round(one["asgi"], 1),
        "wsgi_p50_c1_ms": round(one["wsgi"], 1),
        "asgi_rss_mib": n["asgi_rss_mib"][-1],
        "wsgi_rss_mib": n["wsgi_rss_mib"][-1],
        "seconds": n["wsgi_seconds"],
        "errors": errors_of(n),
    } | (
        {"gthread_rps": n["gthread_rps"], "gthread_rss_mib": n["gthread_rss_mib"][-1]}
        if "gthread_rps" in n
        else {}
    )


def exp_cpu(ctx: Context) -> Numbers:
    sz, clients = ctx.sizes, ctx.sizes.crowd
    run_s = saturated_run_s(clients, min(sz.cpus, sz.wsgi_workers) * 1000 / CPU_MS, ctx.duration_s)
    n = interleave(
        ctx.repeats,
        {
            "asgi": lambda: wrk_cell(
                mode_url(ctx.base, "asgi", CPU_PATH), clients, run_s, sz.asgi_workers
            ),
            "wsgi": lambda: wrk_cell(
                mode_url(ctx.base, "wsgi", CPU_PATH), clients, run_s, sz.wsgi_workers
            ),
        },
    )
    return {
        "clients": clients,
        "cpu_ms": CPU_MS,
        "cpus": sz.cpus,
        "wsgi_workers": sz.wsgi_workers,
        "asgi_workers": sz.asgi_workers,
        **{
            f"{m}_{k}": n[f"{m}_{k}"] for m in ("asgi", "wsgi") for k in ("rps", "p50_ms", "p99_ms")
        },
        "asgi_completions_per_client": n["asgi_completions_per_client"],
        "wsgi_completions_per_client": n["wsgi_completions_per_client"],
        "asgi_pid_balance": n["asgi_pid_balance"],
        "wsgi_pid_balance": n["wsgi_pid_balance"],
        "in_flight_at_end": clients,
        "seconds": n["wsgi_seconds"],
        "errors": errors_of(n),
    }


def executor_threads(url: str) -> int:
    """How many threads asyncio.to_thread may use per ASGI worker, as the app reports it."""
    import requests

    try:
        return int(requests.get(url, timeout=30).json()["threads"])
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        raise LabError(f"{url} did not say how many threads it may use: {exc}") from None


def exp_blocking(ctx: Context) -> Numbers:
    sz, clients = ctx.sizes, ctx.sizes.crowd
    run_s = saturated_run_s(clients, sz.asgi_workers * 1000 / IO_MS, ctx.duration_s)
    fixed_url = mode_url(ctx.base, "asgi", TO_THREAD_PATH)
    threads = executor_threads(fixed_url)
    fixed_s = saturated_run_s(
        clients, min(clients, sz.asgi_workers * threads) * 1000 / IO_MS, ctx.duration_s
    )
    n = interleave(
        ctx.repeats,
        {
            "blocking": lambda: wrk_cell(mode_url(ctx.base, "asgi", BLOCKING_PATH), clients, run_s),
            "fixed": lambda: wrk_cell(fixed_url, clients, fixed_s, sz.asgi_workers),
            "asgi": lambda: wrk_cell(mode_url(ctx.base, "asgi", IO_PATH), clients, ctx.duration_s),
            "wsgi": lambda: wrk_cell(mode_url(ctx.base, "wsgi", IO_PATH), clients, run_s),
        },
    )
    return {
        "clients": clients,
        "io_ms": IO_MS,
        "asgi_workers": sz.asgi_workers,
        "wsgi_workers": sz.wsgi_workers,
        "threads": threads,
        "asgi_blocking_rps": n["blocking_rps"],
        "asgi_fixed_rps": n["fixed_rps"],
        "asgi_coffee_rps": n["asgi_rps"],
        "wsgi_coffee_rps": n["wsgi_rps"],
        "asgi_blocking_p50_ms": n["blocking_p50_ms"],
        "asgi_fixed_p50_ms": n["fixed_p50_ms"],
        # The model counts every loop's threads: a run pinned to one loop says less.
        "asgi_fixed_pid_balance": n["fixed_pid_balance"],
        "asgi_blocking_completions_per_client": n["blocking_completions_per_client"],
        "seconds": n["blocking_seconds"],
        "errors": errors_of(n),
    }


EXPERIMENTS: Final[dict[str, Callable[[Context], Numbers]]] = {
    "process-per-request": exp_process_per_request,
    "one-at-a-time": exp_one_at_a_time,
    "worker-formula": exp_worker_formula,
    "asgi-wins-io": exp_asgi_wins_io,
    "cpu-little-difference": exp_cpu,
    "blocking-hurts-asgi": exp_blocking,
}
