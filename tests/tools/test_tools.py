"""Each workshop tool on a tiny matrix against a live lab: outputs well-formed and
consistent with the trace headers. Nothing here asserts a speed."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from lab.system import processes
from lab.workshop import bench, claims, timeline
from lab.workshop.analysis import distinct_pids, overlap_per_pid
from lab.workshop.claims.verdicts import INCONCLUSIVE, judge
from lab.workshop.servers import parse_servers
from tests.support.lab import Lab, lab_status, workers_in_force

pytestmark = pytest.mark.tools

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def quiet() -> Console:
    return Console(quiet=True)


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_bench_python_engine_files_and_trace_columns(lab: Lab, tmp_path: Path) -> None:
    # The top level has more clients than WSGI workers: only then can "one request
    # at a time per worker" fail for a worker model that overlaps.
    crowd = workers_in_force(lab)["wsgi"] + 2
    modes, levels = ["cgi", "wsgi", "asgi"], [1, crowd]
    run, out = bench.run_bench(
        lab.url,
        modes,
        ["io"],
        levels,
        duration_s=1,
        engine="python",
        out_dir=tmp_path,
        console=quiet(),
    )
    assert len(run.cells) == len(modes) * len(levels)
    data = json.loads((out / "bench.json").read_text())
    assert data["meta"]["generator_python_rps"] > 0
    assert [r["mode"] for r in data["results"]] == [c.mode for c in run.cells]
    rows = list(csv.DictReader(io.StringIO((out / "bench.csv").read_text())))
    assert tuple(rows[0]) == bench.CSV_COLUMNS and len(rows) == len(run.cells)
    for cell in run.cells:
        s = cell.summary
        assert s.requests > 0 and s.errors == 0
        if cell.mode == "cgi":
            assert s.distinct_pids == s.requests  # a process per request
        if cell.mode == "wsgi":
            assert s.max_overlap == 1  # one request at a time per worker
            if cell.concurrency == crowd:
                assert s.distinct_pids < s.requests  # some worker took several
    for name in ("throughput.png", "latency-c1.png", f"latency-c{crowd}.png"):
        assert is_png(out / name)
    assert f"| asgi | gunicorn | io | {crowd} | python |" in (out / "bench.md").read_text()
    assert {(r["mode"], r["server"]) for r in rows} == {
        ("cgi", "runner"),
        ("wsgi", "sync"),
        ("asgi", "gunicorn"),
    }


def test_bench_wrk_engine_counts_pids(lab: Lab, tmp_path: Path) -> None:
    from lab.workshop import wrk

    assert wrk.available(), "wrk is not installed: apt-get install wrk (the workshop needs it)"
    run, _ = bench.run_bench(
        lab.url,
        ["asgi"],
        ["hello"],
        [2],
        duration_s=1,
        engine="wrk",
        out_dir=tmp_path,
        charts=False,
        console=quiet(),
    )
    (cell,) = run.cells
    assert cell.engine == "wrk" and cell.summary.requests > 0
    # Counted from the X-Gateway-Pid of each answer: some of the ASGI workers,
    # never more (a count of requests or connections would be far above).
    assert 1 <= cell.summary.distinct_pids <= workers_in_force(lab)["asgi"]
    assert run.meta["generator_wrk_rps"] > 0 and run.meta["generator_ratio"] > 0


@pytest.mark.parametrize("mode", ["cgi", "wsgi", "asgi"])
def test_timeline_lanes_match_the_pids_in_the_responses(
    lab: Lab, tmp_path: Path, mode: str
) -> None:
    # More clients than WSGI workers, so a WSGI worker that overlapped would show it.
    clients = workers_in_force(lab)["wsgi"] + 2
    result = timeline.run_timeline(
        mode,
        "/coffee?ms=30",
        2 * clients,
        clients,
        lab.url,
        tmp_path / f"{mode}.png",
        console=quiet(),
    )
    samples = result.samples[mode]
    lanes = timeline.build_lanes(samples)
    assert len(samples) == 2 * clients and all(s.ok for s in samples)
    assert len(lanes) == distinct_pids(samples) == result.summaries[mode].processes
    assert {lane.pid for lane in lanes} == {s.trace.pid for s in samples}
    assert sum(len(lane.bars) for lane in lanes) == len(samples)
    overlaps = overlap_per_pid(samples)
    assert result.summaries[mode].max_overlap == max(overlaps.values())
    if mode == "cgi":
        assert len(lanes) == len(samples)
    if mode == "wsgi":
        assert all(lane.tracks == 1 for lane in lanes)
        assert len(lanes) < len(samples)  # some worker served several requests
    assert is_png(result.png)


def test_timeline_all_modes_in_one_png(lab: Lab, tmp_path: Path) -> None:
    result = timeline.run_timeline("all", "/", 3, 1, lab.url, tmp_path, console=quiet())
    assert set(result.summaries) == {"cgi", "wsgi", "asgi"}
    assert result.png == tmp_path / "timeline-all.png" and is_png(result.png)


def test_claims_report_and_json_agree_with_the_rules(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only = ["process-per-request", "one-at-a-time", "worker-formula", "blocking-hurts-asgi"]
    # The spare gateways the claims start for themselves (processes.running), not
    # the lab's own services that a claim may swap and restore.
    spawned: list[int] = []
    running = processes.running

    @contextlib.contextmanager
    def recording_running(*args: Any, **kwargs: Any) -> Iterator[int]:
        with running(*args, **kwargs) as pgid:
            spawned.append(pgid)
            yield pgid

    monkeypatch.setattr(processes, "running", recording_running)
    results, out = claims.run_claims(
        lab.url,
        only,
        duration_s=1,
        requests_total=6,
        out_dir=tmp_path,
        console=quiet(),
        repeats=2,
        # No wait for the load average: after the suites before it the machine
        # is busy, and this test checks the report and the rules, not verdicts.
        settle_s=0,
    )
    assert [r.claim.id for r in results] == only
    data = json.loads((out / "claims.json").read_text())
    assert data["meta"]["lab"]["workers"] == workers_in_force(lab)
    assert {"target", "servers", "gateway_cpus"} <= set(data["meta"]["lab"])
    for recorded in data["claims"]:
        numbers = recorded["numbers"]
        verdict = judge(recorded["id"], numbers)
        assert recorded["verdict"] == verdict.level and recorded["why"] == verdict.why
        assert recorded["model"]  # measured / model, with its spread
        if numbers["load_1m_start"] > numbers["machine_cpus"] or sum(numbers["errors"]) > 0:
            assert verdict.level == INCONCLUSIVE
    text = (out / "claims.md").read_text()
    for r in results:
        assert f"## {only.index(r.claim.id) + 1}. {r.claim.title}" in text
        assert f"**Verdict: {r.verdict.level}.**" in text
    # --rejudge reads the same file back without the lab and finds the same verdicts.
    rejudged, changes, _ = claims.rejudge_file(out / "claims.json")
    assert changes == [] and [r.verdict.why for r in rejudged] == [r.verdict.why for r in results]
    cgi = results[0].numbers
    assert cgi["distinct_pids"] == cgi["requests"]  # CGI: a process per request
    assert len(cgi["cgi_p50_ms"]) == 2  # the repeats, interleaved
    assert min(cgi["interpreter_ms"]) > 0 and cgi["major_faults"] >= 0
    sync = results[1].numbers
    assert sync["max_overlap"] == 1  # a sync WSGI worker: one at a time
    assert sync["control_max_overlap"] > 1  # the threaded control overlaps
    assert sync["workers"] == workers_in_force(lab)["wsgi"]
    # The extra WSGI gateways it started (the worker-formula claim and the threaded
    # control) are gone again, every process of their groups. (Other programs on a
    # shared machine may use the spare ports meanwhile, so the ports say nothing.)
    assert spawned, "the claims started no gateway of their own"
    assert not [pgid for pgid in spawned if processes.group_alive(pgid)]


def test_timeline_compare_draws_both_endpoints_and_saves_samples(lab: Lab, tmp_path: Path) -> None:
    result = timeline.run_timeline(
        "asgi",
        "/coffee?ms=30",
        4,
        2,
        lab.url,
        tmp_path / "compare.png",
        console=quiet(),
        compare="/blocking-coffee?ms=30",
    )
    assert set(result.samples) == {"asgi", "asgi /blocking-coffee?ms=30"}
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert set(saved["modes"]) == set(result.samples)
    for key, records in saved["modes"].items():
        assert len(records) == 4
        # Every saved sample is the response's own trace: sent before the app started.
        assert all(r["sent"] <= r["start"] <= r["end"] for r in records), key
    assert is_png(result.png)


def test_bench_servers_in_turn_name_each_row_and_put_the_servers_back(
    lab: Lab, tmp_path: Path
) -> None:
    before = lab_status()["servers"]
    run, out = bench.run_bench(
        lab.url,
        scenarios=["hello", "io"],
        levels=[2],
        duration_s=1,
        engine="python",
        out_dir=tmp_path,
        console=quiet(),
        servers=parse_servers("wsgi/gthread,asgi/uvicorn,wsgi/sync"),
    )
    assert [(c.mode, c.server, c.scenario) for c in run.cells] == [
        ("wsgi", "gthread", "hello"),
        ("wsgi", "gthread", "io"),
        ("asgi", "uvicorn", "hello"),
        ("asgi", "uvicorn", "io"),
        ("wsgi", "sync", "hello"),
        ("wsgi", "sync", "io"),
    ]
    assert all(c.summary.requests > 0 and c.summary.errors == 0 for c in run.cells)
    rows = list(csv.DictReader(io.StringIO((out / "bench.csv").read_text())))
    assert [(r["mode"], r["server"]) for r in rows] == [(c.mode, c.server) for c in run.cells]
    assert "| wsgi | gthread | hello | 2 | python |" in (out / "bench.md").read_text()
    assert run.meta["servers"] == ["wsgi/gthread", "asgi/uvicorn", "wsgi/sync"]
    assert is_png(out / "throughput.png") and is_png(out / "latency-c2.png")
    assert lab_status()["servers"] == before


def test_timeline_servers_in_turn_one_panel_each_then_the_servers_back(
    lab: Lab, tmp_path: Path
) -> None:
    before = lab_status()["servers"]
    result = timeline.run_timeline(
        endpoint="/coffee?ms=30",
        requests_total=4,
        concurrency=4,
        url=lab.url,
        out=tmp_path,
        console=quiet(),
        servers=parse_servers("wsgi/sync,wsgi/gthread"),
    )
    assert list(result.samples) == ["wsgi/sync", "wsgi/gthread"]
    assert [s.name for s in result.summaries.values()] == ["wsgi/sync", "wsgi/gthread"]
    saved = json.loads((tmp_path / "timeline-servers.json").read_text())
    assert saved["servers"] == {"wsgi/sync": "sync", "wsgi/gthread": "gthread"}
    assert result.png == tmp_path / "timeline-servers.png" and is_png(result.png)
    assert lab_status()["servers"] == before
