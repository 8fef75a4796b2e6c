"""``lab bench``: modes x scenarios x concurrency levels, through nginx.

Each cell is one closed-loop run against ``/<mode><path>`` (the fixed route of
one mode). Before the matrix, the bench measures its own generator against wrk
on nginx's static ``/nginx-health`` and prints the ratio: a number near the
generator's ceiling in the matrix would be the generator's limit, not the lab's.
Results go to ``results/<timestamp>/``: ``bench.json``, ``bench.csv``,
``bench.md`` and the charts.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from lab.errors import UsageError
from lab.routing import MODES, whole_number
from lab.workshop.analysis import Summary
from lab.workshop.common import (
    Guard,
    default_out_dir,
    lab_info,
    lab_url,
    machine_info,
    mode_url,
    require_lab,
)
from lab.workshop.servers import EXAMPLE, Pair, label, parse_servers, plan, swapping

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    what: str


SCENARIOS: Final = {
    s.name: s
    for s in (
        Scenario("hello", "/", "no work: the cost of the gateway itself"),
        Scenario("io", "/coffee?ms=100", "100 ms of waiting (IO-bound)"),
        Scenario("cpu", "/omelette?ms=20", "20 ms of pure-Python CPU work"),
        Scenario("mixed", "/breakfast?coffee_ms=50&omelette_ms=20", "50 ms wait + 20 ms CPU"),
        Scenario("blocking", "/blocking-coffee?ms=100", "100 ms time.sleep (in async def on ASGI)"),
    )
}
DEFAULT_LEVELS: Final = (1, 10, 50)
DEFAULT_DURATION_S: Final = 5.0
ENGINES: Final = ("auto", "wrk", "python")
CHECK_PATH: Final = "/nginx-health"  # answered by nginx itself: the fastest thing the lab serves
CHECK_MAX_CONCURRENCY: Final = 50  # the check runs at the highest level, capped here
CHECK_DURATION_S: Final = 3.0
CSV_COLUMNS: Final = (
    "mode",
    "server",
    "scenario",
    "path",
    "concurrency",
    "engine",
    "requests",
    "errors",
    "wall_s",
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "distinct_pids",
    "max_overlap",
)


@dataclass(frozen=True)
class Cell:
    mode: str
    server: str  # the server behind the mode's route (X-Gateway-Server), "" if unknown
    scenario: str
    path: str
    concurrency: int
    engine: str
    summary: Summary

    def row(self) -> dict[str, Any]:
        s = asdict(self.summary)
        return {
            "mode": self.mode,
            "server": self.server,
            "scenario": self.scenario,
            "path": self.path,
            "concurrency": self.concurrency,
            "engine": self.engine,
            **{k: s[k] for k in CSV_COLUMNS if k in s},
        }


@dataclass(frozen=True)
class GeneratorCheck:
    """Our Python generator vs wrk on nginx's static response, same concurrency."""

    concurrency: int
    python_rps: float
    wrk_rps: float | None  # None: wrk not installed

    @property
    def ratio(self) -> float | None:
        return self.python_rps / self.wrk_rps if self.wrk_rps else None

    def sentence(self) -> str:
        if self.wrk_rps is None:
            return (
                f"generator check: our generator {self.python_rps:,.0f} req/s on {CHECK_PATH}; "
                "wrk is not installed, so there is nothing to compare with"
            )
        return (
            f"generator check on {CHECK_PATH} at {self.concurrency} clients: "
            f"our Python generator {self.python_rps:,.0f} req/s, wrk {self.wrk_rps:,.0f} req/s, "
            f"ratio {self.ratio:.3f} (ours/wrk)"
        )


@dataclass
class BenchRun:
    meta: dict[str, Any]
    cells: list[Cell] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [c.row() for c in self.cells]


# -- pure helpers ---------------------------------------------------------------------


def pick_engine(engine: str, wrk_available: bool) -> str:
    """``auto``: wrk when installed (throughput), else our generator."""
    if engine not in ENGINES:
        raise UsageError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "auto":
        return "wrk" if wrk_available else "python"
    return engine


def parse_levels(text: str) -> list[int]:
    parsed = [whole_number(x) for x in text.replace(" ", "").split(",") if x]
    levels = [n for n in parsed if n is not None]
    if not levels or len(levels) != len(parsed) or min(levels) < 1:
        raise UsageError(f"levels must be positive whole numbers, e.g. 1,10,50, not {text!r}")
    return sorted(set(levels))


def parse_names(text: str, known: Iterable[str], what: str) -> list[str]:
    known = list(known)
    if text.strip() in ("", "all"):
        return known
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown {what}: {', '.join(unknown)} (use {', '.join(known)} or all)")
    return names


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt_csv(row.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def _fmt_csv(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else value


def to_json(run: BenchRun) -> str:
    return json.dumps({"meta": run.meta, "results": run.rows()}, indent=2) + "\n"


def report_markdown(run: BenchRun, charts: Sequence[str] = ()) -> str:
    m = run.meta
    machine = m.get("machine", {})
    lines = [
        "# Gateway Lab bench",
        "",
        f"- when: {m.get('started', '')} (UTC)",
        f"- machine: {machine.get('host', '?')}, {machine.get('cores', '?')} cores "
        f"({machine.get('cpu', '?')}), {machine.get('system', '')}, "
        f"load average {machine.get('load_average_1m', '?')} at the start",
        f"- lab: {m.get('url', '')}, each mode through its fixed route /<mode>/...",
        f"- command: `{m.get('command', '')}`",
        f"- {m.get('generator_check', '')}",
        f"- engine per cell: {m.get('engine_note', '')}",
        "- req/s counts successful answers only; errors are 4xx/5xx answers, timeouts and "
        "connection errors",
        "",
        "| mode | server | scenario | clients | engine | req/s | p50 ms | p95 ms | p99 ms "
        "| errors | pids |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in run.rows():
        lines.append(
            f"| {r['mode']} | {r['server']} | {r['scenario']} | {r['concurrency']} | {r['engine']} "
            f"| {r['rps']:,.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['errors']} | {r['distinct_pids']} |"
        )
    lines += ["", "Scenarios:", ""]
    for name in m.get("scenarios", []):
        s = SCENARIOS[name]
        lines.append(f"- **{name}** `{s.path}`: {s.what}")
    if charts:
        lines += ["", "## Charts", ""]
        lines += [f"![{Path(c).stem}]({Path(c).name})" for c in charts]
    return "\n".join(lines) + "\n"


def results_table(rows: Sequence[dict[str, Any]]) -> Table:
    from rich.table import Table

    engines = sorted({str(r["engine"]) for r in rows})
    table = Table(
        title="Gateway Lab bench (latency in ms)",
        caption=f"engine: {', '.join(engines)}; req/s: successful answers per second; "
        "pids: distinct X-Gateway-Pid values",
    )
    for name in (
        "mode", "server", "scenario", "clients", "req/s", "p50", "p95", "p99", "errors", "pids"
    ):  # fmt: skip
        left = name in ("mode", "server", "scenario")
        table.add_column(name, justify="left" if left else "right", no_wrap=True)
    for r in rows:
        errors = f"[red]{r['errors']}[/red]" if r["errors"] else "0"
        table.add_row(
            r["mode"],
            r["server"],
            r["scenario"],
            str(r["concurrency"]),
            f"{r['rps']:,.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            errors,
            str(r["distinct_pids"]),
        )
    return table


# -- I/O ---------------------------------------------------------------------------


def measure(
    url: str,
    concurrency: int,
    duration_s: float,
    engine: str,
    on_sample: Callable[[], None] | None = None,
) -> Summary:
    """One cell: ``concurrency`` clients on ``url`` for ``duration_s``, with one engine."""
    if engine == "wrk":
        from lab.workshop.wrk import run_wrk

        return run_wrk(url, concurrency, duration_s).summary()
    from lab.workshop.loadgen import run_load

    callback = (lambda _s: on_sample()) if on_sample else None
    return run_load(url, concurrency, duration_s=duration_s, on_sample=callback).summary()


def check_generator(base: str, concurrency: int) -> GeneratorCheck:
    from lab.workshop import wrk
    from lab.workshop.loadgen import run_load

    url = base.rstrip("/") + CHECK_PATH
    ours = run_load(url, concurrency, duration_s=CHECK_DURATION_S).summary().rps
    theirs = (
        wrk.run_wrk(url, concurrency, CHECK_DURATION_S).summary().rps if wrk.available() else None
    )
    return GeneratorCheck(concurrency, ours, theirs)


def warm_up(base: str, modes: Iterable[str]) -> None:
    """A few requests per mode, so no cell measures a worker's first import."""
    from lab.workshop.loadgen import run_load

    for mode in modes:
        run_load(mode_url(base, mode, "/"), 2, requests_total=6, timeout_s=10)


def run_bench(
    url: str | None = None,
    modes: Sequence[str] = MODES,
    scenarios: Sequence[str] = tuple(SCENARIOS),
    levels: Sequence[int] = DEFAULT_LEVELS,
    duration_s: float = DEFAULT_DURATION_S,
    engine: str = "auto",
    out_dir: Path | None = None,
    charts: bool = True,
    console: Console | None = None,
    command: str = "lab bench",
    servers: Sequence[Pair] | None = None,
) -> tuple[BenchRun, Path]:
    """Run the matrix, print the table, save JSON, CSV, Markdown and charts. Returns (run, dir).

    ``servers`` (``--servers``): (mode, server) pairs measured in turn instead of
    ``modes``, each swapped in first; the servers from before are put back at the
    end, whatever happens (``lab.workshop.servers.swapping``).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from lab.workshop import wrk
    from lab.workshop.loadgen import idle_probe, wait_idle

    console = console or Console()
    base = (url or lab_url()).rstrip("/")
    chosen = pick_engine(engine, wrk.available())
    require_lab(base)
    out = out_dir or default_out_dir()
    out.mkdir(parents=True, exist_ok=True)

    pairs = plan(base, modes, servers)
    modes = list(dict.fromkeys(m for m, _ in pairs))
    console.print(f"[bold]lab bench[/bold] against {base}, results in {out}")
    check = check_generator(base, min(max(levels), CHECK_MAX_CONCURRENCY))
    console.print(check.sentence())
    engine_note = (
        "wrk (C), with a Lua hook counting X-Gateway-Pid"
        if chosen == "wrk"
        else "our Python generator (every request's trace headers)"
    )
    run = BenchRun(
        meta={
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "url": base,
            "machine": machine_info(),
            "lab": lab_info(),
            "command": command,
            "modes": list(modes),
            "servers": [label(m, srv) for m, srv in pairs],
            "scenarios": list(scenarios),
            "levels": list(levels),
            "duration_s": duration_s,
            "engine": chosen,
            "engine_note": engine_note,
            "generator_check": check.sentence(),
            "generator_ratio": check.ratio,
            "generator_python_rps": check.python_rps,
            "generator_wrk_rps": check.wrk_rps,
        }
    )
    cells = [(name, clients) for name in scenarios for clients in levels]
    with (
        swapping(servers) as use,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        task = progress.add_task("bench", total=len(pairs) * len(cells))
        for mode, server in pairs:
            progress.update(task, description=f"{label(mode, server):<14} swapping in")
            use(mode, server)
            warm_up(base, [mode])
            for name, clients in cells:
                scenario = SCENARIOS[name]
                progress.update(
                    task, description=f"{label(mode, server):<14} {name:<8} x{clients:<3}"
                )
                summary = measure(mode_url(base, mode, scenario.path), clients, duration_s, chosen)
                run.cells.append(Cell(mode, server, name, scenario.path, clients, chosen, summary))
                progress.advance(task)
                wait_idle(idle_probe(mode_url(base, mode, ""), mode))

    console.print(results_table(run.rows()))
    chart_paths: list[Path] = []
    if charts:
        from lab.workshop.charts import bench_charts

        # The model assumes each mode's server in force (its workers): not with --servers.
        models = None if servers else model_lines(run.meta)
        chart_paths = bench_charts(
            run.rows(), out, title_note=machine_note(run.meta), models=models
        )
    (out / "bench.json").write_text(to_json(run), encoding="utf-8")
    (out / "bench.csv").write_text(to_csv(run.rows()), encoding="utf-8")
    (out / "bench.md").write_text(
        report_markdown(run, [str(p) for p in chart_paths]), encoding="utf-8"
    )
    console.print(check.sentence())
    console.print(f"saved: {', '.join(p.name for p in sorted(out.iterdir()))} in {out}")
    return run, out


def machine_note(meta: dict[str, Any]) -> str:
    m, lab = meta.get("machine", {}), meta.get("lab", {})
    workers = lab.get("workers") or {}
    config = ", ".join(f"{mode} {n}" for mode, n in workers.items()) or "?"
    return (
        f"{m.get('cores', '?')} CPUs, {lab.get('target') or '?'} target, workers: {config}; "
        f"{meta.get('duration_s', '?')} s per point"
    )


def model_lines(meta: dict[str, Any]) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """The model's requests/s per (scenario, mode) at each level, from the workers in force."""
    from lab.workshop.models import model_rps

    lab = meta.get("lab", {})
    workers = {k: int(v) for k, v in (lab.get("workers") or {}).items()}
    cpus_known = [float(c) for c in (lab.get("gateway_cpus") or {}).values() if c]
    cpus = min(cpus_known) if cpus_known else float(meta.get("machine", {}).get("cores") or 1)
    lines: dict[tuple[str, str], list[tuple[int, float]]] = {}
    if not workers:
        return lines
    for scenario in meta.get("scenarios", []):
        for mode in meta.get("modes", []):
            points = [
                (level, rps)
                for level in meta.get("levels", [])
                if (rps := model_rps(mode, scenario, level, workers, cpus)) is not None
            ]
            if points:
                lines[(scenario, mode)] = points
    return lines


def register(app: typer.Typer, guard: Guard) -> None:
    """Add ``lab bench`` to ``app``; ``guard`` is the CLI's error policy (lab.cli)."""

    @app.command()
    @guard
    def bench(
        modes: Annotated[str, typer.Option(help="comma-separated modes, or all")] = "all",
        scenarios: Annotated[
            str, typer.Option(help=f"comma-separated: {', '.join(SCENARIOS)}, or all")
        ] = "all",
        levels: Annotated[str, typer.Option(help="concurrency levels, e.g. 1,10,50")] = "1,10,50",
        duration: Annotated[float, typer.Option(help="seconds per cell")] = DEFAULT_DURATION_S,
        engine: Annotated[
            str, typer.Option(help="auto (wrk if installed), wrk, or python (our generator)")
        ] = "auto",
        url: Annotated[str | None, typer.Option(help="the lab (default LAB_URL or :8080)")] = None,
        out: Annotated[Path | None, typer.Option(help="results directory")] = None,
        servers: Annotated[
            str | None,
            typer.Option(
                help=f"MODE/SERVER pairs measured in turn instead of --modes, e.g. {EXAMPLE}; "
                "each is swapped in (lab server) and the servers from before come back at the end"
            ),
        ] = None,
    ) -> None:
        """Measure modes x scenarios x concurrency through nginx; table, JSON, CSV, charts."""
        chosen_servers = parse_servers(servers) if servers is not None else None
        if chosen_servers and modes != "all":
            raise UsageError("give --modes or --servers, not both: --servers names the modes")
        chosen_modes = parse_names(modes, MODES, "mode")
        chosen_scenarios = parse_names(scenarios, SCENARIOS, "scenario")
        chosen_levels = parse_levels(levels)
        pick_engine(engine, True)
        command = (
            f"lab bench --modes {modes} --scenarios {scenarios} --levels {levels} "
            f"--duration {duration:g} --engine {engine}"
            + (f" --servers {servers}" if servers else "")
        )
        run_bench(
            url,
            chosen_modes,
            chosen_scenarios,
            chosen_levels,
            duration,
            engine,
            out,
            command=command,
            servers=chosen_servers,
        )
