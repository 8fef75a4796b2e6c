"""``lab timeline``: fire N requests at a mode and draw who ran each one, and when.

One lane per process that ran app code (``X-Gateway-Pid``), one bar per request
from its ``X-Gateway-Start`` to its ``X-Gateway-End``. CGI: a new lane for every
request (a new process each time). WSGI: a few lanes, the bars in each never
overlap (a sync worker does one thing at a time). ASGI: few lanes, bars stacked
on top of each other (one event loop with many requests in flight).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from lab.analysis import Sample, overlap_per_pid
from lab.bench import default_out_dir, lab_url, mode_url
from lab.config import MODES

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_ENDPOINT: Final = "/coffee?ms=100"
DEFAULT_REQUESTS: Final = 30
DEFAULT_CONCURRENCY: Final = 10


@dataclass(frozen=True)
class Bar:
    start_ms: float
    end_ms: float
    track: int  # which row inside the lane (overlapping requests get different tracks)
    ok: bool


@dataclass(frozen=True)
class Lane:
    pid: int
    worker: int | None
    bars: tuple[Bar, ...]
    tracks: int

    @property
    def label(self) -> str:
        return f"pid {self.pid}"


@dataclass(frozen=True)
class TimelineSummary:
    mode: str
    requests: int
    drawn: int  # requests with a pid, Start and End
    processes: int
    max_overlap: int
    wall_ms: float  # first app start to last app end

    def line(self) -> str:
        return (
            f"{self.mode}: {self.requests} requests, {self.processes} processes ran app code, "
            f"at most {self.max_overlap} at once in one process, "
            f"{self.wall_ms:,.0f} ms from first start to last end"
        )


def assign_tracks(intervals: Sequence[tuple[float, float]]) -> tuple[list[int], int]:
    """Greedy interval partitioning: track per interval (input order), tracks used.

    Sorted by start, each interval takes the first track free by then; the
    number of tracks equals the most intervals open at once.
    """
    order = sorted(range(len(intervals)), key=lambda i: intervals[i])
    track_end: list[float] = []
    tracks = [0] * len(intervals)
    for i in order:
        start, end = intervals[i]
        for t, busy_until in enumerate(track_end):
            if busy_until <= start:
                track_end[t] = end
                tracks[i] = t
                break
        else:
            track_end.append(end)
            tracks[i] = len(track_end) - 1
    return tracks, len(track_end)


def drawable(samples: Sequence[Sample]) -> list[Sample]:
    return [
        s
        for s in samples
        if s.trace.pid is not None and s.trace.start is not None and s.trace.end is not None
    ]


def build_lanes(samples: Sequence[Sample]) -> list[Lane]:
    """Lanes in order of each process's first request; times in ms from the first start."""
    usable = drawable(samples)
    if not usable:
        return []
    t0 = min(s.trace.start for s in usable if s.trace.start is not None)
    by_pid: dict[int, list[Sample]] = defaultdict(list)
    for s in usable:
        assert s.trace.pid is not None
        by_pid[s.trace.pid].append(s)
    lanes = []
    for pid, group in by_pid.items():
        spans = [((s.trace.start or 0) - t0, (s.trace.end or 0) - t0) for s in group]
        spans_ms = [(a * 1000, b * 1000) for a, b in spans]
        tracks, used = assign_tracks(spans_ms)
        bars = tuple(
            Bar(a, b, t, s.ok) for (a, b), t, s in zip(spans_ms, tracks, group, strict=True)
        )
        lanes.append(Lane(pid, group[0].trace.worker, bars, used))
    lanes.sort(key=lambda lane: min(b.start_ms for b in lane.bars))
    return lanes


def summarize_timeline(mode: str, samples: Sequence[Sample]) -> TimelineSummary:
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
    )


def panel_title(summary: TimelineSummary, endpoint: str, concurrency: int) -> str:
    return (
        f"{summary.mode.upper()}  GET {endpoint}, {summary.requests} requests, "
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
) -> TimelineRun:
    """Fire the requests (one mode, or each mode in turn for ``all``), draw, print a summary.

    ``out`` is the PNG path, or a directory to put ``timeline-<mode>.png`` in.
    """
    from rich.console import Console

    from lab.charts import timeline_chart
    from lab.loadgen import run_load

    console = console or Console()
    modes = list(MODES) if mode == "all" else [mode]
    if any(m not in MODES for m in modes):
        raise ValueError(f"mode must be one of {', '.join(MODES)} or all, not {mode!r}")
    if not endpoint.startswith("/"):
        endpoint = "/" + endpoint
    base = (url or lab_url()).rstrip("/")
    samples: dict[str, list[Sample]] = {}
    summaries: dict[str, TimelineSummary] = {}
    for m in modes:
        result = run_load(mode_url(base, m, endpoint), concurrency, requests_total=requests_total)
        samples[m] = result.samples
        summaries[m] = summarize_timeline(m, result.samples)
    png = _png_path(out, mode)
    png.parent.mkdir(parents=True, exist_ok=True)
    panels = [
        (m, panel_title(summaries[m], endpoint, concurrency), build_lanes(samples[m]))
        for m in modes
    ]
    timeline_chart(panels, png)
    for m in modes:
        s = summaries[m]
        errors = sum(1 for x in samples[m] if not x.ok)
        console.print(s.line() + (f", [red]{errors} errors[/red]" if errors else ""))
    console.print(f"saved: {png}")
    return TimelineRun(endpoint, concurrency, samples, summaries, png)


def _png_path(out: Path | None, mode: str) -> Path:
    name = f"timeline-{mode}.png"
    if out is None:
        return default_out_dir() / name
    if out.suffix.lower() == ".png":
        return out
    return out / name


def register(app: typer.Typer) -> None:
    @app.command()
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
    ) -> None:
        """Draw one lane per process that ran app code, one bar per request."""
        if mode != "all" and mode not in MODES:
            raise typer.BadParameter(f"mode must be one of {', '.join(MODES)} or all")
        run_timeline(mode, endpoint, requests, concurrency, url, out)
