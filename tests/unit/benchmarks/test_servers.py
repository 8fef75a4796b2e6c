"""The pure parts of benchmarks/servers.py, and its refusals before any load is sent."""

from __future__ import annotations

import pytest

from benchmarks.servers import COLUMNS, Row, main, table


def test_table_has_a_row_per_pair_with_mode_server_and_errors() -> None:
    rows = [
        Row("wsgi", "sync", 347.4, 2.236, 46.0, ""),
        Row("wsgi", "gthread", 883.0, 0.97, 172.2, "coffee c100: 3 of 900"),
    ]
    lines = table(rows).splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |"
    assert lines[2] == "| wsgi | sync | 347 | 2.24 | 46 | 0 |"
    assert lines[3] == "| wsgi | gthread | 883 | 0.97 | 172 | coffee c100: 3 of 900 |"
    assert all(line.count("|") == len(COLUMNS) + 1 for line in lines)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--servers", "wsgi/nope"], "unknown server"),
        (["--servers", "php/sync"], "unknown mode"),
        (["--servers", "wsgi"], "MODE/SERVER"),
        (["--seconds", "0"], "positive"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("servers.py: ") and says in err and err.count("\n") == 1


def test_no_lab_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAB_PORT", "1")
    assert main(["--servers", "wsgi/sync"]) == 1
    assert "no lab answers at http://127.0.0.1:1" in capsys.readouterr().err
