"""lab.routing: the one grammar for a mode, a split and a replica count."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import MODES as GATEWAY_MODES
from lab.nginx.render import read_active_mode
from lab.routing import (
    MODES,
    RenderError,
    parse_active,
    parse_replicas,
    parse_split,
    whole_number,
)
from lab.settings import ROOT

SUPERSCRIPT_100 = "\u00b9\u2070\u2070"  # "¹⁰⁰": str.isdigit() is true, int() refuses it


def test_modes_are_the_gateway_s_modes() -> None:
    assert MODES == tuple(GATEWAY_MODES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("007", 7),
        ("", None),
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1.0", None),
        (SUPERSCRIPT_100, None),
        ("\u0661", None),
    ],  # fmt: skip
)
def test_whole_number_is_ascii_digits_only(text: str, expected: int | None) -> None:
    assert whole_number(text) == expected


@pytest.mark.parametrize("text", [f"wsgi={SUPERSCRIPT_100}", "wsgi=\u0661\u0660\u0660"])
def test_non_ascii_digits_in_a_split_are_a_render_error(text: str) -> None:
    with pytest.raises(RenderError, match="whole number"):
        parse_split(text)
    with pytest.raises(RenderError):
        parse_active(text)


def test_non_ascii_digits_in_a_replica_count_are_a_render_error() -> None:
    with pytest.raises(RenderError, match="whole number"):
        parse_replicas("\u00b3")


def test_a_marker_with_non_ascii_digits_reads_as_no_mode() -> None:
    assert read_active_mode(f"# lab-split: wsgi={SUPERSCRIPT_100}\n") is None
    assert read_active_mode("# lab-split: wsgi=90,asgi=10\n") == {"wsgi": 90, "asgi": 10}
    assert read_active_mode("# lab-mode: asgi\n") == "asgi"
    # The kind on the marker must match what follows it.
    assert read_active_mode("# lab-mode: wsgi=100\n") is None
    assert read_active_mode("# lab-split: wsgi\n") is None


def test_the_renderer_cli_refuses_non_ascii_digits_cleanly(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "lab.nginx", "active", "--out", str(tmp_path),
         "--split", f"wsgi={SUPERSCRIPT_100}"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.startswith("lab.nginx: ") and "Traceback" not in run.stderr
    assert not list(tmp_path.iterdir())
