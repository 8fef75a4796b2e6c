"""``lab claims``: run the experiment behind each tutorial claim and judge it.

Each experiment records plain numbers; ``lab.verdicts`` turns them into a
verdict. Throughput comes from wrk (our Python generator would be the limit at
these rates); facts per request (pids, overlap) come from ``lab.loadgen``, which
keeps every response's trace headers. The worker-count experiment starts its
own WSGI gateways on spare loopback ports, straight from this host (not through
nginx, not in Docker), and stops them afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from lab.errors import LabError, UsageError
from lab.settings import ROOT
from lab.workshop.common import (
    Guard,
    default_out_dir,
    lab_info,
    lab_url,
    machine_info,
    mode_url,
    require_lab,
)
from lab.workshop.verdicts import RULES, Verdict, judge

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_DURATION_S: Final = 5.0  # per wrk run
DEFAULT_REQUESTS: Final = 40  # per trace run (claims 1 and 2)
IO_MS: Final = 100
CPU_MS: Final = 20
IO_PATH: Final = f"/coffee?ms={IO_MS}"
CPU_PATH: Final = f"/omelette?ms={CPU_MS}"
BLOCKING_PATH: Final = f"/blocking-coffee?ms={IO_MS}"
IO_CONCURRENCY: Final = 100  # "ASGI wins on IO-bound load": many clients waiting at once
LOAD_CONCURRENCY: Final = 50
SPARE_PORTS: Final = range(18091, 18191)  # extra WSGI gateways for the worker-count claim
GATEWAY_START_S: Final = 30.0


@dataclass(frozen=True)
class Claim:
    id: str
    title: str
    claim: str
    experiment: str


CLAIMS: Final = (
    Claim(
        "process-per-request",
        "CGI pays a process start per request",
        "Under CGI every request starts a new process, and that start is what makes CGI slow "
        "(the tutorial calls it loading the script's binary from disk, and names it forking).",
        "GET / through nginx at one client, CGI and WSGI: p50 latency of each, and the "
        "number of distinct X-Gateway-Pid values among the CGI responses. On the host: the "
        "time to read the Python binary (page cache) and to start an empty interpreter "
        "with the CGI runner's flags.",
    ),
    Claim(
        "one-at-a-time",
        "A sync WSGI worker serves one request at a time",
        "A WSGI worker handles one request at a time; more requests need more workers.",
        f"GET {IO_PATH} on WSGI with more clients than workers: the most requests any one "
        "pid had between X-Gateway-Start and X-Gateway-End at once, and throughput against "
        "workers / wait time.",
    ),
    Claim(
        "worker-formula",
        "Sync workers: 2 x cores + 1",
        "A WSGI server runs at most 2 x cores + 1 workers.",
        f"Extra WSGI gateways started on spare loopback ports (directly, not through nginx) "
        f"with 1, 2 x cores + 1 and 4 x cores + 1 workers; wrk at {LOAD_CONCURRENCY} clients "
        f"on {IO_PATH} (IO-bound) and, for context, {CPU_PATH} (CPU-bound).",
    ),
    Claim(
        "asgi-wins-io",
        "ASGI wins on IO-bound load",
        "ASGI handles more IO-bound requests per unit of time than WSGI.",
        f"wrk at {IO_CONCURRENCY} clients on {IO_PATH}, ASGI vs WSGI through nginx.",
    ),
    Claim(
        "cpu-little-difference",
        "CPU-bound load shows little difference",
        "On CPU-bound work there is likely no noticeable difference between ASGI and WSGI.",
        f"wrk at {LOAD_CONCURRENCY} clients on {CPU_PATH}, ASGI vs WSGI through nginx.",
    ),
    Claim(
        "blocking-hurts-asgi",
        "Blocking code makes ASGI worse",
        "Badly written async code can make ASGI slower than WSGI.",
        f"wrk at {LOAD_CONCURRENCY} clients: ASGI {BLOCKING_PATH} (time.sleep inside async "
        f"def) vs ASGI {IO_PATH} and WSGI {IO_PATH}.",
    ),
)


@dataclass
class ClaimResult:
    claim: Claim
    numbers: dict[str, float]
    verdict: Verdict
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.claim.id,
            "title": self.claim.title,
            "numbers": self.numbers,
            "verdict": self.verdict.level,
            "why": self.verdict.why,
            "notes": self.notes,
        }


# -- the report (pure) -------------------------------------------------------------------


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.1f}"


def report_markdown(results: list[ClaimResult], meta: dict[str, Any]) -> str:
    machine = meta.get("machine", {})
    lines = [
        "# Gateway Lab: the tutorial's claims, measured",
        "",
        f"- when: {meta.get('started', '')} (UTC)",
        f"- machine: {machine.get('host', '?')}, {machine.get('cores', '?')} cores "
        f"({machine.get('cpu', '?')}), "
        f"load average {machine.get('load_average_1m', '?')} at the start",
        f"- lab: {meta.get('url', '')}",
        f"- command: `{meta.get('command', '')}`",
        f"- throughput: wrk, {meta.get('duration_s', '?')} s per run; per-request facts: the "
        f"lab's own generator, {meta.get('requests', '?')} requests per run",
        "- the worker-count experiment starts extra WSGI gateways on spare loopback ports "
        "(directly, not through nginx) and stops them afterwards",
        "",
        "| # | claim | verdict |",
        "|---|---|---|",
    ]
    for i, r in enumerate(results, 1):
        lines.append(f"| {i} | {r.claim.title} | **{r.verdict.level}** |")
    for i, r in enumerate(results, 1):
        lines += [
            "",
            f"## {i}. {r.claim.title}",
            "",
            f"**Claim.** {r.claim.claim}",
            "",
            f"**Experiment.** {r.claim.experiment}",
            "",
            "**Numbers.**",
            "",
            "| measure | value |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in r.numbers.items()]
        lines += ["", f"**Verdict: {r.verdict.level}.** {r.verdict.why}"]
        lines += [f"\n_{note}_" for note in r.notes]
    return "\n".join(lines) + "\n"


# -- measuring ----------------------------------------------------------------------------


def _wrk_rps(url: str, clients: int, duration_s: float) -> tuple[float, float, int]:
    """(req/s, p50 ms, errors) from wrk."""
    from lab.workshop.loadgen import wait_idle
    from lab.workshop.wrk import run_wrk

    s = run_wrk(url, clients, duration_s).summary()
    wait_idle(health_url(url))
    return s.rps, s.p50_ms, s.errors


def health_url(url: str) -> str:
    """The gateway's /healthz on the same route: ``/wsgi/coffee?ms=1`` -> ``/wsgi/healthz``."""
    return url.split("?", 1)[0].rsplit("/", 1)[0] + "/healthz"


def binary_read_ms(path: str = sys.executable, rounds: int = 5) -> float:
    """Median time to read the interpreter's binary, start to end (from the page cache)."""
    real = os.path.realpath(path)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        with open(real, "rb") as fh:
            while fh.read(1 << 20):
                pass
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def interpreter_start_ms(rounds: int = 7) -> float:
    """Median wall time of an empty interpreter run with the CGI runner's flags (-I -S)."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True, timeout=30)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def exp_process_per_request(base: str, requests_total: int, _d: float) -> dict[str, float]:
    from lab.workshop.loadgen import run_load

    cgi = run_load(mode_url(base, "cgi", "/"), 1, requests_total=requests_total).summary()
    wsgi = run_load(mode_url(base, "wsgi", "/"), 1, requests_total=requests_total).summary()
    return {
        "requests": cgi.requests,
        "distinct_pids": cgi.distinct_pids,
        "cgi_p50_ms": round(cgi.p50_ms, 2),
        "wsgi_p50_ms": round(wsgi.p50_ms, 2),
        "binary_read_ms": round(binary_read_ms(), 3),
        "interpreter_start_ms": round(interpreter_start_ms(), 1),
    }


def exp_one_at_a_time(base: str, requests_total: int, _d: float) -> dict[str, float]:
    from lab.workshop.loadgen import run_load

    url = mode_url(base, "wsgi", IO_PATH)
    # Learn the worker count from the pids first, then load with 4 x that many clients.
    probe = run_load(url, 10, requests_total=20).summary()
    clients = max(4 * probe.distinct_pids, 4)
    run = run_load(url, clients, requests_total=max(requests_total, 3 * clients)).summary()
    return {
        "workers": run.distinct_pids,
        "clients": clients,
        "requests": run.requests,
        "max_overlap": run.max_overlap or 0,
        "io_ms": IO_MS,
        "rps": round(run.rps, 2),
    }


def free_port(candidates: range = SPARE_PORTS) -> int:
    for port in candidates:
        with socket.socket() as s:
            # As gunicorn binds: a port whose old connections are in TIME_WAIT is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LabError(f"no free port in {candidates.start}..{candidates.stop - 1}")


@contextlib.contextmanager
def wsgi_gateway(workers: int) -> Iterator[str]:
    """A WSGI gateway with ``workers`` sync workers on a spare port; stopped on exit."""
    import requests

    port = free_port()
    env = os.environ | {"GATEWAY_WORKERS": str(workers), "GATEWAY_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--mode", "wsgi", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: stopping it stops every worker
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + GATEWAY_START_S
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(url + "/healthz", timeout=1).ok:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"a WSGI gateway with {workers} workers did not start on {url}")
            time.sleep(0.2)
        # Touch every worker once so none is measured on its first request.
        for _ in range(2 * workers):
            with contextlib.suppress(requests.RequestException):
                requests.get(url + "/", timeout=5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(timeout=5)


def exp_worker_formula(_base: str, _n: int, duration_s: float) -> dict[str, float]:
    cores = os.cpu_count() or 1
    counts = {"1": 1, "formula": 2 * cores + 1, "4x": 4 * cores + 1}
    numbers: dict[str, float] = {
        "cores": cores,
        "workers_formula": counts["formula"],
        "workers_4x": counts["4x"],
    }
    for label, workers in counts.items():
        with wsgi_gateway(workers) as url:
            numbers[f"io_rps_{label}"] = round(
                _wrk_rps(url + IO_PATH, LOAD_CONCURRENCY, duration_s)[0], 1
            )
            numbers[f"cpu_rps_{label}"] = round(
                _wrk_rps(url + CPU_PATH, LOAD_CONCURRENCY, duration_s)[0], 1
            )
    return numbers


def exp_asgi_wins_io(base: str, _n: int, duration_s: float) -> dict[str, float]:
    asgi = _wrk_rps(mode_url(base, "asgi", IO_PATH), IO_CONCURRENCY, duration_s)
    wsgi = _wrk_rps(mode_url(base, "wsgi", IO_PATH), IO_CONCURRENCY, duration_s)
    return {
        "concurrency": IO_CONCURRENCY,
        "asgi_rps": round(asgi[0], 1),
        "wsgi_rps": round(wsgi[0], 1),
        "asgi_p50_ms": round(asgi[1], 1),
        "wsgi_p50_ms": round(wsgi[1], 1),
        "asgi_errors": asgi[2],
        "wsgi_errors": wsgi[2],
    }


def exp_cpu(base: str, _n: int, duration_s: float) -> dict[str, float]:
    asgi = _wrk_rps(mode_url(base, "asgi", CPU_PATH), LOAD_CONCURRENCY, duration_s)
    wsgi = _wrk_rps(mode_url(base, "wsgi", CPU_PATH), LOAD_CONCURRENCY, duration_s)
    return {
        "concurrency": LOAD_CONCURRENCY,
        "asgi_rps": round(asgi[0], 1),
        "wsgi_rps": round(wsgi[0], 1),
        "asgi_p50_ms": round(asgi[1], 1),
        "wsgi_p50_ms": round(wsgi[1], 1),
    }


def exp_blocking(base: str, _n: int, duration_s: float) -> dict[str, float]:
    blocking = _wrk_rps(mode_url(base, "asgi", BLOCKING_PATH), LOAD_CONCURRENCY, duration_s)
    asgi = _wrk_rps(mode_url(base, "asgi", IO_PATH), LOAD_CONCURRENCY, duration_s)
    wsgi = _wrk_rps(mode_url(base, "wsgi", IO_PATH), LOAD_CONCURRENCY, duration_s)
    return {
        "concurrency": LOAD_CONCURRENCY,
        "asgi_blocking_rps": round(blocking[0], 1),
        "asgi_coffee_rps": round(asgi[0], 1),
        "wsgi_coffee_rps": round(wsgi[0], 1),
        "asgi_blocking_p50_ms": round(blocking[1], 1),
    }


EXPERIMENTS: Final[dict[str, Callable[[str, int, float], dict[str, float]]]] = {
    "process-per-request": exp_process_per_request,
    "one-at-a-time": exp_one_at_a_time,
    "worker-formula": exp_worker_formula,
    "asgi-wins-io": exp_asgi_wins_io,
    "cpu-little-difference": exp_cpu,
    "blocking-hurts-asgi": exp_blocking,
}
CLAIM_IDS: Final = tuple(c.id for c in CLAIMS)
assert set(EXPERIMENTS) == set(RULES) == set(CLAIM_IDS)


def notes_for(claim_id: str, numbers: dict[str, float]) -> list[str]:
    """Context a reader needs that is not part of the verdict."""
    if claim_id == "worker-formula":
        return [
            f"CPU-bound context: {numbers['cpu_rps_1']:.0f} / {numbers['cpu_rps_formula']:.0f} / "
            f"{numbers['cpu_rps_4x']:.0f} req/s on {CPU_PATH} with 1 / "
            f"{numbers['workers_formula']:.0f} / {numbers['workers_4x']:.0f} workers: "
            "past the core count, more workers cannot add CPU."
        ]
    if claim_id == "asgi-wins-io":
        return [
            f"Latency too: p50 {numbers['asgi_p50_ms']:.0f} ms (ASGI) vs "
            f"{numbers['wsgi_p50_ms']:.0f} ms (WSGI), since WSGI requests queue for a worker."
        ]
    return []


def run_claims(
    url: str | None = None,
    only: list[str] | None = None,
    duration_s: float = DEFAULT_DURATION_S,
    requests_total: int = DEFAULT_REQUESTS,
    out_dir: Path | None = None,
    console: Console | None = None,
    command: str = "lab claims",
) -> tuple[list[ClaimResult], Path]:
    """Run each experiment, judge it, print and save ``claims.md`` and ``claims.json``."""
    from rich.console import Console
    from rich.markdown import Markdown

    console = console or Console()
    base = (url or lab_url()).rstrip("/")
    require_lab(base)
    out = out_dir or default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "url": base,
        "machine": machine_info(),
        "lab": lab_info(),
        "command": command,
        "duration_s": duration_s,
        "requests": requests_total,
    }
    results = []
    for claim in CLAIMS:
        if only and claim.id not in only:
            continue
        with console.status(f"{claim.title}: {claim.experiment[:60]}..."):
            numbers = EXPERIMENTS[claim.id](base, requests_total, duration_s)
        verdict = judge(claim.id, numbers)
        results.append(ClaimResult(claim, numbers, verdict, notes_for(claim.id, numbers)))
        console.print(f"[bold]{claim.title}[/bold]: {verdict.level}")
    text = report_markdown(results, meta)
    (out / "claims.md").write_text(text, encoding="utf-8")
    payload = {"meta": meta, "claims": [r.as_dict() for r in results]}
    (out / "claims.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    console.print(Markdown(text))
    console.print(f"saved: {out / 'claims.md'}, {out / 'claims.json'}")
    return results, out


def register(app: typer.Typer, guard: Guard) -> None:
    """Add ``lab claims`` to ``app``; ``guard`` is the CLI's error policy (lab.cli)."""

    @app.command()
    @guard
    def claims(
        only: Annotated[
            str, typer.Option(help=f"comma-separated claim ids ({', '.join(CLAIM_IDS)}), or all")
        ] = "all",
        duration: Annotated[float, typer.Option(help="seconds per wrk run")] = DEFAULT_DURATION_S,
        requests: Annotated[
            int, typer.Option(help="requests per trace run", min=5, max=2000)
        ] = DEFAULT_REQUESTS,
        url: Annotated[str | None, typer.Option(help="the lab (default LAB_URL or :8080)")] = None,
        out: Annotated[Path | None, typer.Option(help="results directory")] = None,
    ) -> None:
        """Test each tutorial claim with an experiment; write a Markdown report with verdicts."""
        chosen = None if only.strip() in ("", "all") else [x.strip() for x in only.split(",")]
        unknown = [x for x in chosen or [] if x not in CLAIM_IDS]
        if unknown:
            raise UsageError(f"unknown claims: {', '.join(unknown)} (use {', '.join(CLAIM_IDS)})")
        command = f"lab claims --only {only} --duration {duration:g} --requests {requests}"
        run_claims(url, chosen, duration, requests, out, command=command)
