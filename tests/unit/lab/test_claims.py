"""Verdict rules of `lab claims`, on recorded numbers.

Two kinds of cases: numbers recorded on the lab (docs/results/claims.json, the
full run on a 2-core machine, re-judged here), and small tables of numbers at
and around each threshold. No network, no timing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lab.workshop import verdicts as v
from lab.workshop.claims import CLAIM_IDS, CLAIMS, ClaimResult, report_markdown
from lab.workshop.verdicts import CAVEAT, FAILS, HOLDS, judge

RECORDED = Path(__file__).resolve().parents[3] / "docs" / "results" / "claims.json"


def recorded_claims() -> list[Any]:
    data = json.loads(RECORDED.read_text(encoding="utf-8"))
    return [pytest.param(c, id=c["id"]) for c in data["claims"]]


@pytest.mark.parametrize("recorded", recorded_claims())
def test_recorded_run_judged_again_gives_the_recorded_verdict(recorded: dict[str, Any]) -> None:
    verdict = judge(recorded["id"], recorded["numbers"])
    assert (verdict.level, verdict.why) == (recorded["verdict"], recorded["why"])


def test_recorded_run_covers_every_claim() -> None:
    data = json.loads(RECORDED.read_text(encoding="utf-8"))
    assert [c["id"] for c in data["claims"]] == list(CLAIM_IDS)


# Numbers as the experiments record them; each case changes one thing.
PROCESS = {
    "requests": 40,
    "distinct_pids": 40,
    "cgi_p50_ms": 60.0,
    "wsgi_p50_ms": 2.0,
    "binary_read_ms": 0.5,
    "interpreter_start_ms": 20.0,
}
ONE_AT_A_TIME = {"max_overlap": 1, "workers": 5, "io_ms": 100, "rps": 47.0}
WORKERS = {
    "cores": 2,
    "workers_formula": 5,
    "workers_4x": 9,
    "io_rps_1": 9.5,
    "io_rps_formula": 47.0,
    "io_rps_4x": 85.0,
}
ASGI_IO = {"asgi_rps": 900.0, "wsgi_rps": 47.0, "concurrency": 100}
CPU = {"asgi_rps": 90.0, "wsgi_rps": 95.0}
BLOCKING = {"asgi_blocking_rps": 19.0, "asgi_coffee_rps": 450.0, "wsgi_coffee_rps": 47.0}

CASES = [
    # 1. process per request
    pytest.param("process-per-request", PROCESS, CAVEAT, id="cgi-new-process-cost-not-disk"),
    pytest.param(
        "process-per-request",
        PROCESS | {"binary_read_ms": 30.0},
        HOLDS,
        id="cgi-cost-and-binary-read-is-large",
    ),
    pytest.param(
        "process-per-request", PROCESS | {"distinct_pids": 39}, FAILS, id="cgi-process-reused"
    ),
    pytest.param(
        "process-per-request",
        PROCESS | {"cgi_p50_ms": 2.0 + v.MIN_PROCESS_COST_MS - 0.1},
        FAILS,
        id="cgi-no-measurable-cost",
    ),
    # 2. one at a time
    pytest.param("one-at-a-time", ONE_AT_A_TIME, HOLDS, id="wsgi-no-overlap-rps-as-predicted"),
    pytest.param(
        "one-at-a-time", ONE_AT_A_TIME | {"max_overlap": 2}, FAILS, id="wsgi-worker-overlapped"
    ),
    pytest.param(
        "one-at-a-time",
        ONE_AT_A_TIME | {"rps": 50 * (1 - v.THROUGHPUT_TOLERANCE) - 1},
        CAVEAT,
        id="wsgi-no-overlap-but-slower-than-predicted",
    ),
    pytest.param(
        "one-at-a-time",
        ONE_AT_A_TIME | {"rps": 50 * (1 - v.THROUGHPUT_TOLERANCE)},
        HOLDS,
        id="wsgi-at-tolerance-edge",
    ),
    # 3. worker formula
    pytest.param("worker-formula", WORKERS, FAILS, id="more-workers-help-io"),
    pytest.param(
        "worker-formula",
        WORKERS | {"io_rps_4x": 47.0 * (1 + v.MIN_WORKER_GAIN) - 0.1},
        HOLDS,
        id="more-workers-no-help",
    ),
    # 4. ASGI on IO
    pytest.param("asgi-wins-io", ASGI_IO, HOLDS, id="asgi-clear-win"),
    pytest.param("asgi-wins-io", ASGI_IO | {"asgi_rps": 47.0 * 1.3}, CAVEAT, id="asgi-small-win"),
    pytest.param("asgi-wins-io", ASGI_IO | {"asgi_rps": 47.0}, FAILS, id="asgi-no-win"),
    # 5. CPU
    pytest.param("cpu-little-difference", CPU, HOLDS, id="cpu-same"),
    pytest.param(
        "cpu-little-difference", CPU | {"asgi_rps": 95.0 * 1.3}, CAVEAT, id="cpu-moderate"
    ),
    pytest.param("cpu-little-difference", CPU | {"asgi_rps": 30.0}, FAILS, id="cpu-large"),
    # 6. blocking
    pytest.param("blocking-hurts-asgi", BLOCKING, HOLDS, id="blocking-worse-than-wsgi"),
    pytest.param(
        "blocking-hurts-asgi",
        BLOCKING | {"asgi_blocking_rps": 60.0},
        CAVEAT,
        id="blocking-hurts-but-still-beats-wsgi",
    ),
    pytest.param(
        "blocking-hurts-asgi",
        BLOCKING | {"asgi_blocking_rps": 400.0},
        FAILS,
        id="blocking-no-effect",
    ),
]


@pytest.mark.parametrize(("claim_id", "numbers", "expected"), CASES)
def test_rule(claim_id: str, numbers: dict[str, float], expected: str) -> None:
    verdict = judge(claim_id, numbers)
    assert verdict.level == expected
    assert verdict.why.endswith(".")


def test_every_claim_has_a_rule_and_an_experiment() -> None:
    assert set(v.RULES) == set(CLAIM_IDS)


def test_report_shows_claim_numbers_and_verdict() -> None:
    claim = CLAIMS[0]
    result = ClaimResult(claim, dict(PROCESS), judge(claim.id, PROCESS))
    text = report_markdown([result], {"machine": {"cores": 2}, "command": "lab claims"})
    assert f"| 1 | {claim.title} | **{CAVEAT}** |" in text
    assert "| cgi_p50_ms | 60 |" in text
    assert f"**Verdict: {CAVEAT}.**" in text
