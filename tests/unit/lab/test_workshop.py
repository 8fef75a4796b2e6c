"""Pure parts of the workshop tools: trace parsing, percentiles, overlap, lanes, files."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from lab.errors import LabError
from lab.workshop import bench
from lab.workshop.analysis import (
    Bar,
    Sample,
    Trace,
    assign_tracks,
    build_lanes,
    max_overlap,
    parse_trace,
    percentile,
    summarize,
)
from lab.workshop.charts import MODE_COLOURS, bar_segments, lighter
from lab.workshop.timeline import sample_record, summarize_timeline
from lab.workshop.wrk import WrkError, build_command, parse_output


def sample(pid: int | None, start: float | None, end: float | None, status: int = 200) -> Sample:
    return Sample(
        sent=start or 0.0,
        latency_s=((end or 0) - (start or 0)) or 0.001,
        status=status,
        trace=Trace(mode="wsgi", pid=pid, worker=pid, start=start, end=end),
    )


# -- trace headers ----------------------------------------------------------------------


def test_parse_trace_reads_every_header_in_any_case() -> None:
    trace = parse_trace(
        {
            "X-Gateway-Mode": "cgi",
            "x-gateway-pid": "123",
            "X-GATEWAY-WORKER": "7",
            "X-Gateway-Start": "1700000000.000001",
            "X-Gateway-End": "1700000000.100002",
            "X-Request-Id": "abc",
        }
    )
    assert trace == Trace("cgi", 123, 7, 1700000000.000001, 1700000000.100002, "abc")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="none"),
        pytest.param({"X-Gateway-Pid": "x", "X-Gateway-Start": "soon"}, id="garbled"),
        pytest.param({"X-Gateway-Start": "1.5"}, id="streamed-start-only"),
    ],
)
def test_parse_trace_missing_or_garbled_values_are_none(headers: dict[str, str]) -> None:
    trace = parse_trace(headers)
    assert trace.pid is None and trace.end is None


# -- percentiles ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        pytest.param([], 50, 0.0, id="empty"),
        pytest.param([5.0], 99, 5.0, id="one-value"),
        pytest.param([1.0, 2.0, 3.0, 4.0], 50, 2.5, id="median-between-ranks"),
        pytest.param([4.0, 1.0, 3.0, 2.0], 50, 2.5, id="unsorted-input"),
        pytest.param([1.0, 2.0, 3.0, 4.0, 5.0], 0, 1.0, id="p0-is-min"),
        pytest.param([1.0, 2.0, 3.0, 4.0, 5.0], 100, 5.0, id="p100-is-max"),
        pytest.param(list(range(1, 101)), 95, 95.05, id="p95-of-1-to-100"),
    ],
)
def test_percentile(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == pytest.approx(expected)


def test_percentile_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# -- overlap ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("intervals", "expected"),
    [
        pytest.param([], 0, id="nothing"),
        pytest.param([(0, 1)], 1, id="one"),
        pytest.param([(0, 1), (1, 2), (2, 3)], 1, id="back-to-back-is-not-overlap"),
        pytest.param([(0, 10), (1, 2), (3, 4)], 2, id="two-inside-one"),
        pytest.param([(0, 5), (1, 6), (2, 7), (8, 9)], 3, id="three-at-once"),
    ],
)
def test_max_overlap(intervals: list[tuple[float, float]], expected: int) -> None:
    assert max_overlap(intervals) == expected


def test_summarize_counts_pids_errors_and_overlap_per_process() -> None:
    samples = [
        sample(1, 0.0, 1.0),
        sample(1, 0.5, 1.5),  # overlaps the first one in pid 1
        sample(2, 0.0, 1.0),
        sample(2, 1.0, 2.0),  # back to back in pid 2
        Sample(sent=0.0, latency_s=0.1, status=0, error="ConnectError"),
        sample(3, 0.0, 0.1, status=503),
    ]
    s = summarize(samples, wall_s=2.0)
    assert (s.requests, s.errors, s.distinct_pids, s.max_overlap) == (6, 2, 3, 2)
    assert s.rps == pytest.approx(2.0)  # successful answers only


# -- timeline lanes ---------------------------------------------------------------------


def test_assign_tracks_uses_as_many_tracks_as_the_most_overlap() -> None:
    intervals = [(0.0, 10.0), (1.0, 2.0), (3.0, 4.0), (5.0, 12.0), (11.0, 13.0)]
    tracks, used = assign_tracks(intervals)
    assert used == max_overlap(intervals) == 2
    for i, a in enumerate(intervals):
        for j, b in enumerate(intervals[:i]):
            if tracks[i] == tracks[j]:
                assert a[0] >= b[1] or b[0] >= a[1], "two bars on one track overlap"


def test_build_lanes_one_lane_per_pid_in_order_of_first_start_and_ms_from_first_start() -> None:
    samples = [
        sample(20, 100.5, 100.6),
        sample(10, 100.0, 100.2),
        sample(10, 100.1, 100.3),
        sample(None, None, None, status=0),  # no answer: not drawn
        sample(30, 100.7, None),  # streamed, Start only: not drawn
    ]
    lanes = build_lanes(samples)
    assert [lane.pid for lane in lanes] == [10, 20]
    assert lanes[0].tracks == 2 and lanes[1].tracks == 1
    assert lanes[0].bars[0].start_ms == pytest.approx(0.0)
    assert lanes[1].bars[0].start_ms == pytest.approx(500.0)
    summary = summarize_timeline("wsgi", samples)
    assert (summary.requests, summary.drawn, summary.processes, summary.max_overlap) == (5, 3, 2, 2)
    assert summary.wall_ms == pytest.approx(600.0)


def cgi_sample(pid: int, start: float, app_start: float, app_end: float, end: float) -> Sample:
    trace = Trace("cgi", pid, 1, start, end, app_start=app_start, app_end=app_end)
    return Sample(sent=start, latency_s=end - start, status=200, trace=trace)


def test_parse_trace_reads_the_cgi_split() -> None:
    trace = parse_trace(
        {"X-Gateway-App-Start": "1700000000.25", "x-gateway-app-end": "1700000000.5"}
    )
    assert (trace.app_start, trace.app_end) == (1700000000.25, 1700000000.5)


@pytest.mark.parametrize(
    ("points", "split"),
    [
        pytest.param((100.0, 100.03, 100.13, 100.135), (30.0, 100.0, 5.0), id="runner"),
        pytest.param((100.0, 100.03, 100.13, 100.13), (30.0, 100.0, 0.0), id="fcgiwrap-no-exit"),
        pytest.param((100.0, 100.03, None, None), None, id="streamed"),
        pytest.param((100.0, None, None, 100.1), None, id="not-cgi"),
        pytest.param((100.0, 99.9, 100.0, 100.1), None, id="app-before-the-spawn"),
        pytest.param((100.0, 100.05, 100.02, 100.1), None, id="ends-before-it-starts"),
    ],
)
def test_cgi_split_is_start_up_app_exit_in_order(
    points: tuple[float | None, ...], split: tuple[float, float, float] | None
) -> None:
    start, app_start, app_end, end = points
    trace = Trace("cgi", 1, 1, start, end, app_start=app_start, app_end=app_end)
    got = trace.split_ms()
    assert got == (None if split is None else pytest.approx(split))


def test_cgi_bars_carry_the_split_and_the_summary_its_medians() -> None:
    samples = [
        cgi_sample(1, 100.0, 100.04, 100.14, 100.15),
        cgi_sample(2, 100.0, 100.06, 100.16, 100.17),
        cgi_sample(3, 100.1, 100.2, 100.3, 100.3),
    ]
    lanes = build_lanes(samples)
    first = lanes[0].bars[0]
    assert (first.start_ms, first.app_start_ms, first.app_end_ms, first.end_ms) == pytest.approx(
        (0.0, 40.0, 140.0, 150.0)
    )
    summary = summarize_timeline("cgi", samples)
    assert summary.startup_ms == pytest.approx(60.0)  # of 40, 60, 100
    assert summary.app_ms == pytest.approx(100.0)
    assert "median start-up 60.0 ms, app 100.0 ms" in summary.line()
    # WSGI and ASGI bars have no split, and their summaries none either.
    assert build_lanes([sample(5, 1.0, 1.1)])[0].bars[0].app_start_ms is None
    assert summarize_timeline("wsgi", [sample(5, 1.0, 1.1)]).startup_ms is None


def test_a_cgi_bar_is_drawn_in_two_shades() -> None:
    cgi = MODE_COLOURS["cgi"]
    bar = Bar(0.0, 150.0, 0, True, 0.0, app_start_ms=40.0, app_end_ms=140.0)
    light = lighter(cgi)
    assert bar_segments(bar, cgi) == [(0.0, 40.0, light), (40.0, 140.0, cgi), (140.0, 150.0, light)]
    assert light not in (cgi, "#ffffff")
    # No exit measured (fcgiwrap: End is App-End): no empty piece.
    assert len(bar_segments(Bar(0.0, 140.0, 0, True, 0.0, 40.0, 140.0), cgi)) == 2
    assert bar_segments(Bar(0.0, 100.0, 0, True), cgi) == [(0.0, 100.0, cgi)]


def test_the_json_beside_a_timeline_has_both_numbers() -> None:
    record = sample_record(cgi_sample(1, 100.0, 100.04, 100.14, 100.15))
    assert (record["startup_ms"], record["app_ms"], record["exit_ms"]) == pytest.approx(
        (40.0, 100.0, 10.0)
    )
    assert record["app_start"] == 100.04 and record["app_end"] == 100.14
    assert "startup_ms" not in sample_record(sample(5, 1.0, 1.1))


# -- wrk's result line ------------------------------------------------------------------

WRK_STDOUT = """Running 2s test @ http://127.0.0.1:8080/asgi/
  2 threads and 10 connections
Requests/sec:   4905.37
LAB-RESULT {"requests": 1000, "duration_us": 2000000, "errors": {"connect": 1, "read": 2, \
"write": 0, "status": 5, "timeout": 3}, "latency_us": {"50": 1500, "95": 3000, "99": 7000}, \
"pids": {"22556": 600, "22557": 400}, "statuses": {"200": 995, "503": 5}}
"""


def test_parse_wrk_output() -> None:
    result = parse_output(WRK_STDOUT)
    assert result.pids == {22556: 600, 22557: 400}
    s = result.summary()
    assert s.rps == pytest.approx(497.5)  # the five 503s are not throughput
    assert (s.p50_ms, s.p95_ms, s.p99_ms) == (1.5, 3.0, 7.0)
    assert s.errors == 1 + 2 + 3 + 5  # socket errors and timeouts, plus 5xx answers
    assert s.distinct_pids == 2 and s.max_overlap is None


def test_wrk_output_without_result_line_is_an_error() -> None:
    with pytest.raises(WrkError):
        parse_output("unable to connect to 127.0.0.1:8080 Connection refused\n")


def test_wrk_command_never_has_more_threads_than_connections() -> None:
    headers = {"X-Lab-Mode": "asgi"}
    cmd = build_command("/bin/wrk", "http://127.0.0.1:8080/", 1, 2.4, Path("/tmp/x.lua"), headers)
    assert cmd[0] == "/bin/wrk"
    assert "--threads=1" in cmd and "--connections=1" in cmd and "--duration=2s" in cmd
    assert cmd[-3:] == ["--header", "X-Lab-Mode: asgi", "http://127.0.0.1:8080/"]


# -- bench options and files ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1,10,50", [1, 10, 50], id="plain"),
        pytest.param("50, 1,10,10", [1, 10, 50], id="sorted-deduplicated"),
    ],
)
def test_parse_levels(text: str, expected: list[int]) -> None:
    assert bench.parse_levels(text) == expected


@pytest.mark.parametrize("text", ["", "0,1", "a"])
def test_parse_levels_rejects(text: str) -> None:
    with pytest.raises(LabError):
        bench.parse_levels(text)


def test_parse_names() -> None:
    assert bench.parse_names("all", ("cgi", "wsgi"), "mode") == ["cgi", "wsgi"]
    assert bench.parse_names("wsgi", ("cgi", "wsgi"), "mode") == ["wsgi"]
    with pytest.raises(LabError, match="unknown mode: fcgi"):
        bench.parse_names("fcgi", ("cgi", "wsgi"), "mode")


@pytest.mark.parametrize(
    ("engine", "has_wrk", "expected"),
    [
        pytest.param("auto", True, "wrk", id="auto-with-wrk"),
        pytest.param("auto", False, "python", id="auto-without-wrk"),
        pytest.param("python", True, "python", id="asked-for-python"),
    ],
)
def test_pick_engine(engine: str, has_wrk: bool, expected: str) -> None:
    assert bench.pick_engine(engine, has_wrk) == expected


def test_mode_url_uses_the_fixed_route() -> None:
    assert bench.mode_url("http://127.0.0.1:8080/", "wsgi", "/coffee?ms=1") == (
        "http://127.0.0.1:8080/wsgi/coffee?ms=1"
    )


def _run() -> bench.BenchRun:
    s = summarize([sample(1, 0.0, 0.1), sample(2, 0.0, 0.2)], wall_s=1.0)
    run = bench.BenchRun(meta={"scenarios": ["io"], "machine": {"cores": 2}})
    run.cells.append(bench.Cell("wsgi", "gthread", "io", "/coffee?ms=100", 10, "python", s))
    return run


def test_csv_has_the_documented_columns_and_one_row_per_cell() -> None:
    rows = list(csv.DictReader(io.StringIO(bench.to_csv(_run().rows()))))
    assert tuple(rows[0]) == bench.CSV_COLUMNS
    assert len(rows) == 1
    assert rows[0]["mode"] == "wsgi" and rows[0]["server"] == "gthread"
    assert rows[0]["distinct_pids"] == "2"
    assert float(rows[0]["rps"]) == pytest.approx(2.0)


def test_json_has_meta_and_results_with_every_csv_column() -> None:
    data = json.loads(bench.to_json(_run()))
    assert set(data) == {"meta", "results"}
    assert set(bench.CSV_COLUMNS) <= set(data["results"][0])


def test_markdown_report_has_a_row_per_cell() -> None:
    text = bench.report_markdown(_run(), ["/x/throughput.png"])
    assert "| wsgi | gthread | io | 10 | python |" in text
    assert "![throughput](throughput.png)" in text


def test_generator_check_sentence_states_the_ratio() -> None:
    check = bench.GeneratorCheck(50, 1000.0, 50000.0)
    assert check.ratio == pytest.approx(0.02)
    assert "ratio 0.020" in check.sentence()
    assert bench.GeneratorCheck(50, 1000.0, None).ratio is None


@pytest.mark.parametrize(
    ("row", "share"),
    [
        pytest.param({"requests": 100, "errors": 95}, 0.95, id="mostly-503s"),
        pytest.param({"requests": 10, "errors": 0}, 0.0, id="clean"),
        pytest.param({"requests": 0, "errors": 0}, 0.0, id="nothing-answered"),
        pytest.param({}, 0.0, id="missing-fields"),
    ],
)
def test_error_share(row: dict[str, int], share: float) -> None:
    from lab.workshop.charts import error_share

    assert error_share(row) == pytest.approx(share)


# -- colours, idleness, the lab-is-up check, the tools' error policy -------------------


def test_chart_colours_are_the_dashboard_s() -> None:
    import re

    from lab.settings import ROOT
    from lab.workshop.charts import ERROR_COLOUR, MODE_COLOURS

    css = (ROOT / "nginx" / "static" / "lab" / "dashboard.css").read_text(encoding="utf-8")
    declared = dict(re.findall(r"--(cgi|wsgi|asgi|error):\s*(#[0-9a-fA-F]{6})", css))
    assert declared == MODE_COLOURS | {"error": ERROR_COLOUR}


class _Server:
    """A local HTTP server answering every GET with one fixed status, at once."""

    def __init__(self, status: int, queue_ms: Sequence[str] = ()) -> None:
        import http.server
        import threading

        waits = list(queue_ms)  # X-Gateway-Queue-Ms of the answers in turn (the last repeats)
        self.asked = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler) -> None:  # noqa: N805 -- self is the _Server
                handler.send_response(status)
                if waits:
                    handler.send_header(
                        "X-Gateway-Queue-Ms", waits[min(self.asked, len(waits) - 1)]
                    )
                self.asked += 1
                handler.send_header("Content-Length", "0")
                handler.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/healthz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(("status", "idle"), [(200, True), (502, False), (503, False)])
def test_wait_idle_does_not_count_fast_failures_as_idle(status: int, idle: bool) -> None:
    from lab.workshop.loadgen import wait_idle

    server = _Server(status)
    try:
        assert wait_idle(server.url, deadline_s=1.0) is idle
    finally:
        server.close()


def test_wait_idle_waits_for_an_empty_cgi_queue_however_fast_the_answers() -> None:
    """CGI: a script answers quickly while others still wait for slots; idle is an
    answer that waited 0 ms for its slot (X-Gateway-Queue-Ms), twice in a row."""
    from lab.workshop.loadgen import wait_idle

    draining = _Server(200, ["812.5", "403.0", "0.000", "51.2", "0.000", "0.000"])
    try:
        assert wait_idle(draining.url, deadline_s=5.0) is True
        assert draining.asked == 6
    finally:
        draining.close()
    busy = _Server(200, ["250.0"])
    try:
        assert wait_idle(busy.url, deadline_s=0.5) is False
    finally:
        busy.close()


def test_the_idle_probe_of_cgi_passes_its_queue() -> None:
    from lab.workshop.claims.experiments import idle_url
    from lab.workshop.loadgen import idle_probe

    # CGI's /healthz is answered before the script queue: a script is asked instead.
    assert idle_probe("http://h:8080/cgi", "cgi") == "http://h:8080/cgi/"
    assert idle_probe("http://h:8080/wsgi/", "wsgi") == "http://h:8080/wsgi/healthz"
    assert idle_url("http://h:8080/cgi/coffee?ms=5") == "http://h:8080/cgi/"
    assert idle_url("http://h:8080/asgi/coffee?ms=5") == "http://h:8080/asgi/healthz"


def test_wait_idle_does_not_count_a_refused_connection_as_idle() -> None:
    from lab.workshop.loadgen import wait_idle

    assert wait_idle("http://127.0.0.1:1/healthz", deadline_s=0.5) is False


def test_require_lab_says_no_lab_answers() -> None:
    from lab.workshop.common import require_lab

    with pytest.raises(LabError, match="no lab answers at http://127.0.0.1:1"):
        require_lab("http://127.0.0.1:1")


NO_LAB = "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["bench", "--url", NO_LAB], 1, "no lab answers", id="bench-no-lab"),
        pytest.param(["timeline", "--url", NO_LAB], 1, "no lab answers", id="timeline-no-lab"),
        pytest.param(["claims", "--url", NO_LAB], 1, "no lab answers", id="claims-no-lab"),
        pytest.param(["bench", "--levels", "a"], 2, "levels", id="bench-bad-levels"),
        pytest.param(["bench", "--engine", "go"], 2, "engine", id="bench-bad-engine"),
        pytest.param(["timeline", "--mode", "php"], 2, "mode", id="timeline-bad-mode"),
        pytest.param(
            ["timeline", "--workshop", "--out", "x.png", "--url", NO_LAB], 2, "directory",
            id="timeline-workshop-needs-a-directory",
        ),
        pytest.param(
            ["timeline", "--workshop", "--url", NO_LAB], 1, "no lab answers",
            id="timeline-workshop-no-lab",
        ),
        pytest.param(["bench", "--servers", "wsgi/nope"], 2, "unknown server",
                     id="bench-bad-server"),
        pytest.param(["bench", "--servers", "php/sync"], 2, "unknown mode", id="bench-bad-mode"),
        pytest.param(["bench", "--servers", "wsgi/sync", "--modes", "cgi"], 2, "not both",
                     id="bench-servers-and-modes"),
        pytest.param(["timeline", "--servers", "wsgi"], 2, "MODE/SERVER", id="timeline-no-slash"),
        pytest.param(["timeline", "--servers", "asgi/sync"], 2, "unknown server",
                     id="timeline-server-of-another-mode"),
        pytest.param(["claims", "--only", "nope"], 2, "unknown claims", id="claims-bad-id"),
    ],
)  # fmt: skip
def test_workshop_tools_fail_with_a_lab_line(args: list[str], code: int, message: str) -> None:
    import typer
    from typer.testing import CliRunner

    from lab import cli

    app = typer.Typer()
    cli.register_tools(app)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.output.startswith("lab: ") and message in result.output
    assert "Traceback" not in result.output


def test_wrk_missing_is_a_lab_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from lab.workshop import wrk

    monkeypatch.setattr(wrk.shutil, "which", lambda name: None)
    with pytest.raises(LabError, match="wrk"):
        wrk.run_wrk("http://127.0.0.1:1/", 1, 1.0)


def test_make_timeline_draws_the_figures_the_workshop_shows() -> None:
    import re

    from lab.settings import ROOT
    from lab.workshop.timeline import WORKSHOP_FIGURES

    workshop = (ROOT / "docs" / "workshop.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"results/(timeline-[a-z-]+\.png)", workshop))
    assert shown and shown == {f.name for f in WORKSHOP_FIGURES}
    # The blocked loop is drawn beside its two fixes, the to_thread control among them.
    blocking = next(f for f in WORKSHOP_FIGURES if f.name == "timeline-asgi-blocking.png")
    assert "/blocking-coffee?ms=100&thread=1" in blocking.compare
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "$(LAB) timeline $(or $(ARGS),--workshop)" in makefile


def test_an_experiment_waits_for_the_load_its_predecessor_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lab.workshop import common

    loads = iter([9.0, 5.5, 2.4, 1.9, 0.5])
    monkeypatch.setattr(common.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    monkeypatch.setattr(common.time, "sleep", lambda s: None)
    said: list[str] = []
    assert common.settle_load(2, say=said.append) == 1.9  # the first reading at most 2
    assert len(said) == 1 and "9.0" in said[0]
    # A machine that stays busy: the deadline ends the wait, and the load is reported.
    monkeypatch.setattr(common.os, "getloadavg", lambda: (7.0, 0.0, 0.0))
    assert common.settle_load(2, deadline_s=0.0) == 7.0


def test_claim_sizes_take_the_gateways_own_default_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import gateway.config
    from lab.workshop.claims import sizes_from

    spec = gateway.config.MODE_SPECS["wsgi"]
    three_per_core = dataclasses.replace(spec, workers_per_cores=lambda n: 3 * n)
    monkeypatch.setitem(gateway.config.MODE_SPECS, "wsgi", three_per_core)  # type: ignore[arg-type]
    sizes = sizes_from({"gateway_cpus": {"wsgi": 2.0, "asgi": 2.0}})
    assert (sizes.wsgi_workers, sizes.asgi_workers) == (6, 2)
    assert sizes_from({"gateway_cpus": {"wsgi": 2.0}, "workers": {"wsgi": 9}}).wsgi_workers == 9
