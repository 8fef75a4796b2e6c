"""`lab split`: weights parsed and checked before anything changes, the reload
check the targets wait on, and the CLI against a fake target."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab import cli
from lab.errors import LabError
from lab.routing import active_label
from lab.routing import format_split as format_weights
from lab.settings import LabSettings
from lab.system.procfs import Proc, read_proc
from lab.targets import Target, native, switching
from lab.targets.switching import (
    WORKER_TITLE,
    apply_split,
    check_weights,
    mode_after_split,
    parse_weights,
    record_plain_mode,
    recorded_plain_mode,
    reload_done,
)
from tests.support.fakes import FakeTarget, use_fake

ProcRow = Proc

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("wsgi=90,asgi=10", {"wsgi": 90, "asgi": 10}, id="canary"),
        pytest.param(
            " cgi = 34 , wsgi=33,asgi=33 ", {"cgi": 34, "wsgi": 33, "asgi": 33}, id="spaces"
        ),
        pytest.param("asgi=100", {"asgi": 100}, id="one-mode"),
        pytest.param("", None, id="empty-ends-the-split"),
        pytest.param("   ", None, id="blank-ends-the-split"),
    ],
)
def test_good_weights(text: str, expected: dict[str, int] | None) -> None:
    assert parse_weights(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("wsgi=90,asgi=20", "sum to 100", id="sum-over"),
        pytest.param("wsgi=9,asgi=1", "sum to 100", id="not-normalised"),
        pytest.param("wsgi=90,bogus=10", "unknown mode 'bogus'", id="unknown-mode"),
        pytest.param("WSGI=100", "unknown mode", id="mode-case"),
        pytest.param("wsgi=ninety,asgi=10", "whole number", id="word"),
        pytest.param("wsgi=90.5,asgi=9.5", "whole number", id="fraction"),
        pytest.param("wsgi=-10,asgi=110", "whole number", id="negative"),
        pytest.param("wsgi=\u00b9\u2070\u2070", "whole number", id="unicode-digits"),
        pytest.param("wsgi=100,asgi=0", "1..100", id="zero"),
        pytest.param("wsgi=90,wsgi=10", "twice", id="duplicate"),
        pytest.param("wsgi", "MODE=PERCENT", id="no-weight"),
        pytest.param("wsgi=90;asgi=10", "whole number", id="wrong-separator"),
        pytest.param("wsgi=90,,asgi=10", "MODE=PERCENT", id="empty-part"),
    ],
)
def test_bad_weights_are_named(text: str, message: str) -> None:
    with pytest.raises(LabError, match=message):
        parse_weights(text)


def test_weights_round_trip_through_their_label() -> None:
    weights = {"cgi": 20, "asgi": 80}
    assert parse_weights(format_weights(weights)) == weights
    assert check_weights(weights) == weights
    with pytest.raises(LabError):
        check_weights({"cgi": 20})


@pytest.mark.parametrize(
    ("active", "label"),
    [
        pytest.param("asgi", "asgi", id="mode"),
        pytest.param({"wsgi": 90, "asgi": 10}, "wsgi=90,asgi=10", id="split"),
        pytest.param(None, None, id="unknown"),
    ],
)
def test_status_shows_a_mode_or_the_split_label(
    active: str | dict[str, int] | None, label: str | None
) -> None:
    assert active_label(active) == label


@pytest.mark.parametrize(
    ("split", "recorded", "expected"),
    [
        pytest.param({"wsgi": 70, "asgi": 30}, "cgi", "cgi", id="back-to-the-recorded-mode"),
        pytest.param({"wsgi": 10, "asgi": 90}, None, "asgi", id="else-the-largest-share"),
        pytest.param({"cgi": 50, "asgi": 50}, "bogus", "cgi", id="bad-record-ignored"),
    ],
)
def test_mode_after_split(split: dict[str, int], recorded: str | None, expected: str) -> None:
    assert mode_after_split(split, recorded) == expected


def test_plain_mode_is_recorded_in_the_state_dir(tmp_path: Path) -> None:
    cfg = LabSettings(state_dir=tmp_path / "state")
    assert recorded_plain_mode(cfg) is None
    record_plain_mode(cfg, "asgi")
    assert recorded_plain_mode(cfg) == "asgi"


# -- the split itself, with a target's pieces recorded ---------------------------------


@dataclass
class Pieces:
    """What ``apply_split`` asked of a target: splits loaded, switches, messages."""

    applied: list[dict[str, int]] = field(default_factory=list)
    switched: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)

    def run(
        self, cfg: LabSettings, weights: dict[str, int] | None, current: str | dict[str, int]
    ) -> None:
        apply_split(
            cfg,
            weights,
            current,
            apply=self.applied.append,
            switch=self.switched.append,
            say=self.said.append,
        )


def test_split_records_the_plain_mode_and_loads_the_checked_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = LabSettings(state_dir=tmp_path)
    monkeypatch.setattr(switching, "served_mode", lambda _cfg: "asgi")  # no request sent
    pieces = Pieces()
    pieces.run(cfg, {"wsgi": 90, "asgi": 10}, "cgi")
    assert pieces.applied == [{"wsgi": 90, "asgi": 10}]
    assert recorded_plain_mode(cfg) == "cgi"
    assert pieces.said == [f"split: {cfg.url}/ is now served by wsgi=90,asgi=10"]


def test_bad_weights_load_and_record_nothing(tmp_path: Path) -> None:
    cfg = LabSettings(state_dir=tmp_path)
    pieces = Pieces()
    with pytest.raises(LabError, match="sum to 100"):
        pieces.run(cfg, {"wsgi": 90, "asgi": 20}, "cgi")
    assert pieces == Pieces() and recorded_plain_mode(cfg) is None


def test_ending_a_split_switches_back_to_the_recorded_mode(tmp_path: Path) -> None:
    cfg = LabSettings(state_dir=tmp_path)
    record_plain_mode(cfg, "cgi")
    pieces = Pieces()
    pieces.run(cfg, None, {"wsgi": 90, "asgi": 10})
    assert pieces.switched == ["cgi"] and pieces.applied == []


def test_ending_no_split_changes_nothing(tmp_path: Path) -> None:
    cfg = LabSettings(state_dir=tmp_path)
    pieces = Pieces()
    pieces.run(cfg, None, "asgi")
    assert pieces.switched == [] and pieces.applied == []
    assert pieces.said == [f"no split is active: {cfg.url}/ is served by asgi"]


# -- when a reload is done -----------------------------------------------------------

MASTER = 100
SHUTTING_DOWN = "nginx: worker process is shutting down"


def rows(*workers: tuple[int, str]) -> list[ProcRow]:
    return [
        Proc(MASTER, 1, MASTER, "S", "nginx: master process nginx"),
        Proc(7, 1, 7, "S", "bash"),
    ] + [Proc(pid, MASTER, MASTER, "S", title) for pid, title in workers]


@pytest.mark.parametrize(
    ("now", "done"),
    [
        pytest.param(rows((101, WORKER_TITLE), (102, WORKER_TITLE)), False, id="not-yet"),
        pytest.param(
            rows((101, WORKER_TITLE), (103, WORKER_TITLE)), False, id="old-worker-still-accepts"
        ),
        pytest.param(
            rows((101, SHUTTING_DOWN), (103, WORKER_TITLE)), True, id="old-one-shutting-down"
        ),
        pytest.param(rows((103, WORKER_TITLE), (104, WORKER_TITLE)), True, id="old-ones-gone"),
        pytest.param(rows(), False, id="no-worker-at-all"),
        pytest.param([Proc(103, 999, 999, "S", WORKER_TITLE)], False, id="another-nginx-s-worker"),
    ],
)
def test_reload_done(now: list[ProcRow], done: bool) -> None:
    assert reload_done({101, 102}, now, MASTER) is done


def test_read_proc_reads_titles_and_parents(tmp_path: Path) -> None:
    for pid, stat, cmdline in [
        (100, "100 (nginx) S 1 100", b"nginx: master process nginx\0\0\0"),
        (101, "101 (my (odd) name) S 100 100", b"nginx: worker process\0\0"),
    ]:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(stat)
        (tmp_path / str(pid) / "cmdline").write_bytes(cmdline)
    (tmp_path / "102").mkdir()  # a process that exited while we looked: skipped
    assert sorted(read_proc(tmp_path)) == [
        Proc(100, 1, 100, "S", "nginx: master process nginx"),
        Proc(101, 100, 100, "S", WORKER_TITLE),
    ]


# -- the CLI --------------------------------------------------------------------------


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeTarget:
    return use_fake(monkeypatch, str(tmp_path), FakeTarget(active_mode="wsgi=90,asgi=10"))


def test_targets_implement_split() -> None:
    assert isinstance(FakeTarget(), Target)
    assert isinstance(native.NativeTarget(), Target)


@pytest.mark.parametrize(
    ("arg", "weights"),
    [
        pytest.param("wsgi=70,asgi=30", {"wsgi": 70, "asgi": 30}, id="split"),
        pytest.param("", None, id="make-split-WEIGHTS-empty"),
    ],
)
def test_split_delegates_parsed_weights(
    fake: FakeTarget, arg: str, weights: dict[str, int] | None
) -> None:
    result = runner.invoke(cli.app, ["split", arg])
    assert result.exit_code == 0, result.output
    assert fake.calls == [("split", str(weights))]


@pytest.mark.parametrize("arg", ["wsgi=90,asgi=20", "bogus=100", "wsgi=ninety,asgi=10"])
def test_bad_weights_exit_2_and_change_nothing(fake: FakeTarget, arg: str) -> None:
    result = runner.invoke(cli.app, ["split", arg])
    assert result.exit_code == 2
    assert result.output.startswith("lab: ") and "Traceback" not in result.output
    assert fake.calls == []


def test_status_json_shows_the_split_label(fake: FakeTarget) -> None:
    result = runner.invoke(cli.app, ["status", "--json"])
    assert result.exit_code == 0 and '"active_mode": "wsgi=90,asgi=10"' in result.stdout


def test_native_split_needs_a_running_lab(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="lab up"):
        native.NativeTarget().split(LabSettings(state_dir=tmp_path), {"wsgi": 50, "asgi": 50})
