"""Numbers from recorded requests: percentiles, summaries, overlap. Pure functions only.

Everything here works on ``Sample`` records (one per request, with the trace
headers the gateway sent back), so the bench, the timeline and the claims
compute the same quantity the same way, and the unit tests need no network.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gateway import trace

# Trace headers (gateway/trace.py, CONTRACT.md): lower-case, as HTTP header names compare.
H_MODE: Final = trace.MODE.lower()
H_PID: Final = trace.PID.lower()
H_WORKER: Final = trace.WORKER.lower()
H_START: Final = trace.START.lower()
H_END: Final = trace.END.lower()
H_REQUEST_ID: Final = trace.REQUEST_ID.lower()
# CGI only: when the script's own work began and ended, and its wait for a slot.
H_APP_START: Final = trace.APP_START.lower()
H_APP_END: Final = trace.APP_END.lower()
H_QUEUE: Final = trace.QUEUE.lower()


@dataclass(frozen=True)
class Trace:
    """What the trace headers of one response say."""

    mode: str | None = None
    pid: int | None = None
    worker: int | None = None
    start: float | None = None  # Unix seconds: the app started the request
    end: float | None = None  # Unix seconds: the app finished it (absent when streamed)
    request_id: str | None = None
    # CGI: the script's work began (start-up over) and ended (the process exits next)
    app_start: float | None = None
    app_end: float | None = None
    # CGI: how long the request waited for a script slot (ms; 0.0 when one was free)
    queue_ms: float | None = None

    def split_ms(self) -> tuple[float, float, float] | None:
        """CGI: (start-up, app, exit) in ms, from Start, App-Start, App-End and End;
        None when one is missing or they are out of order."""
        points = (self.start, self.app_start, self.app_end, self.end)
        if any(p is None for p in points):
            return None
        start, app_start, app_end, end = (float(p or 0) for p in points)
        if not start <= app_start <= app_end <= end:
            return None
        return ((app_start - start) * 1000, (app_end - app_start) * 1000, (end - app_end) * 1000)


@dataclass(frozen=True)
class Step:
    """One step inside a request, as the app reported it: ``/breakfast``'s coffee
    and omelette. Unix seconds in a Sample (the trace headers' clock), ms from
    the chart's origin in a Bar."""

    name: str
    start: float
    end: float


def _seconds(value: object) -> float | None:
    """A finite JSON number as a float; None for anything else (true and false included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None  # json reads NaN and Infinity


def parse_steps(content_type: str, body: bytes | str) -> tuple[Step, ...]:
    """The ``steps`` of a JSON answer (``{"steps": {name: {"start", "end"}}}``, what
    ``/breakfast`` sends), in the body's order; () for any other answer. A step
    whose times are missing, not numbers or out of order is left out."""
    if not content_type.lower().startswith("application/json"):
        return ()
    try:
        data = json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        return ()
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, dict):
        return ()
    found = []
    for name, times in steps.items():
        if not isinstance(times, dict):
            continue
        start, end = _seconds(times.get("start")), _seconds(times.get("end"))
        if start is not None and end is not None and start <= end:
            found.append(Step(str(name), start, end))
    return tuple(found)


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it: when it was sent, how long it took, its trace."""

    sent: float  # Unix seconds, client clock (the same host as the gateways)
    latency_s: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    trace: Trace = Trace()
    error: str | None = None
    steps: tuple[Step, ...] = ()  # what the app said it did inside the request (parse_steps)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400


@dataclass(frozen=True)
class Summary:
    """One load run in the numbers the tables and charts show."""

    requests: int
    errors: int
    wall_s: float
    rps: float  # successful answers (2xx, 3xx) per second: a fast 503 is not throughput
    p50_ms: float
    p95_ms: float
    p99_ms: float
    distinct_pids: int
    max_overlap: int | None  # most requests one process ran at once; None: unknown


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _float_or_none(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def parse_trace(headers: Mapping[str, str]) -> Trace:
    """Trace from response headers (any case). A missing or garbled value is None."""
    h = {k.lower(): v for k, v in headers.items()}
    return Trace(
        mode=h.get(H_MODE),
        pid=_int_or_none(h.get(H_PID)),
        worker=_int_or_none(h.get(H_WORKER)),
        start=_float_or_none(h.get(H_START)),
        end=_float_or_none(h.get(H_END)),
        request_id=h.get(H_REQUEST_ID),
        app_start=_float_or_none(h.get(H_APP_START)),
        app_end=_float_or_none(h.get(H_APP_END)),
        queue_ms=_float_or_none(h.get(H_QUEUE)),
    )


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), linear between closest ranks (numpy's default).

    An empty sequence has no percentile: 0.0, so a run where every request
    failed still renders as a row.
    """
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, not {p}")
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """Most intervals open at one instant. One ending exactly when another starts: no overlap."""
    events: list[tuple[float, int]] = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end, -1))
    # At equal times ends (-1) sort before starts (+1).
    events.sort()
    open_now = best = 0
    for _, step in events:
        open_now += step
        best = max(best, open_now)
    return best


def app_intervals(samples: Iterable[Sample]) -> dict[int, list[tuple[float, float]]]:
    """pid -> [(start, end)] of the requests that process ran (those with Start and End)."""
    by_pid: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for s in samples:
        t = s.trace
        if t.pid is not None and t.start is not None and t.end is not None:
            by_pid[t.pid].append((t.start, t.end))
    return dict(by_pid)


def overlap_per_pid(samples: Iterable[Sample]) -> dict[int, int]:
    """pid -> the most requests that process had in its app code at once."""
    return {pid: max_overlap(iv) for pid, iv in app_intervals(samples).items()}


def distinct_pids(samples: Iterable[Sample]) -> int:
    return len({s.trace.pid for s in samples if s.trace.pid is not None})


def summarize(samples: Sequence[Sample], wall_s: float) -> Summary:
    """Successful answers per second of wall time; latency percentiles over answered requests."""
    answered = [s.latency_s * 1000 for s in samples if s.status]
    overlaps = overlap_per_pid(samples)
    errors = sum(1 for s in samples if not s.ok)
    return Summary(
        requests=len(samples),
        errors=errors,
        wall_s=wall_s,
        rps=(len(samples) - errors) / wall_s if wall_s > 0 else 0.0,
        p50_ms=percentile(answered, 50),
        p95_ms=percentile(answered, 95),
        p99_ms=percentile(answered, 99),
        distinct_pids=distinct_pids(samples),
        max_overlap=max(overlaps.values()) if overlaps else None,
    )


# -- lanes: one per process, for the timeline chart ------------------------------------


@dataclass(frozen=True)
class Bar:
    start_ms: float
    end_ms: float
    track: int  # which row inside the lane (overlapping requests get different tracks)
    ok: bool
    # When the client sent the request: the wait before start_ms (for a free worker,
    # a blocked loop, a process start) is the cost the bar alone would hide.
    sent_ms: float | None = None
    # CGI: where the start-up ends and the app's work begins and ends (ms, same origin)
    app_start_ms: float | None = None
    app_end_ms: float | None = None
    # Steps inside the request (``/breakfast``: coffee, omelette), ms from the same origin
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Lane:
    pid: int
    worker: int | None
    bars: tuple[Bar, ...]
    tracks: int

    @property
    def label(self) -> str:
        return f"pid {self.pid}"


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


def app_span_ms(trace: Trace, t0: float) -> tuple[float | None, float | None]:
    """CGI: App-Start and App-End in ms from ``t0``, when the split is known and sane."""
    if trace.split_ms() is None:
        return None, None
    assert trace.app_start is not None and trace.app_end is not None
    return (trace.app_start - t0) * 1000, (trace.app_end - t0) * 1000


def steps_ms(steps: Iterable[Step], t0: float) -> tuple[Step, ...]:
    """Steps with their times in ms from ``t0`` (Unix seconds), as a Bar holds them."""
    return tuple(Step(x.name, (x.start - t0) * 1000, (x.end - t0) * 1000) for x in steps)


def steps_overlap(steps: Sequence[Step]) -> bool | None:
    """Did any two steps of one request run at the same time? None: fewer than two.
    One ending exactly when the next starts is one after the other."""
    if len(steps) < 2:
        return None
    return max_overlap((x.start, x.end) for x in steps) > 1


def drawable(samples: Sequence[Sample]) -> list[Sample]:
    return [
        s
        for s in samples
        if s.trace.pid is not None and s.trace.start is not None and s.trace.end is not None
    ]


def build_lanes(samples: Sequence[Sample]) -> list[Lane]:
    """Lanes in order of each process's first request; times in ms from the first
    request sent (the client and the gateways share the host's clock)."""
    usable = drawable(samples)
    if not usable:
        return []
    t0 = min(
        min(s.trace.start for s in usable if s.trace.start is not None), *(s.sent for s in usable)
    )
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
            Bar(
                a, b, t, s.ok, min((s.sent - t0) * 1000, a), *app_span_ms(s.trace, t0),
                steps=steps_ms(s.steps, t0),
            )
            for (a, b), t, s in zip(spans_ms, tracks, group, strict=True)
        )  # fmt: skip
        lanes.append(Lane(pid, group[0].trace.worker, bars, used))
    lanes.sort(key=lambda lane: min(b.start_ms for b in lane.bars))
    return lanes
