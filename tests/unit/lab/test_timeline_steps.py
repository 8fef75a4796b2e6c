"""Steps inside a request (/breakfast's coffee and omelette) on the timeline: parsing
the body, placing them on the bars' time axis, the summary, the JSON and the stripes."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_hex

from apps.breakfast import kitchen
from lab.workshop.analysis import (
    Bar,
    Lane,
    Sample,
    Step,
    Trace,
    build_lanes,
    parse_steps,
    steps_overlap,
)
from lab.workshop.charts import (
    STEP_COLOURS,
    STEP_HEIGHT,
    STEP_ROWS,
    _draw_lanes,
    lane_height,
    step_stripes,
)
from lab.workshop.timeline import panel_title, sample_record, summarize_timeline

JSON = "application/json"


def breakfast_body(coffee: tuple[float, float], omelette: tuple[float, float]) -> bytes:
    """What the app sends, built by the app's own code."""
    numbers = {"coffee_ms": 50, "omelette_ms": 20}
    data = kitchen.breakfast_body(
        numbers, 7, overlapped=False, coffee=coffee, omelette=omelette, started=0.0
    )
    return kitchen.json_bytes(data)


def breakfast(
    pid: int, start: float, end: float, coffee: tuple[float, float], omelette: tuple[float, float]
) -> Sample:
    steps = parse_steps(JSON, breakfast_body(coffee, omelette))
    trace = Trace("wsgi", pid, pid, start, end)
    return Sample(sent=start, latency_s=end - start, status=200, trace=trace, steps=steps)


# -- the body ---------------------------------------------------------------------------


def test_parse_steps_reads_what_the_app_sends() -> None:
    body = breakfast_body((100.000001, 100.05), (100.05, 100.070002))
    assert parse_steps("application/json; charset=utf-8", body) == (
        Step("coffee", 100.000001, 100.05),
        Step("omelette", 100.05, 100.070002),
    )


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param("text/plain", b'{"steps": {"coffee": {"start": 1, "end": 2}}}', id="not-json"),
        pytest.param(JSON, b'{"steps": ', id="cut-off"),
        pytest.param(JSON, b"\xff\xfe{", id="not-utf8"),
        pytest.param(JSON, b"[1, 2]", id="a-list"),
        pytest.param(JSON, b'{"ms": 100, "elapsed_ms": 100.2}', id="coffee-no-steps"),
        pytest.param(JSON, b'{"steps": [[1, 2]]}', id="steps-a-list"),
        pytest.param(JSON, b'{"steps": {"coffee": [1, 2]}}', id="step-a-list"),
        pytest.param(JSON, b'{"steps": {"coffee": {"start": 2, "end": 1}}}', id="backwards"),
        pytest.param(JSON, b'{"steps": {"coffee": {"start": "1", "end": "2"}}}', id="strings"),
        pytest.param(JSON, b'{"steps": {"coffee": {"start": true, "end": 2}}}', id="a-boolean"),
        pytest.param(JSON, b'{"steps": {"coffee": {"start": NaN, "end": 2}}}', id="nan"),
        pytest.param(JSON, b'{"steps": {"coffee": {"start": 1}}}', id="no-end"),
    ],
)
def test_parse_steps_finds_none_in_anything_else(content_type: str, body: bytes) -> None:
    assert parse_steps(content_type, body) == ()


def test_a_bad_step_is_left_out_and_the_good_one_kept() -> None:
    body = json.dumps(
        {"steps": {"coffee": {"start": 5, "end": 1}, "omelette": {"start": 1, "end": 2}}}
    )
    assert parse_steps(JSON, body) == (Step("omelette", 1.0, 2.0),)


@pytest.mark.parametrize(
    ("steps", "overlap"),
    [
        pytest.param((Step("coffee", 0, 50), Step("omelette", 50, 70)), False, id="one-then-other"),
        pytest.param((Step("coffee", 0, 50), Step("omelette", 1, 21)), True, id="at-once"),
        pytest.param((Step("coffee", 0, 50),), None, id="one-step"),
        pytest.param((), None, id="none"),
    ],
)
def test_steps_overlap(steps: tuple[Step, ...], overlap: bool | None) -> None:
    assert steps_overlap(steps) is overlap


# -- lanes, summary, JSON ---------------------------------------------------------------


def test_steps_sit_on_the_bars_time_axis() -> None:
    lanes = build_lanes([breakfast(1, 100.0, 100.08, (100.005, 100.055), (100.055, 100.075))])
    bar = lanes[0].bars[0]
    assert (bar.start_ms, bar.end_ms) == pytest.approx((0.0, 80.0))
    assert [(x.name, x.start, x.end) for x in bar.steps] == [
        ("coffee", pytest.approx(5.0), pytest.approx(55.0)),
        ("omelette", pytest.approx(55.0), pytest.approx(75.0)),
    ]


def test_a_request_without_steps_has_a_bar_without_steps() -> None:
    plain = Sample(0.0, 0.1, 200, Trace("wsgi", 1, 1, 0.0, 0.1))
    assert build_lanes([plain])[0].bars[0].steps == ()
    assert "steps" not in sample_record(plain)
    summary = summarize_timeline("wsgi", [plain])
    assert summary.with_steps == 0
    assert "steps" not in summary.line() and "steps" not in panel_title(summary, "/coffee", 1)


def test_the_summary_counts_the_requests_whose_steps_overlapped() -> None:
    samples = [
        breakfast(1, 100.0, 100.06, (100.0, 100.05), (100.001, 100.03)),  # at once
        breakfast(1, 100.1, 100.17, (100.1, 100.15), (100.15, 100.17)),  # one, then the other
    ]
    summary = summarize_timeline("asgi", samples)
    assert (summary.with_steps, summary.overlapping_steps) == (2, 1)
    assert "steps overlapped in 1 of 2 requests" in summary.line()
    sequential = summarize_timeline("wsgi", samples[1:])
    assert "steps one after the other in all 1 requests" in panel_title(sequential, "/b", 1)


def test_the_json_beside_a_timeline_keeps_the_steps() -> None:
    record = sample_record(breakfast(1, 100.0, 100.08, (100.005, 100.055), (100.055, 100.075)))
    assert record["steps"] == {
        "coffee": {"start": 100.005, "end": 100.055},
        "omelette": {"start": 100.055, "end": 100.075},
    }


# -- the stripes ------------------------------------------------------------------------


def test_each_step_gets_its_own_row_inside_the_bar() -> None:
    bar = Bar(0.0, 80.0, 0, True, steps=(Step("coffee", 5.0, 55.0), Step("omelette", 6.0, 30.0)))
    stripes = step_stripes(bar)
    assert stripes == [(5.0, 55.0, STEP_ROWS[0], "coffee"), (6.0, 30.0, STEP_ROWS[1], "omelette")]
    # Two rows that do not touch, both inside the bar: overlap shows as one above the other.
    assert STEP_ROWS[0] + STEP_HEIGHT < STEP_ROWS[1] and STEP_ROWS[1] + STEP_HEIGHT <= 1.0
    assert step_stripes(Bar(0.0, 80.0, 0, True)) == []


def test_stacked_bars_with_stripes_get_more_room() -> None:
    plain = Lane(1, 1, (Bar(0.0, 10.0, 0, True), Bar(1.0, 11.0, 1, True)), tracks=2)
    striped = Lane(
        1,
        1,
        tuple(
            Bar(b.start_ms, b.end_ms, b.track, True, steps=(Step("coffee", 0.0, 5.0),))
            for b in plain.bars
        ),
        tracks=2,
    )
    assert lane_height(plain) == pytest.approx(1.3)  # as before steps existed
    assert lane_height(striped) > lane_height(plain)


def drawn_colours(lane: Lane) -> tuple[list[str], list[str]]:
    """The face colours of what _draw_lanes put on an axis, and its legend's labels."""
    fig, ax = plt.subplots()
    try:
        _draw_lanes(ax, "wsgi", [lane])
        colours = [to_hex(c) for coll in ax.collections for c in coll.get_facecolor()]
        legend = ax.get_legend()
        labels = [t.get_text() for t in legend.get_texts()] if legend else []
    finally:
        plt.close(fig)
    return colours, labels


def test_the_chart_draws_a_stripe_per_step_with_a_legend() -> None:
    steps = (Step("coffee", 5.0, 55.0), Step("omelette", 55.0, 75.0))
    colours, labels = drawn_colours(Lane(1, 1, (Bar(0.0, 80.0, 0, True, steps=steps),), 1))
    assert colours.count(STEP_COLOURS["coffee"]) == 1
    assert colours.count(STEP_COLOURS["omelette"]) == 1
    assert [label.split(":")[0] for label in labels] == ["coffee", "omelette"]
    colours, labels = drawn_colours(Lane(1, 1, (Bar(0.0, 80.0, 0, True),), 1))
    assert not set(STEP_COLOURS.values()) & set(colours) and labels == []
