"""PNG charts for the bench and the timeline (matplotlib, Agg backend: no display needed).

Colours stay the same everywhere: one per mode, the dashboard's Okabe-Ito
palette (safe for colour-blind viewers; nginx/static/lab/dashboard.css
``--cgi``, ``--wsgi``, ``--asgi``, ``--error``; tests/unit/lab/test_workshop.py
checks they match), so a learner who has seen the dashboard recognises the
bench chart's bars and the timeline's lanes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 -- after choosing the backend
from matplotlib.patches import Patch  # noqa: E402

from lab.workshop.servers import series_label

if TYPE_CHECKING:
    from lab.workshop.analysis import Bar, Lane

MODE_COLOURS: Final = {"cgi": "#e69f00", "wsgi": "#56b4e9", "asgi": "#009e73"}
ERROR_COLOUR: Final = "#d55e00"
WAIT_COLOUR: Final = "#333333"  # a request sent but not yet started: dashed, over the bars
PERCENTILE_SHADES: Final = {"p50_ms": 1.0, "p95_ms": 0.65, "p99_ms": 0.35}
DPI: Final = 120
LOG_SPREAD: Final = 30  # a panel whose rates differ more than this uses a log scale
TRACK_GROWTH: Final = 0.3  # extra lane height per extra track (request in flight at once)
STEP_TRACK_GROWTH: Final = 0.6  # the same for bars with step stripes: room to tell them apart
STARTUP_TINT: Final = 0.6  # a CGI script's start-up: its mode's colour, this share toward white
SMALL_LABELS_FROM: Final = 48  # lanes in a panel from which pid labels get a smaller font
# Steps inside a request (/breakfast), drawn as thin stripes across its bar, one
# row each: steps that ran at once lie one above the other, steps that ran one
# after the other follow each other along the time axis.
# Brown and yellow differ in lightness as well as hue (readable without colour
# vision); each stripe has a dark edge so the yellow one shows on every mode's colour.
STEP_COLOURS: Final = {"coffee": "#6b3e1f", "omelette": "#f0e442"}
STEP_LABELS: Final = {
    "coffee": "coffee: the wait (sleep)",
    "omelette": "omelette: CPU work",
}
# Where each stripe's row starts and how tall it is, as shares of the bar's height:
# both clear of the dashed wait line, drawn at 0.83 of a bar's height.
STEP_ROWS: Final = (0.1, 0.44)
STEP_HEIGHT: Final = 0.3

plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11})


def _colour(mode: str) -> str:
    return MODE_COLOURS.get(mode, "#666666")


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _ordered(values: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


# A second or third server of one mode: the mode's colour, another line and marker.
SERVER_STYLES: Final = (("-", "o"), ("--", "s"), ("-.", "^"))


def series_of(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The (mode, server) pairs of bench rows, in order of first appearance."""
    return _ordered([(r["mode"], str(r.get("server") or "")) for r in rows])


def _style(series: Sequence[tuple[str, str]], mode: str, server: str) -> tuple[str, str]:
    nth = [s for m, s in series if m == mode].index(server)
    return SERVER_STYLES[nth % len(SERVER_STYLES)]


Models = Mapping[tuple[str, str], Sequence[tuple[int, float]]]  # (scenario, mode) -> points


def throughput_chart(
    rows: Sequence[Mapping[str, Any]], path: Path, note: str = "", models: Models | None = None
) -> Path:
    """One panel per scenario: requests/s against concurrency, one line per (mode, server), and
    the model's prediction per mode as a dotted line (lab.workshop.models)."""
    scenarios = _ordered([r["scenario"] for r in rows])
    series = series_of(rows)
    levels = sorted({int(r["concurrency"]) for r in rows})
    cols = min(3, len(scenarios))
    nrows = math.ceil(len(scenarios) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.0 * nrows), squeeze=False)
    for ax, scenario in zip(axes.flat, scenarios, strict=False):
        path_shown = next(r["path"] for r in rows if r["scenario"] == scenario)
        for mode, server in series:
            points = sorted(
                (int(r["concurrency"]), float(r["rps"]))
                for r in rows
                if r["scenario"] == scenario
                and (r["mode"], str(r.get("server") or "")) == (mode, server)
            )
            line, marker = _style(series, mode, server)
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    xs, ys, marker=marker, linestyle=line, linewidth=2, color=_colour(mode),
                    label=series_label(mode, server),
                )  # fmt: skip
            # The model describes each mode under its server in force: one line per mode.
            first = next(s for m, s in series if m == mode) == server
            model = (models or {}).get((scenario, mode)) if first else None
            if model:
                mx, my = zip(*model, strict=True)
                ax.plot(
                    mx, my, linestyle=":", linewidth=1.6, color=_colour(mode),
                    label=f"{mode.upper()} model",
                )  # fmt: skip
        ax.set_title(f"{scenario}: {path_shown}")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("successful requests per second")
        if len(levels) > 1 and levels[-1] / max(levels[0], 1) >= 10:
            ax.set_xscale("log")
        ax.set_xticks(levels, [str(x) for x in levels])
        ax.minorticks_off()
        rates = [float(r["rps"]) for r in rows if r["scenario"] == scenario and float(r["rps"]) > 0]
        if rates and max(rates) / min(rates) >= LOG_SPREAD:
            ax.set_yscale("log")  # e.g. hello: CGI's few req/s next to ASGI's thousands
            ax.set_ylabel("successful requests/s (log scale)")
        else:
            ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
    for ax in list(axes.flat)[len(scenarios) :]:
        ax.set_visible(False)
    title = "Throughput vs concurrency, per scenario" + ("; dotted: the model" if models else "")
    fig.suptitle(f"{title} ({note})" if note else title)
    fig.tight_layout()
    return _save(fig, path)


def error_share(row: Mapping[str, Any]) -> float:
    """Errors among all answers of one bench cell (0 when nothing was answered)."""
    requests = int(row.get("requests") or 0)
    return int(row.get("errors") or 0) / requests if requests else 0.0


def latency_chart(
    rows: Sequence[Mapping[str, Any]], path: Path, concurrency: int, note: str = ""
) -> Path:
    """One panel per scenario at one concurrency level: a bar per (mode, server) (p50), with a
    line up to its p99, so the modes are compared where the question is asked."""
    chosen = [r for r in rows if int(r["concurrency"]) == concurrency]
    series = series_of(chosen)
    scenarios = _ordered([r["scenario"] for r in chosen])
    fig, axes = plt.subplots(
        1,
        len(scenarios),
        figsize=(max(3.6, 0.55 * len(series) + 1.4) * len(scenarios), 4.4),
        squeeze=False,
        sharey=True,
    )
    tallest = max((float(r["p99_ms"]) for r in chosen), default=1.0)
    lowest = min((float(r["p50_ms"]) for r in chosen if float(r["p50_ms"]) > 0), default=1.0)
    for ax, scenario in zip(axes.flat, scenarios, strict=True):
        by_series = {
            (r["mode"], str(r.get("server") or "")): r for r in chosen if r["scenario"] == scenario
        }
        for j, (mode, server) in enumerate(series):
            row = by_series.get((mode, server))
            if row is None:
                continue
            p50, p99 = max(float(row["p50_ms"]), 0.01), max(float(row["p99_ms"]), 0.01)
            ax.bar(j, p50, 0.7, color=_colour(mode), label="p50" if j == 0 else None)
            ax.plot([j, j], [p50, p99], color="#333333", linewidth=1.2)
            ax.plot([j], [p99], marker="_", markersize=14, color="#333333")
            # A refusal (e.g. CGI's 503 past its script limit) is fast: say how many
            # answers were refused, so short bars are not read as fast service.
            share = error_share(row)
            if share > 0:
                ax.text(
                    j, p99 * 1.4, f"{share:.0%}\nrefused", ha="center", va="bottom",
                    fontsize=8, color=ERROR_COLOUR,
                )  # fmt: skip
        ax.set_title(f"{scenario}: {by_series[next(iter(by_series))]['path']}", fontsize=10)
        names = [series_label(m, srv).replace(" ", "\n") for m, srv in series]
        ax.set_xticks(range(len(series)), names, fontsize=8 if len(series) > 3 else None)
        ax.set_yscale("log")
        ax.set_ylim(bottom=lowest / 3, top=max(tallest, 1.0) * 8)
        ax.grid(True, axis="y", alpha=0.3)
    axes.flat[0].set_ylabel("latency, ms (log scale): bar p50, whisker to p99")
    clients = "1 client" if concurrency == 1 else f"{concurrency} clients"
    title = f"Latency at {clients}, per scenario"
    fig.suptitle(f"{title} ({note})" if note else title)
    fig.tight_layout()
    return _save(fig, path)


def bench_charts(
    rows: Sequence[Mapping[str, Any]],
    out_dir: Path,
    title_note: str = "",
    models: Models | None = None,
) -> list[Path]:
    """throughput.png plus latency-c<N>.png for the lowest and highest concurrency level."""
    if not rows:
        return []
    paths = [throughput_chart(rows, out_dir / "throughput.png", title_note, models)]
    levels = sorted({int(r["concurrency"]) for r in rows})
    for level in dict.fromkeys((levels[0], levels[-1])):
        paths.append(latency_chart(rows, out_dir / f"latency-c{level}.png", level, title_note))
    return paths


def timeline_chart(panels: Sequence[tuple[str, str, Sequence[Lane]]], path: Path) -> Path:
    """Stacked panels (mode, title, lanes): one lane per process, one bar per request.

    Requests that overlap inside one process are drawn on separate tracks of
    its lane, so overlap is visible as stacked bars, not hidden behind each other.
    """
    heights = [max(sum(lane_height(lane) for lane in lanes), 1.0) for _, _, lanes in panels]
    fig_h = min(1.5 + 0.28 * sum(heights) + 1.3 * len(panels), 60.0)
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(12, fig_h),
        squeeze=False,
        sharex=True,
        gridspec_kw={"height_ratios": [h + 2 for h in heights]},
    )
    for ax, (mode, title, lanes) in zip(axes.flat, panels, strict=True):
        _draw_lanes(ax, mode, lanes)
        ax.set_title(title, loc="left")
        ax.tick_params(labelbottom=True)  # every panel keeps its time axis
    axes.flat[-1].set_xlabel(
        "ms since the first request was sent; bar: app start to end (CGI: light = the "
        "script's process start-up and exit); dashed: sent, waiting"
    )
    fig.tight_layout()
    return _save(fig, path)


def lane_height(lane: Lane) -> float:
    """A lane grows with its tracks, so stacked (overlapping) bars stay visible; more
    when its bars carry step stripes, so the stripes of stacked bars stay readable."""
    growth = STEP_TRACK_GROWTH if any(bar.steps for bar in lane.bars) else TRACK_GROWTH
    return 1.0 + growth * (lane.tracks - 1)


def _draw_lanes(ax: Any, mode: str, lanes: Sequence[Lane]) -> None:
    y = 0.0
    ticks: list[float] = []
    labels: list[str] = []
    many = len(lanes) >= SMALL_LABELS_FROM
    split = False  # some bar shows a CGI script's start-up apart from its app work
    steps: dict[str, None] = {}  # the step names drawn, in order of first appearance
    for lane in lanes:
        height = lane_height(lane)
        track_h = height / lane.tracks
        for bar in lane.bars:
            bottom = y + bar.track * track_h + 0.08 * track_h
            colour = _colour(mode) if bar.ok else ERROR_COLOUR
            if bar.sent_ms is not None and bar.start_ms - bar.sent_ms > 0.5:
                # The wait: sent by the client, not yet started by the app (dashed, as
                # on the dashboard), drawn over the bars it waited behind, with a tick
                # where it was sent.
                wait_y = bottom + 0.7 * track_h
                ax.plot(
                    [bar.sent_ms, bar.start_ms],
                    [wait_y] * 2,
                    color=WAIT_COLOUR,
                    linestyle=(0, (2, 1.5)),
                    linewidth=1.1,
                    zorder=3,
                )
                ax.plot([bar.sent_ms], [wait_y], marker="|", color=WAIT_COLOUR, zorder=3)
            for left, right, shade in bar_segments(bar, colour):
                ax.broken_barh(
                    [(left, max(right - left, 0.2))],
                    (bottom, 0.84 * track_h),
                    facecolors=shade,
                    edgecolors="white" if shade == colour else "none",
                    linewidth=0.5,
                )
            for left, right, row, name in step_stripes(bar):
                ax.broken_barh(
                    [(left, max(right - left, 0.2))],
                    (bottom + row * 0.84 * track_h, STEP_HEIGHT * 0.84 * track_h),
                    facecolors=STEP_COLOURS.get(name, "#444444"),
                    edgecolors="#222222",
                    linewidth=0.4,
                    zorder=2,
                )
                steps.setdefault(name, None)
            split = split or bar.app_start_ms is not None
        ticks.append(y + height / 2)
        labels.append(lane.label)
        y += height
        ax.axhline(y, color="#bbbbbb", linewidth=0.6)
    ax.set_yticks(ticks, labels, fontsize=7 if many else 9)
    ax.set_ylim(y + 0.1, -0.1)  # first process at the top
    ax.set_ylabel("process (X-Gateway-Pid)")
    ax.grid(True, axis="x", alpha=0.3)
    handles = []
    if split:
        colour = _colour(mode)
        handles += [
            Patch(facecolor=lighter(colour), label="start-up: fork, exec,\ninterpreter, "
                  "imports\n(and the exit after)"),
            Patch(facecolor=colour, label="app work"),
        ]  # fmt: skip
    handles += [
        Patch(
            facecolor=STEP_COLOURS.get(name, "#444444"), edgecolor="#222222", linewidth=0.4,
            label=STEP_LABELS.get(name, name),
        )
        for name in steps
    ]  # fmt: skip
    if handles:
        ax.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8,
            frameon=False,
        )  # fmt: skip


def lighter(colour: str, share: float = STARTUP_TINT) -> str:
    """``colour`` mixed with white: the start-up shade of a mode's colour."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    mixed = [round(c + (255 - c) * share) for c in rgb]
    return "#" + "".join(f"{c:02x}" for c in mixed)


def step_stripes(bar: Bar) -> list[tuple[float, float, float, str]]:
    """(from ms, to ms, row, name): one thin stripe per step the app reported inside
    this bar (``/breakfast``'s coffee and omelette), each step on its own row (a
    share of the bar's height, ``STEP_ROWS``), so two steps at once sit one above
    the other and one after the other follow each other. A bar without steps: []."""
    return [
        (x.start, x.end, STEP_ROWS[i % len(STEP_ROWS)], x.name) for i, x in enumerate(bar.steps)
    ]


def bar_segments(bar: Bar, colour: str) -> list[tuple[float, float, str]]:
    """(from ms, to ms, colour) pieces of one bar: a CGI bar with App-Start/-End is
    start-up (light), app work (full), exit (light); any other bar is one piece."""
    if bar.app_start_ms is None or bar.app_end_ms is None:
        return [(bar.start_ms, bar.end_ms, colour)]
    light = lighter(colour)
    pieces = [
        (bar.start_ms, bar.app_start_ms, light),
        (bar.app_start_ms, bar.app_end_ms, colour),
        (bar.app_end_ms, bar.end_ms, light),
    ]
    return [p for p in pieces if p[1] > p[0]]
