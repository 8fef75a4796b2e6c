"""RFC 3875 §6 response parsing, one data file per case (tests/unit/cgi_cases/).

NNN-name.txt is a script's raw output; NNN-name.json the expected response
(only the keys given are compared) or the expected error text. New bug, new file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cgi.response import (
    MAX_HEADER_BYTES,
    CGIResponseError,
    find_header_end,
    parse_cgi_response,
)

CASES = sorted((Path(__file__).parent / "cgi_cases").glob("*.txt"))


def _case_id(path: Path) -> str:
    rfc = json.loads(path.with_suffix(".json").read_text())["rfc"]
    return f"{rfc}-{path.stem.split('-', 1)[1]}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(p) for p in CASES])
def test_cgi_output(case: Path) -> None:
    spec = json.loads(case.with_suffix(".json").read_text())
    limit = spec.get("max_header_bytes", MAX_HEADER_BYTES)
    if "error" in spec:
        with pytest.raises(CGIResponseError, match=spec["error"]):
            parse_cgi_response(case.read_bytes(), max_header_bytes=limit)
        return
    resp = parse_cgi_response(case.read_bytes(), max_header_bytes=limit)
    actual = {
        "status": resp.status,
        "reason": resp.reason,
        "kind": resp.kind,
        "location": resp.location,
        "headers": [list(h) for h in resp.headers],
        "body": resp.body.decode("latin-1"),
    }
    assert {k: actual[k] for k in spec["expect"]} == spec["expect"]


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize(
    "prefix, expected",
    [
        pytest.param(b"Content-Type: text/plain\n", None, id="6.1-incomplete"),
        pytest.param(b"Content-Type: text/plain\n\nbo", 26, id="6.1-lf"),
        pytest.param(b"Content-Type: text/plain\r\n\r\n", 28, id="6.1-crlf"),
    ],
)
def test_find_header_end_on_a_growing_prefix(prefix: bytes, expected: int | None) -> None:
    assert find_header_end(prefix) == expected


def test_status_line_and_header_lookup() -> None:
    resp = parse_cgi_response(b"Status: 201 Created\nContent-Type: text/plain\nX-A: 1\n\n")
    assert resp.status_line == "201 Created"
    assert resp.header("content-type") == "text/plain"
    assert resp.header("x-missing") is None


@pytest.mark.parametrize(
    "status, phrase",
    [(404, "Not Found"), (299, "Unknown"), (499, "Client Error"), (599, "Server Error")],
)
def test_a_status_without_a_reason_gets_the_labs_phrase(status: int, phrase: str) -> None:
    # Rule 4: the phrase comes from gateway.errors.reason, as every status line's does.
    resp = parse_cgi_response(f"Status: {status}\nContent-Type: text/plain\n\n".encode())
    assert (resp.status, resp.reason) == (status, phrase)
