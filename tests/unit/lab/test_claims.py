"""Verdict rules of `lab claims`, on recorded and synthetic numbers; `--rejudge`.

Three kinds of cases: a recorded run (tests/unit/lab/claims_recordings/, judged
again here), small tables of numbers at and around each threshold, and
synthetic runs that must come out "inconclusive: rerun" (errors, a busy
machine, an uneven split over processes, repeats that straddle a threshold).
No network, no timing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from lab import cli
from lab.errors import LabError
from lab.workshop.claims import (
    CLAIM_IDS,
    CLAIMS,
    ClaimResult,
    Sizes,
    rejudge_file,
    report_markdown,
    sizes_from,
)
from lab.workshop.claims import register as register_claims
from lab.workshop.claims import verdicts as v
from lab.workshop.claims.catalog import saturated_run_s
from lab.workshop.claims.verdicts import CAVEAT, FAILS, HOLDS, INCONCLUSIVE, judge

# The fixtures, and the run docs/results/ and docs/workshop.md quote: a change
# to a verdict rule that would flip a published verdict fails here.
RECORDINGS = sorted((Path(__file__).parent / "claims_recordings").glob("*.json"))
PUBLISHED = Path(__file__).parents[3] / "docs" / "results" / "claims.json"


def recorded_claims() -> list[Any]:
    params = []
    for path in [*RECORDINGS, PUBLISHED]:
        data = json.loads(path.read_text(encoding="utf-8"))
        name = "published" if path == PUBLISHED else path.stem
        params += [pytest.param(c, id=f"{name}-{c['id']}") for c in data["claims"]]
    return params


@pytest.mark.parametrize("recorded", recorded_claims())
def test_recorded_run_judged_again_gives_the_recorded_verdict(recorded: dict[str, Any]) -> None:
    verdict = judge(recorded["id"], recorded["numbers"])
    assert (verdict.level, verdict.why) == (recorded["verdict"], recorded["why"])
    assert {k: list(x) for k, x in verdict.model.items()} == recorded["model"]


def test_a_recording_covers_every_claim() -> None:
    assert RECORDINGS
    data = json.loads(RECORDINGS[0].read_text(encoding="utf-8"))
    assert [c["id"] for c in data["claims"]] == list(CLAIM_IDS)
    lab = data["meta"]["lab"]
    assert {"target", "servers", "gateway_cpus", "workers"} <= set(lab)


# Numbers as the experiments record them (lists: interleaved repeats); each case
# changes one thing. A quiet machine, no errors.
QUIET = {"errors": [0, 0, 0], "load_1m_start": 0.2, "machine_cpus": 2}
PROCESS = QUIET | {
    "requests": 40,
    "distinct_pids": 40,
    "cgi_p50_ms": [60.0, 61.0, 59.0],
    "wsgi_p50_ms": [2.0, 2.1, 2.0],
    "spawn_ms": [1.0, 1.2],
    "interpreter_ms": [10.0, 11.0],
    "runner_interpreter_ms": [12.0, 13.0],
    "imports_ms": [25.0, 26.0],
    "script_ms": [50.0, 52.0],
    "major_faults": 0,
    "probe_processes": 100,
}
ONE_AT_A_TIME = QUIET | {
    "workers": 5,
    "clients": 20,
    "io_ms": 100,
    "rps": [47.0, 48.0, 46.5],
    "max_overlap": 1,
    "control_max_overlap": 9,
}
WORKERS = QUIET | {
    "cpus": 2,
    "workers_formula": 5,
    "workers_4x": 9,
    "clients": 18,
    "io_ms": 100,
    "io_rps_formula": [47.0, 48.0, 47.5],
    "io_rps_4x": [85.0, 86.0, 84.0],
}
ASGI_IO = QUIET | {
    "clients": 20,
    "io_ms": 100,
    "wsgi_workers": 5,
    "asgi_rps": [190.0, 185.0, 192.0],
    "wsgi_rps": [48.0, 47.0, 48.5],
}
CPU = QUIET | {
    "clients": 20,
    "cpu_ms": 20,
    "cpus": 2,
    "asgi_workers": 2,
    "wsgi_workers": 5,
    "asgi_rps": [90.0, 91.0, 89.0],
    "wsgi_rps": [92.0, 90.0, 91.0],
    "asgi_p99_ms": [300.0, 320.0, 310.0],
    "wsgi_p99_ms": [250.0, 260.0, 255.0],
    "asgi_completions_per_client": [12.0, 12.5, 12.0],
    "wsgi_completions_per_client": [12.0, 12.5, 12.0],
    "asgi_pid_balance": [0.9, 0.8, 0.95],
}
BLOCKING = QUIET | {
    "clients": 20,
    "io_ms": 100,
    "asgi_workers": 2,
    "wsgi_workers": 5,
    "threads": 6,  # the default executor on 2 CPUs: min(32, 2 + 4)
    "asgi_blocking_rps": [19.0, 19.5, 19.2],
    # the same handler on asyncio.to_thread: 2 loops x 6 threads = 12 sleeps at once
    "asgi_fixed_rps": [116.0, 118.0, 117.0],
    "asgi_fixed_pid_balance": [0.9, 0.85, 0.95],
    "asgi_coffee_rps": [195.0, 190.0, 193.0],
    "wsgi_coffee_rps": [48.0, 47.0, 48.0],
}

CASES = [
    # 1. process per request: the start holds, "from disk" does not (0 major faults)
    pytest.param("process-per-request", PROCESS, CAVEAT, id="cgi-start-cost-not-disk"),
    pytest.param(
        "process-per-request", PROCESS | {"major_faults": 250}, HOLDS, id="cgi-pages-from-disk"
    ),
    pytest.param(
        "process-per-request",
        PROCESS | {"major_faults": 2},
        CAVEAT,
        id="cgi-a-few-faults-are-not-loading-from-disk",
    ),
    pytest.param(
        "process-per-request", PROCESS | {"distinct_pids": 39}, FAILS, id="cgi-process-reused"
    ),
    pytest.param(
        "process-per-request",
        PROCESS | {"script_ms": [5.0, 5.0]},
        FAILS,
        id="cgi-script-explains-little",
    ),
    pytest.param(
        "process-per-request",
        PROCESS | {"script_ms": [110.0, 115.0]},
        INCONCLUSIVE,
        id="cgi-script-alone-slower-than-the-request-it-explains",
    ),
    # 2. one at a time (the sync worker), with the threaded control
    pytest.param("one-at-a-time", ONE_AT_A_TIME, HOLDS, id="sync-no-overlap-rps-as-modelled"),
    pytest.param(
        "one-at-a-time", ONE_AT_A_TIME | {"max_overlap": 2}, FAILS, id="sync-worker-overlapped"
    ),
    pytest.param(
        "one-at-a-time",
        ONE_AT_A_TIME | {"rps": [30.0, 31.0, 29.0]},
        CAVEAT,
        id="sync-slower-than-model",
    ),
    pytest.param(
        "one-at-a-time",
        ONE_AT_A_TIME | {"rps": [80.0, 81.0, 79.0]},
        CAVEAT,
        id="sync-faster-than-model",
    ),
    # 3. worker formula: judged against the gain the model predicts
    pytest.param("worker-formula", WORKERS, FAILS, id="more-workers-help-io"),
    pytest.param(
        "worker-formula",
        WORKERS | {"io_rps_4x": [50.0, 51.0, 49.0]},
        HOLDS,
        id="more-workers-no-help",
    ),
    # 4. ASGI on IO: against clients / workers
    pytest.param("asgi-wins-io", ASGI_IO, HOLDS, id="asgi-clear-win"),
    pytest.param(
        "asgi-wins-io", ASGI_IO | {"asgi_rps": [70.0, 72.0, 71.0]}, CAVEAT, id="asgi-small-win"
    ),
    pytest.param(
        "asgi-wins-io", ASGI_IO | {"asgi_rps": [48.0, 47.0, 48.0]}, FAILS, id="asgi-no-win"
    ),
    # 5. CPU: throughput and tail
    pytest.param("cpu-little-difference", CPU, HOLDS, id="cpu-same-throughput-same-tail"),
    pytest.param(
        "cpu-little-difference",
        CPU | {"asgi_p99_ms": [1200.0, 1300.0, 1250.0]},
        CAVEAT,
        id="cpu-same-throughput-asgi-tail-worse",
    ),
    pytest.param(
        "cpu-little-difference",
        CPU | {"asgi_rps": [120.0, 121.0, 119.0]},
        CAVEAT,
        id="cpu-moderate",
    ),
    pytest.param(
        "cpu-little-difference", CPU | {"asgi_rps": [30.0, 31.0, 29.0]}, FAILS, id="cpu-large"
    ),
    # 6. blocking
    pytest.param("blocking-hurts-asgi", BLOCKING, HOLDS, id="blocking-worse-than-wsgi"),
    pytest.param(
        "blocking-hurts-asgi",
        BLOCKING
        | {
            "asgi_workers": 5,
            "asgi_blocking_rps": [48.0, 49.0, 48.5],
            "asgi_fixed_rps": [190.0, 192.0, 191.0],  # min(20 clients, 5 x 6) / 0.1 s
        },
        CAVEAT,
        id="blocking-equal-loops-not-worse",
    ),
    pytest.param(
        "blocking-hurts-asgi",
        BLOCKING | {"asgi_fixed_rps": [40.0, 42.0, 41.0]},
        CAVEAT,
        id="blocking-control-does-not-recover",
    ),
    pytest.param(
        "blocking-hurts-asgi",
        BLOCKING | {"asgi_blocking_rps": [190.0, 189.0, 191.0]},
        FAILS,
        id="blocking-no-effect",
    ),
]

# Synthetic runs whose evidence cannot carry a verdict.
INCONCLUSIVE_CASES = [
    pytest.param("asgi-wins-io", ASGI_IO | {"errors": [0, 3, 0]}, id="errors"),
    pytest.param("process-per-request", PROCESS | {"errors": [1, 0, 0]}, id="cgi-errors"),
    pytest.param("one-at-a-time", ONE_AT_A_TIME | {"load_1m_start": 5.9}, id="busy-machine"),
    pytest.param(
        "cpu-little-difference", CPU | {"asgi_pid_balance": [0.9, 0.1, 0.8]}, id="uneven-pids"
    ),
    pytest.param(
        "cpu-little-difference",
        CPU | {"asgi_rps": [90.0, 60.0, 91.0]},
        id="cpu-spread-straddles-little-difference",
    ),
    pytest.param(
        "cpu-little-difference",
        CPU | {"asgi_completions_per_client": [3.0, 3.0, 3.0]},
        id="cpu-tail-survivors-only",
    ),
    pytest.param(
        "cpu-little-difference",
        CPU | {"asgi_p99_ms": [400.0, 600.0, 450.0]},
        id="cpu-tail-straddles",
    ),
    pytest.param(
        "one-at-a-time", ONE_AT_A_TIME | {"rps": [47.0, 30.0, 46.0]}, id="sync-spread-straddles"
    ),
    pytest.param("one-at-a-time", ONE_AT_A_TIME | {"control_max_overlap": 1}, id="blind-detector"),
    pytest.param(
        "worker-formula", WORKERS | {"io_rps_4x": [85.0, 50.0, 84.0]}, id="gain-straddles"
    ),
    pytest.param("worker-formula", WORKERS | {"clients": 5}, id="too-few-clients"),
    pytest.param("asgi-wins-io", ASGI_IO | {"asgi_rps": [190.0, 100.0, 185.0]}, id="win-straddles"),
    pytest.param(
        "blocking-hurts-asgi",
        BLOCKING
        | {
            "asgi_workers": 5,
            "asgi_blocking_rps": [40.0, 48.0, 46.0],
            "asgi_fixed_rps": [190.0, 192.0, 191.0],
        },
        id="blocking-vs-wsgi-straddles",
    ),
    pytest.param(
        "blocking-hurts-asgi",
        BLOCKING | {"asgi_fixed_rps": [116.0, 60.0, 117.0]},
        id="blocking-control-straddles",
    ),
    pytest.param(
        "blocking-hurts-asgi",
        BLOCKING | {"asgi_blocking_rps": [19.0, 30.0, 19.2]},
        id="blocking-straddles-its-model",
    ),
    pytest.param("blocking-hurts-asgi", BLOCKING | {"errors": [0, 0, 2]}, id="blocking-errors"),
    pytest.param(
        "blocking-hurts-asgi",
        BLOCKING | {"asgi_fixed_pid_balance": [0.9, 0.0, 0.8]},
        id="blocking-control-pinned-to-one-loop",
    ),
    pytest.param(
        "process-per-request",
        PROCESS | {"cgi_p50_ms": [60.0, 150.0, 59.0]},
        id="cgi-share-straddles",
    ),
]


@pytest.mark.parametrize(("claim_id", "numbers", "expected"), CASES)
def test_rule(claim_id: str, numbers: dict[str, Any], expected: str) -> None:
    verdict = judge(claim_id, numbers)
    assert verdict.level == expected, verdict.why
    assert verdict.why.endswith(".")
    assert verdict.model  # every verdict reports measured / model


@pytest.mark.parametrize(("claim_id", "numbers"), INCONCLUSIVE_CASES)
def test_noisy_evidence_is_inconclusive(claim_id: str, numbers: dict[str, Any]) -> None:
    verdict = judge(claim_id, numbers)
    assert verdict.level == INCONCLUSIVE, verdict.why


def test_quiet_cases_are_conclusive() -> None:
    # The inconclusive cases differ from these in one number only.
    for numbers, claim_id in [
        (PROCESS, "process-per-request"),
        (ONE_AT_A_TIME, "one-at-a-time"),
        (WORKERS, "worker-formula"),
        (ASGI_IO, "asgi-wins-io"),
        (CPU, "cpu-little-difference"),
        (BLOCKING, "blocking-hurts-asgi"),
    ]:
        assert judge(claim_id, numbers).level != INCONCLUSIVE


def test_model_ratio_is_measured_over_model() -> None:
    verdict = judge("one-at-a-time", ONE_AT_A_TIME)
    median, low, high = verdict.model["rps / (workers / sleep)"]
    assert (median, low, high) == (47.0 / 50, 46.5 / 50, 48.0 / 50)


def test_cpu_tail_is_judged_against_the_other_side_too() -> None:
    wsgi_tail_worse = CPU | {"wsgi_p99_ms": [1200.0, 1300.0, 1250.0]}
    assert judge("cpu-little-difference", wsgi_tail_worse).level == CAVEAT


@pytest.mark.parametrize("cpus", [2, 8, 32])
def test_client_counts_scale_with_the_workers_in_force(cpus: int) -> None:
    # Claims 3 and 4 predict the same lead on any machine: the crowd and the
    # formula's clients grow with the workers.
    sizes = Sizes(float(cpus), 2 * cpus + 1, cpus)
    assert sizes.crowd / sizes.wsgi_workers == 4
    assert sizes.formula_clients >= sizes.four_x_workers
    numbers = WORKERS | {
        "cpus": cpus,
        "workers_formula": sizes.formula_workers,
        "workers_4x": sizes.four_x_workers,
        "clients": sizes.formula_clients,
        "io_rps_formula": [sizes.formula_workers * 10.0] * 3,
        "io_rps_4x": [sizes.four_x_workers * 10.0] * 3,
    }
    assert judge("worker-formula", numbers).level == FAILS  # more workers help IO everywhere


def test_sizes_come_from_the_lab_status() -> None:
    sizes = sizes_from({"workers": {"wsgi": 65, "asgi": 32}, "gateway_cpus": {"wsgi": 32.0}})
    assert (sizes.cpus, sizes.wsgi_workers, sizes.asgi_workers, sizes.crowd) == (32.0, 65, 32, 260)


def test_saturated_runs_last_long_enough_for_ten_completions_per_client() -> None:
    assert saturated_run_s(20, 20.0, 2.0) == 10.0  # 20 clients at 20 req/s
    assert saturated_run_s(20, 1000.0, 2.0) == 2.0  # the floor
    assert saturated_run_s(1000, 1.0, 2.0) == 60.0  # the cap


def test_report_shows_numbers_model_and_verdict() -> None:
    claim = CLAIMS[0]
    result = ClaimResult(claim, dict(PROCESS), judge(claim.id, PROCESS))
    text = report_markdown([result], {"machine": {"cores": 2}, "command": "lab claims"})
    assert f"| 1 | {claim.title} | **{CAVEAT}** |" in text
    assert "| cgi_p50_ms | 60.0 (59.0-61.0) x3 |" in text
    assert "| cgi_p50 / (wsgi_p50 + script run) |" in text
    assert f"**Verdict: {CAVEAT}.**" in text


# -- --rejudge -------------------------------------------------------------------------


def claims_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(lambda: None)  # a second command keeps `claims` a subcommand
    register_claims(app, cli.reports_lab_errors)
    return app


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "claims.json"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(None, "no such file", id="missing"),
        pytest.param("{not json", "not JSON", id="not-json"),
        pytest.param('{"claims": 3}', "not a claims.json", id="no-claims"),
        pytest.param('{"claims": [{"id": "nope", "numbers": {}}]}', "unknown claim", id="unknown"),
        pytest.param(
            '{"claims": [{"id": "asgi-wins-io", "numbers": {"asgi_rps": 1}}]}',
            "older `lab claims`",
            id="old-format",
        ),
        pytest.param(
            '{"claims": [{"id": "asgi-wins-io", "numbers": {"clients": "x", "io_ms": 1, '
            '"wsgi_workers": 1, "asgi_rps": 1, "wsgi_rps": 1}}]}',
            "bad number",
            id="bad-number",
        ),
    ],
)
def test_rejudge_a_bad_file_is_one_error_line(
    tmp_path: Path, text: str | None, message: str
) -> None:
    path = tmp_path / "absent.json" if text is None else write(tmp_path, text)
    with pytest.raises(LabError, match=message):
        rejudge_file(path)
    result = CliRunner().invoke(claims_app(), ["claims", "--rejudge", str(path)])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_rejudge_reports_changed_verdicts(tmp_path: Path) -> None:
    data = json.loads(RECORDINGS[0].read_text(encoding="utf-8"))
    data["claims"][0]["verdict"] = "does not hold"
    path = write(tmp_path, json.dumps(data))
    results, changes, text = rejudge_file(path)
    assert len(results) == len(data["claims"])
    assert changes == [f"{data['claims'][0]['id']}: does not hold -> {results[0].verdict.level}"]
    result = CliRunner().invoke(claims_app(), ["claims", "--rejudge", str(path)])
    assert result.exit_code == 0 and "verdicts changed" in result.output


def test_rejudge_the_recording_without_a_lab() -> None:
    result = CliRunner().invoke(claims_app(), ["claims", "--rejudge", str(RECORDINGS[0])])
    assert result.exit_code == 0, result.output
    assert "every verdict is the one recorded" in result.output


def test_every_claim_has_a_rule() -> None:
    assert set(v.RULES) == set(CLAIM_IDS)


def test_a_busy_run_says_where_the_numbers_lean_but_stays_inconclusive() -> None:
    busy = judge("asgi-wins-io", ASGI_IO | {"load_1m_start": 9.0})
    assert busy.level == INCONCLUSIVE
    assert busy.why.startswith("the load average was 9.0 on 2 CPUs at the start.")
    assert f'lean to "{HOLDS}"' in busy.why
    # Inconclusive for a reason of its own (a straddle): no lean.
    straddle = judge("asgi-wins-io", ASGI_IO | {"asgi_rps": [190.0, 100.0, 185.0]})
    assert "lean" not in straddle.why


def test_asgi_io_names_the_threaded_control_and_its_memory() -> None:
    numbers = ASGI_IO | {
        "gthread_rps": [180.0, 186.0, 190.0],
        "asgi_rss_mib": 30.0,
        "gthread_rss_mib": 28.0,
    }
    verdict = judge("asgi-wins-io", numbers)
    assert verdict.level == HOLDS
    assert verdict.why.startswith("against gunicorn's sync workers")
    assert "gthread" in verdict.why and "28 MiB per process" in verdict.why
    # paired per repeat: 180/190, 186/185, 190/192; the median is the third
    assert verdict.model["gthread/asgi"][0] == pytest.approx(190.0 / 192.0)
    # where it was measured, and its spread over the repeats, not the median alone
    assert "not through nginx" in verdict.why
    assert "0.99 (0.95-1.01) x ASGI's" in verdict.why


def test_cgi_names_fcgiwrap_beside_the_runner() -> None:
    verdict = judge("process-per-request", PROCESS | {"fcgiwrap_p50_ms": [50.0, 51.0, 49.0]})
    assert verdict.level == CAVEAT
    assert "fcgiwrap" in verdict.why and "50.0 ms against the lab runner's 60.0 ms" in verdict.why
    assert "fcgiwrap_p50 / (wsgi_p50 + script run)" in verdict.model


def test_blocking_reports_the_to_thread_control_against_its_model() -> None:
    verdict = judge("blocking-hurts-asgi", BLOCKING)
    assert verdict.level == HOLDS
    assert "asyncio.to_thread served 117.0 req/s" in verdict.why
    # 117 req/s x 0.1 s over min(20 clients, 2 loops x 6 threads) = 12 sleeps at once
    ratio = verdict.model["to_thread rps / (min(clients, loops x threads) / sleep)"]
    assert ratio == pytest.approx((117.0 / 120, 116.0 / 120, 118.0 / 120))
    # paired per repeat: 116/19.0, 118/19.5, 117/19.2
    assert verdict.model["to_thread / blocking"][0] == pytest.approx(117.0 / 19.2)


def test_blocking_control_model_is_capped_by_the_clients() -> None:
    # 40 threads per loop but only 20 clients: at most 20 sleeps at once, 200 req/s.
    numbers = BLOCKING | {"threads": 40, "asgi_fixed_rps": [190.0, 195.0, 198.0]}
    verdict = judge("blocking-hurts-asgi", numbers)
    assert verdict.level == HOLDS
    ratio = verdict.model["to_thread rps / (min(clients, loops x threads) / sleep)"]
    assert ratio[0] == pytest.approx(195.0 / 200)


def test_a_recording_without_the_control_is_an_older_format(tmp_path: Path) -> None:
    numbers = {k: v for k, v in BLOCKING.items() if k != "asgi_fixed_rps"}
    path = write(
        tmp_path, json.dumps({"claims": [{"id": "blocking-hurts-asgi", "numbers": numbers}]})
    )
    with pytest.raises(LabError, match="older `lab claims`"):
        rejudge_file(path)


def test_the_recording_measures_the_blocked_loop_against_its_to_thread_fix() -> None:
    # Whatever verdict the recording machine gave, the rule reads both models from it.
    data = json.loads(RECORDINGS[0].read_text(encoding="utf-8"))
    claim = next(c for c in data["claims"] if c["id"] == "blocking-hurts-asgi")
    numbers = claim["numbers"]
    assert len(numbers["asgi_fixed_rps"]) == len(numbers["asgi_blocking_rps"]) >= 2
    assert numbers["threads"] >= 1
    model = judge("blocking-hurts-asgi", numbers).model
    loops, io_s = numbers["asgi_workers"], numbers["io_ms"] / 1000
    at_once = min(numbers["clients"], loops * numbers["threads"])
    fixed = sorted(r * io_s / at_once for r in numbers["asgi_fixed_rps"])
    ratio = model["to_thread rps / (min(clients, loops x threads) / sleep)"]
    assert (ratio[1], ratio[2]) == pytest.approx((fixed[0], fixed[-1]))
