"""``lab timeline``: fire N requests at a mode and draw who ran each one, and when.

One lane per process that ran app code (``X-Gateway-Pid``), one bar per request
from its ``X-Gateway-Start`` to its ``X-Gateway-End``. CGI: a new lane for every
request (a new process each time), each bar in two shades: the process's
start-up up to ``X-Gateway-App-Start`` (and its exit after ``X-Gateway-App-End``),
light; the app's own work, full. WSGI: a few lanes, the bars in each never
overlap (a sync worker does one thing at a time). ASGI: few lanes, bars stacked
on top of each other (one event loop with many requests in flight).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from lab.errors import UsageError
from lab.routing import MODES
from lab.workshop.analysis import (
    Sample,
    Trace,
    build_lanes,
    drawable,
    overlap_per_pid,
    steps_overlap,
)
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
class Figure:
    """One of the workshop's recorded timelines (docs/workshop.md, docs/results/)."""

    name: str
    mode: str
    endpoint: str
    requests: int
    concurrency: int
    compare: tuple[str, ...] = ()


# ``lab timeline --workshop`` (``make timeline``): the figures docs/results holds.
WORKSHOP_FIGURES: Final = (
    Figure("timeline-coffee.png", "all", "/coffee?ms=100", 30, 10),
    Figure("timeline-breakfast.png", "all", "/breakfast?coffee_ms=50&omelette_ms=20", 24, 8),
    Figure(
        "timeline-asgi-blocking.png",
        "asgi",
        "/coffee?ms=100",
        20,
        10,
        ("/blocking-coffee?ms=100", "/blocking-coffee?ms=100&thread=1"),
    ),  # fmt: skip
)


@dataclass(frozen=True)
class TimelineSummary:
    mode: str
    requests: int
    drawn: int  # requests with a pid, Start and End
    processes: int
    max_overlap: int
    wall_ms: float  # first app start to last app end
    # CGI: medians over the requests with the split (None: no request had it)
    startup_ms: float | None = None  # Start to App-Start: fork, exec, interpreter, imports
    app_ms: float | None = None  # App-Start to App-End: the app's own work
    server: str = ""  # the server behind the mode's route, "" if unknown
    # /breakfast: requests whose body said when its steps ran, and in how many of
    # them two steps ran at once (the coffee brewing while the omelette cooked)
    with_steps: int = 0
    overlapping_steps: int = 0

    @property
    def name(self) -> str:
        """``wsgi/gthread``: what was measured (the mode alone when the server is unknown)."""
        return label(self.mode, self.server) if self.server else self.mode

    def line(self) -> str:
        text = (
            f"{self.name}: {self.requests} requests, {self.processes} processes ran app code, "
            f"at most {self.max_overlap} at once in one process, "
            f"{self.wall_ms:,.0f} ms from first start to last end"
        )
        if self.startup_ms is not None and self.app_ms is not None:
            text += f"; median start-up {self.startup_ms:,.1f} ms, app {self.app_ms:,.1f} ms"
        if self.with_steps:
            text += f"; {self.steps_line()}"
        return text

    def steps_line(self) -> str:
        """How the steps inside the requests ran, e.g. ``steps overlapped in 24 of 24 requests``."""
        if self.overlapping_steps == 0:
            return f"steps one after the other in all {self.with_steps} requests"
        return f"steps overlapped in {self.overlapping_steps} of {self.with_steps} requests"


def summarize_timeline(mode: str, samples: Sequence[Sample], server: str = "") -> TimelineSummary:
    usable = drawable(samples)
    overlaps = overlap_per_pid(usable)
    starts = [s.trace.start for s in usable if s.trace.start is not None]
    ends = [s.trace.end for s in usable if s.trace.end is not None]
    splits = [x for x in (s.trace.split_ms() for s in usable) if x is not None]
    overlaps_inside = [x for x in (steps_overlap(s.steps) for s in usable) if x is not None]
    return TimelineSummary(
        mode=mode,
        requests=len(samples),
        drawn=len(usable),
        processes=len(overlaps),
        max_overlap=max(overlaps.values(), default=0),
        wall_ms=(max(ends) - min(starts)) * 1000 if starts else 0.0,
        startup_ms=round(statistics.median(x[0] for x in splits), 3) if splits else None,
        app_ms=round(statistics.median(x[1] for x in splits), 3) if splits else None,
        server=server,
        with_steps=len(overlaps_inside),
        overlapping_steps=sum(overlaps_inside),
    )


def panel_title(summary: TimelineSummary, endpoint: str, concurrency: int) -> str:
    title = (
        f"{series_label(summary.mode, summary.server)}  GET {endpoint}, "
        f"{summary.requests} requests, "
        f"{concurrency} clients: {summary.processes} processes, "
        f"at most {summary.max_overlap} at once per process"
    )
    if summary.startup_ms is not None and summary.app_ms is not None:
        title += (
            f"\nmedian per request: {summary.startup_ms:,.0f} ms start-up (light), "
            f"{summary.app_ms:,.0f} ms app work (full)"
        )
    if summary.with_steps:
        title += f"\n{summary.steps_line()}"
    return title


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
    compare: str | Sequence[str] | None = None,
    servers: Sequence[Pair] | None = None,
) -> TimelineRun:
    """Fire the requests (one mode, or each mode in turn for ``all``), draw, print a summary.

    ``out`` is the PNG path, or a directory to put ``timeline-<mode>.png`` in. With
    ``compare`` (one endpoint or several), each mode also gets a panel for each, on
    the same time axis (``/coffee`` beside ``/blocking-coffee`` and its
    ``asyncio.to_thread`` fix: the healthy loop, the blocked one, the unblocked one);
    their samples and summaries are keyed ``"<mode> <endpoint>"``.

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
    others = [compare] if isinstance(compare, str) else list(compare or [])
    others = [o if o.startswith("/") else "/" + o for o in others]
    pairs = plan(base, modes, servers)
    # (mode, server, path, key) per panel; the key names the server only with --servers.
    runs = []
    for m, srv in pairs:
        key = label(m, srv) if servers else m
        runs += [(m, srv, endpoint, key)] + [(m, srv, o, f"{key} {o}") for o in others]
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
        "compare": others,
        "servers": {key: summaries[key].server for key in samples},
        "modes": {key: [sample_record(x) for x in samples[key]] for key in samples},
        "summaries": {key: asdict(summaries[key]) for key in summaries},
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
    return (
        {
            "sent": s.sent,
            "latency_ms": round(s.latency_s * 1000, 3),
            "status": s.status,
            "pid": t.pid,
            "worker": t.worker,
            "start": t.start,
            "end": t.end,
        }
        | split_record(t)
        | steps_record(s)
    )


def steps_record(s: Sample) -> dict[str, Any]:
    """The steps the app reported (``/breakfast``), as its body gave them; else nothing."""
    if not s.steps:
        return {}
    return {"steps": {x.name: {"start": x.start, "end": x.end} for x in s.steps}}


def split_record(t: Trace) -> dict[str, Any]:
    """CGI: App-Start and App-End, and the bar's pieces in ms: start-up (Start to
    App-Start), app (App-Start to App-End), exit (App-End to End). Else nothing."""
    if t.app_start is None:
        return {}
    split = t.split_ms()
    record: dict[str, Any] = {"app_start": t.app_start, "app_end": t.app_end}
    keys = ("startup_ms", "app_ms", "exit_ms")
    return record | {
        k: (round(v, 3) if split else None) for k, v in zip(keys, split or (0, 0, 0), strict=True)
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
            list[str] | None,
            typer.Option(
                help="another endpoint, drawn below the first on the same time axis "
                "(repeat for more)"
            ),
        ] = None,
        workshop: Annotated[
            bool,
            typer.Option(
                "--workshop",
                help="draw the workshop's figures (docs/results/timeline-*.png) into --out, "
                "a directory; the other options are ignored",
            ),
        ] = False,
        servers: Annotated[
            str | None,
            typer.Option(
                help=f"MODE/SERVER pairs drawn in turn instead of --mode, e.g. {EXAMPLE}; each "
                "is swapped in (lab server) and the servers from before come back at the end"
            ),
        ] = None,
    ) -> None:
        """Draw one lane per process that ran app code, one bar per request."""
        if workshop:
            if out is not None and out.suffix.lower() == ".png":
                raise UsageError("--workshop draws several figures: --out must be a directory")
            folder = out or default_out_dir()
            for figure in WORKSHOP_FIGURES:
                run_timeline(
                    figure.mode, figure.endpoint, figure.requests, figure.concurrency, url,
                    folder / figure.name, compare=figure.compare,
                )  # fmt: skip
            return
        chosen = parse_servers(servers) if servers is not None else None
        if mode != "all" and mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)} or all, not {mode!r}")
        run_timeline(
            mode, endpoint, requests, concurrency, url, out, compare=compare, servers=chosen
        )
