"""The one-line models behind the bench's dotted lines and the claims' ratios."""

from __future__ import annotations

import pytest

from lab.workshop.analysis import Sample, Trace, build_lanes
from lab.workshop.bench import model_lines
from lab.workshop.models import little_latency_ms, model_rps

TWO_CORES = {"cgi": 1, "wsgi": 5, "asgi": 2}


@pytest.mark.parametrize(
    ("mode", "scenario", "clients", "expected"),
    [
        pytest.param("wsgi", "io", 50, 50.0, id="wsgi-io-workers-over-sleep"),
        pytest.param("wsgi", "io", 2, 20.0, id="wsgi-io-fewer-clients-than-workers"),
        pytest.param("asgi", "io", 50, 500.0, id="asgi-io-clients-over-sleep"),
        pytest.param("wsgi", "cpu", 50, 100.0, id="wsgi-cpu-cpus-over-cpu-time"),
        pytest.param("asgi", "cpu", 50, 100.0, id="asgi-cpu-two-loops-two-cpus"),
        pytest.param("asgi", "blocking", 50, 20.0, id="asgi-blocked-loops-over-sleep"),
        pytest.param("wsgi", "mixed", 50, 5 / 0.07, id="wsgi-mixed-one-after-the-other"),
        pytest.param("asgi", "mixed", 1, 20.0, id="asgi-mixed-overlapped-in-the-app"),
    ],
)
def test_model_rps(mode: str, scenario: str, clients: int, expected: float) -> None:
    assert model_rps(mode, scenario, clients, TWO_CORES, 2.0) == pytest.approx(expected)


def test_no_model_for_hello_or_cgi() -> None:
    assert model_rps("wsgi", "hello", 10, TWO_CORES, 2.0) is None
    assert model_rps("cgi", "io", 10, TWO_CORES, 2.0) is None


def test_one_loop_on_many_cpus_uses_one() -> None:
    assert model_rps("asgi", "cpu", 50, {"asgi": 1}, 8.0) == pytest.approx(50.0)


def test_little_latency() -> None:
    assert little_latency_ms(100, 48.9) == pytest.approx(2045.0, abs=1)


def test_bench_model_lines_follow_the_workers_in_force() -> None:
    meta = {
        "lab": {"workers": {"wsgi": 9, "asgi": 4}, "gateway_cpus": {"wsgi": 4.0, "asgi": 4.0}},
        "scenarios": ["io", "hello"],
        "modes": ["wsgi", "asgi", "cgi"],
        "levels": [1, 50],
    }
    lines = model_lines(meta)
    assert lines[("io", "wsgi")] == [(1, pytest.approx(10.0)), (50, pytest.approx(90.0))]
    assert set(lines) == {("io", "wsgi"), ("io", "asgi")}


def test_lanes_carry_the_wait_before_each_request() -> None:
    def sample(sent: float, start: float, end: float) -> Sample:
        return Sample(sent, end - sent + 0.001, 200, Trace("wsgi", 7, 7, start, end))

    (lane,) = build_lanes([sample(100.0, 100.0, 100.1), sample(100.0, 100.1, 100.2)])
    first, second = lane.bars
    assert first.sent_ms == 0.0 and first.start_ms == 0.0
    assert second.sent_ms == 0.0 and second.start_ms == pytest.approx(100.0)
