"""``lab timeline``: fire N requests at a mode and draw who ran each one, and when.

One lane per process that ran app code (``X-Gateway-Pid``), one bar per request
from its ``X-Gateway-Start`` to its ``X-Gateway-End``. CGI: a new lane for every
request (a new process each time). WSGI: a few lanes, the bars in each never
overlap (a sync worker does one thing at a time). ASGI: few lanes, bars stacked
on top of each other (one event loop with many requests in flight).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from lab.errors import UsageError
from lab.nginx.routing import MODES
from lab.workshop.analysis import Sample, build_lanes, drawable, overlap_per_pid
from lab.workshop.common import Guard, default_out_dir, lab_url, mode_url, require_lab
from lab.workshop.servers import (
    EXAMPLE,
    Pair,
    label,
    parse_servers,
    plan,
    series_label,
    swapping,
)

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_ENDPOINT: Final = "/coffee?ms=100"
DEFAULT_REQUESTS: Final = 30
DEFAULT_CONCURRENCY: Final = 10


@dataclass(frozen=True)
class TimelineSummary:
    mode: str
    requests: int
    drawn: int  # requests with a pid, Start and End
    processes: int
    max_overlap: int
    wall_ms: float  # first app start to last app end
    server: str = ""  # the server behind the mode's route, "" if unknown

    @property
    def name(self) -> str:
        """``wsgi/gthread``: what was measured (the mode alone when the server is unknown)."""
        return label(self.mode, self.server) if self.server else self.mode

    def line(self) -> str:
        return (
            f"{self.name}: {self.requests} requests, {self.processes} processes ran app code, "
            f"at most {self.max_overlap} at once in one process, "
            f"{self.wall_ms:,.0f} ms from first start to last end"
        )


def summarize_timeline(mode: str, samples: Sequence[Sample], server: str = "") -> TimelineSummary:
    usable = drawable(samples)
    overlaps = overlap_per_pid(usable)
    starts = [s.trace.start for s in usable if s.trace.start is not None]
    ends = [s.trace.end for s in usable if s.trace.end is not None]
    return TimelineSummary(
        mode=mode,
        requests=len(samples),
        drawn=len(usable),
        processes=len(overlaps),
        max_overlap=max(overlaps.values(), default=0),
        wall_ms=(max(ends) - min(starts)) * 1000 if starts else 0.0,
        server=server,
    )


def panel_title(summary: TimelineSummary, endpoint: str, concurrency: int) -> str:
    return (
        f"{series_label(summary.mode, summary.server)}  GET {endpoint}, "
        f"{summary.requests} requests, "
        f"{concurrency} clients: {summary.processes} processes, "
        f"at most {summary.max_overlap} at once per process"
    )


@dataclass(frozen=True)
class TimelineRun:
    endpoint: str
    concurrency: int
    samples: dict[str, list[Sample]]  # mode -> samples
    summaries: dict[str, TimelineSummary]
    png: Path


def run_timeline(
    mode: str = "wsgi",
    endpoint: str = DEFAULT_ENDPOINT,
    requests_total: int = DEFAULT_REQUESTS,
    concurrency: int = DEFAULT_CONCURRENCY,
    url: str | None = None,
    out: Path | None = None,
    console: Console | None = None,
    compare: str | None = None,
    servers: Sequence[Pair] | None = None,
) -> TimelineRun:
    """Fire the requests (one mode, or each mode in turn for ``all``), draw, print a summary.

    ``out`` is the PNG path, or a directory to put ``timeline-<mode>.png`` in. With
    ``compare``, each mode also gets a panel for that endpoint, on the same time axis
    (``/coffee`` beside ``/blocking-coffee``: the healthy loop and the blocked one);
    its samples and summaries are keyed ``"<mode> <endpoint>"``.

    ``servers`` (``--servers``): (mode, server) pairs drawn in turn instead of
    ``mode``, each swapped in first, keyed ``"<mode>/<server>"``; the servers
    from before are put back at the end, whatever happens.
    """
    from rich.console import Console

    from lab.workshop.charts import timeline_chart
    from lab.workshop.loadgen import run_load

    console = console or Console()
    modes = list(MODES) if mode == "all" else [mode]
    if not servers and any(m not in MODES for m in modes):
        raise UsageError(f"mode must be one of {', '.join(MODES)} or all, not {mode!r}")
    if not endpoint.startswith("/"):
        endpoint = "/" + endpoint
    base = (url or lab_url()).rstrip("/")
    require_lab(base)
    samples: dict[str, list[Sample]] = {}
    summaries: dict[str, TimelineSummary] = {}
    pairs = plan(base, modes, servers)
    # (mode, server, path, key) per panel; the key names the server only with --servers.
    runs = [(m, srv, endpoint, label(m, srv) if servers else m) for m, srv in pairs]
    if compare:
        other = compare if compare.startswith("/") else "/" + compare
        runs = [r for m, s, p, k in runs for r in ((m, s, p, k), (m, s, other, f"{k} {other}"))]
    with swapping(servers) as use:
        for m, server, path, key in runs:
            use(m, server)
            result = run_load(mode_url(base, m, path), concurrency, requests_total=requests_total)
            samples[key] = result.samples
            summaries[key] = summarize_timeline(m, result.samples, server)
    png = _png_path(out, "servers" if servers else mode)
    png.parent.mkdir(parents=True, exist_ok=True)
    panels = [
        (m, panel_title(summaries[key], path, concurrency), build_lanes(samples[key]))
        for m, _, path, key in runs
    ]
    timeline_chart(panels, png)
    # The samples beside the picture, so every bar can be checked against a number.
    data = {
        "endpoint": endpoint,
        "concurrency": concurrency,
        "compare": compare,
        "servers": {key: summaries[key].server for key in samples},
        "modes": {key: [sample_record(x) for x in samples[key]] for key in samples},
    }
    png.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    for key in samples:
        s = summaries[key]
        errors = sum(1 for x in samples[key] if not x.ok)
        console.print(s.line() + (f", [red]{errors} errors[/red]" if errors else ""))
    console.print(f"saved: {png}, {png.with_suffix('.json')}")
    return TimelineRun(endpoint, concurrency, samples, summaries, png)


def sample_record(s: Sample) -> dict[str, Any]:
    """One request as saved beside a timeline PNG (Unix seconds, as the trace headers)."""
    t = s.trace
    return {
        "sent": s.sent,
        "latency_ms": round(s.latency_s * 1000, 3),
        "status": s.status,
        "pid": t.pid,
        "worker": t.worker,
        "start": t.start,
        "end": t.end,
    }


def _png_path(out: Path | None, mode: str) -> Path:
    name = f"timeline-{mode}.png"
    if out is None:
        return default_out_dir() / name
    if out.suffix.lower() == ".png":
        return out
    return out / name


def register(app: typer.Typer, guard: Guard) -> None:
    """Add ``lab timeline`` to ``app``; ``guard`` is the CLI's error policy (lab.cli)."""

    @app.command()
    @guard
    def timeline(
        mode: Annotated[str, typer.Option(help=f"{', '.join(MODES)} or all")] = "wsgi",
        endpoint: Annotated[str, typer.Option(help="path and query")] = DEFAULT_ENDPOINT,
        requests: Annotated[int, typer.Option("--requests", "-n", min=1, max=2000)] = (
            DEFAULT_REQUESTS
        ),
        concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, max=200)] = (
            DEFAULT_CONCURRENCY
        ),
        url: Annotated[str | None, typer.Option(help="the lab (default LAB_URL or :8080)")] = None,
        out: Annotated[Path | None, typer.Option(help="PNG file or directory")] = None,
        compare: Annotated[
            str | None,
            typer.Option(help="a second endpoint, drawn beside the first on the same time axis"),
        ] = None,
        servers: Annotated[
            str | None,
            typer.Option(
                help=f"MODE/SERVER pairs drawn in turn instead of --mode, e.g. {EXAMPLE}; each "
                "is swapped in (lab server) and the servers from before come back at the end"
            ),
        ] = None,
    ) -> None:
        """Draw one lane per process that ran app code, one bar per request."""
        chosen = parse_servers(servers) if servers is not None else None
        if mode != "all" and mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)} or all, not {mode!r}")
        run_timeline(
            mode, endpoint, requests, concurrency, url, out, compare=compare, servers=chosen
        )
