"""The app contract: one table of requests and expected answers (``CONTRACT_CASES``)
and the check of an answer against it (``check_contract``), run by the CGI, WSGI
and ASGI app tests against their own form of the app.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest

from apps.breakfast import kitchen

# --- the contract, once for all three apps ---------------------------------------------------

JSON = "application/json"
HTML = "text/html"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"

UPLOAD = bytes(range(256)) * 800  # 200 KiB: several 64 KiB reads
ADA = b"first_name=Ada&last_name=Lovelace&email=ada%40example.org"
BOUNDARY = "breakfast-boundary"


def multipart(fields: dict[str, str]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode()


@dataclass(frozen=True)
class Case:
    """One request and what every mode must answer (``by_mode`` where modes differ)."""

    method: str
    path: str
    query: str = ""
    body: bytes = b""
    content_type: str = ""
    status: int = 200
    media_type: str = JSON
    keys: tuple[str, ...] = ()  # JSON keys that must be present
    values: dict[str, Any] = field(default_factory=dict)  # JSON items that must match
    contains: str = ""  # text the body must contain
    lines: int | None = None  # NDJSON: number of lines
    by_mode: dict[str, tuple[int, str]] = field(default_factory=dict)  # mode -> (status, type)

    def expected(self, mode: str) -> tuple[int, str]:
        return self.by_mode.get(mode, (self.status, self.media_type))


class Result(NamedTuple):
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


def bad_number(path: str, query: str, message: str, **extra: Any) -> Case:
    return Case("GET", path, query, status=400, values={"error": message}, **extra)


NEEDS_ASGI = {"cgi": (501, JSON), "wsgi": (501, JSON)}
FORM = "application/x-www-form-urlencoded"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"

CONTRACT_CASES = [
    pytest.param(
        Case("GET", "/", keys=("mode", "pid", "worker", "requests_served", "server")), id="who"
    ),
    pytest.param(Case("HEAD", "/"), id="who-head"),
    pytest.param(Case("GET", "/env", keys=("mode", "variables")), id="env"),
    pytest.param(
        Case("GET", "/coffee", "ms=5", values={"ms": 5}, keys=("elapsed_ms",)), id="coffee"
    ),
    pytest.param(Case("GET", "/coffee", values={"ms": 100}), id="coffee-default-100"),
    pytest.param(Case("HEAD", "/coffee", "ms=1"), id="coffee-head"),
    pytest.param(
        Case("GET", "/omelette", "ms=5", values={"ms": 5}, keys=("whisks",)), id="omelette"
    ),
    pytest.param(
        Case(
            "GET",
            "/breakfast",
            "coffee_ms=5&omelette_ms=5",
            values={"coffee_ms": 5, "omelette_ms": 5},
            keys=("elapsed_ms", "steps"),
        ),
        id="breakfast",
    ),
    pytest.param(
        Case("GET", "/blocking-coffee", "ms=5", values={"ms": 5, "thread": 0}),
        id="blocking-coffee",
    ),
    pytest.param(
        Case("GET", "/blocking-coffee", "ms=5&thread=1", values={"ms": 5, "thread": 1}),
        id="blocking-coffee-on-a-thread",
    ),
    pytest.param(
        Case("GET", "/stream", "chunks=3&interval_ms=1", media_type=NDJSON, lines=3), id="stream"
    ),
    pytest.param(
        Case("GET", "/stream", "chunks=0", media_type=NDJSON, lines=0), id="stream-no-chunks"
    ),
    pytest.param(
        Case(
            "POST",
            "/upload",
            body=UPLOAD,
            content_type="application/octet-stream",
            values={"bytes": len(UPLOAD), "sha256": hashlib.sha256(UPLOAD).hexdigest()},
        ),
        id="upload",
    ),
    pytest.param(
        Case("POST", "/upload", values={"bytes": 0, "sha256": hashlib.sha256().hexdigest()}),
        id="upload-empty",
    ),
    pytest.param(Case("GET", "/form", media_type=HTML, contains='action="/form"'), id="form-page"),
    pytest.param(
        Case(
            "POST",
            "/form",
            body=ADA,
            content_type=FORM,
            media_type=HTML,
            contains="Thank you, Ada Lovelace!",
        ),
        id="form-urlencoded",
    ),
    pytest.param(
        Case(
            "POST",
            "/form",
            body=multipart({"first_name": "Ada", "last_name": "Lovelace", "email": "a@b.org"}),
            content_type=MULTIPART,
            media_type=HTML,
            contains="Thank you, Ada Lovelace!",
        ),
        id="form-multipart",
    ),
    pytest.param(
        Case(
            "POST",
            "/form",
            body=b"first_name=%3Cscript%3E&last_name=O%27Hara&email=x%40y.org",
            content_type=FORM + "; charset=utf-8",
            media_type=HTML,
            contains="Thank you, &lt;script&gt; O&#x27;Hara!",
        ),
        id="form-name-escaped",
    ),
    pytest.param(
        Case(
            "POST",
            "/form",
            body=b"first_name=Ada&last_name=Lovelace",
            content_type=FORM,
            status=400,
            values={"field": "email"},
        ),
        id="form-missing-email",
    ),
    pytest.param(
        Case(
            "POST",
            "/form",
            body=b"first_name=Ada&last_name=Lovelace&email=not-an-address",
            content_type=FORM,
            status=400,
            values={"field": "email"},
        ),
        id="form-bad-email",
    ),
    pytest.param(
        Case(
            "POST",
            "/form",
            body=multipart({"first_name": " ", "last_name": "L", "email": "a@b.org"}),
            content_type=MULTIPART,
            status=400,
            values={"field": "first_name"},
        ),
        id="form-empty-first-name",
    ),
    pytest.param(
        Case(
            "POST",
            "/form",
            body=b"first_name=A&last_name=" + b"x" * 101 + b"&email=a%40b.org",
            content_type=FORM,
            status=400,
            values={"field": "last_name"},
        ),
        id="form-last-name-too-long",
    ),
    pytest.param(
        Case("POST", "/form", body=b"hello", content_type="text/plain", status=415),
        id="form-unsupported-type",
    ),
    pytest.param(Case("POST", "/form", body=ADA, status=415), id="form-no-content-type"),
    pytest.param(
        Case(
            "POST",
            "/form",
            body=b"x" * (kitchen.FORM_MAX_BYTES + 1),
            content_type=FORM,
            status=413,
        ),
        id="form-too-large",
    ),
    pytest.param(
        bad_number("/coffee", "ms=abc", "ms must be a whole number in 0..10000, got 'abc'"),
        id="coffee-ms-abc",
    ),
    pytest.param(
        bad_number("/coffee", "ms=-1", "ms must be a whole number in 0..10000, got '-1'"),
        id="coffee-ms-negative",
    ),
    pytest.param(
        bad_number("/coffee", "ms=1.5", "ms must be a whole number in 0..10000, got '1.5'"),
        id="coffee-ms-fraction",
    ),
    pytest.param(
        bad_number("/omelette", "ms=10001", "ms must be a whole number in 0..10000, got '10001'"),
        id="omelette-ms-too-big",
    ),
    pytest.param(
        bad_number("/blocking-coffee", "ms=", "ms must be a whole number in 0..10000, got ''"),
        id="blocking-coffee-ms-empty",
    ),
    pytest.param(
        bad_number(
            "/blocking-coffee", "thread=2", "thread must be a whole number in 0..1, got '2'"
        ),
        id="blocking-coffee-thread-too-big",
    ),
    pytest.param(
        bad_number("/coffee", "ms=1&ms=2", "ms must be given once, got 2 values"),
        id="coffee-ms-repeated",
    ),
    pytest.param(
        bad_number(
            "/breakfast",
            "coffee_ms=5&omelette_ms=x",
            "omelette_ms must be a whole number in 0..10000, got 'x'",
        ),
        id="breakfast-omelette-ms-bad",
    ),
    pytest.param(
        bad_number(
            "/stream", "chunks=1001", "chunks must be a whole number in 0..1000, got '1001'"
        ),
        id="stream-chunks-too-many",
    ),
    pytest.param(
        bad_number(
            "/stream",
            "interval_ms=%E2%91%A0",
            "interval_ms must be a whole number in 0..10000, got '①'",
        ),
        id="stream-interval-not-ascii",
    ),
    pytest.param(
        bad_number(
            "/events",
            "count=abc",
            "count must be a whole number in 0..1000, got 'abc'",
            by_mode=NEEDS_ASGI,
        ),
        id="events-count-bad",
    ),
    pytest.param(Case("GET", "/nope", status=404), id="unknown-path"),
    pytest.param(Case("GET", "/healthz", status=404), id="healthz-is-the-gateways"),
    pytest.param(Case("POST", "/coffee", status=405, values={"status": 405}), id="post-coffee"),
    pytest.param(Case("GET", "/upload", status=405), id="get-upload"),
    pytest.param(Case("DELETE", "/form", status=405), id="delete-form"),
    pytest.param(
        Case("GET", "/ws", by_mode={**NEEDS_ASGI, "asgi": (426, JSON)}), id="ws-plain-http"
    ),
    pytest.param(
        Case("GET", "/events", "count=2&interval_ms=1", media_type=SSE, by_mode=NEEDS_ASGI),
        id="events",
    ),
]


def json_error(status: int, content_type: str, body: bytes | str) -> dict[str, Any] | None:
    """The ``{"error": "<what went wrong>", "status": N}`` body of an error answer
    (CONTRACT.md: every 4xx and 5xx the lab produces), None unless it is one."""
    if not content_type.startswith("application/json"):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    ok = isinstance(data, dict) and data.get("status") == status
    return data if ok and isinstance(data.get("error"), str) and data["error"] else None


def check_contract(case: Case, mode: str, result: Result) -> None:
    """What every mode's answer to ``case`` must look like."""
    status, media_type = case.expected(mode)
    assert result.status == status, result.body[:500]
    assert result.headers.get("content-type", "").startswith(media_type)
    if case.method == "HEAD":
        assert result.body == b""
        if media_type == JSON:
            assert int(result.headers["content-length"]) > 0
        return
    if media_type in (JSON, HTML):
        # Whole responses say how long they are; streams do not.
        assert result.headers.get("content-length") == str(len(result.body))
    else:
        assert "content-length" not in result.headers
    if status == 405:
        assert result.headers.get("allow")
        assert case.method not in result.headers["allow"].split(", ")
    if media_type == JSON:
        data = json.loads(result.body)
        if status >= 400:
            content_type = result.headers.get("content-type", "")
            assert json_error(status, content_type, result.body) is not None, data
        if (status, media_type) == (case.status, case.media_type):
            assert set(case.keys) <= set(data), data
            assert {k: data.get(k) for k in case.values} == case.values
        if case.path == "/" and status == 200:
            assert data["mode"] == mode
    if case.contains:
        assert case.contains in result.body.decode()
    if case.lines is not None:
        lines = result.body.decode().splitlines()
        assert [json.loads(line)["chunk"] for line in lines] == list(range(case.lines))


def check_breakfast_steps(mode: str, body: bytes, start: float, end: float, coffee_ms: int) -> None:
    """A ``/breakfast`` answer's ``steps``: the coffee and the omelette each lie within
    ``start``..``end`` (Unix seconds, the trace headers' clock); the coffee is the
    ``coffee_ms`` wait; one after the other in CGI and WSGI, overlapping in ASGI."""
    steps = json.loads(body)["steps"]
    coffee, omelette = ((steps[n]["start"], steps[n]["end"]) for n in ("coffee", "omelette"))
    for name, (a, b) in (("coffee", coffee), ("omelette", omelette)):
        assert start <= a <= b <= end, f"{name} {a}..{b} outside the request {start}..{end}"
    # The wait is at least as long as asked (rounded to the microsecond).
    assert coffee[1] - coffee[0] >= coffee_ms / 1000 - 1e-5, coffee
    if mode == "asgi":
        # asyncio.gather(): the omelette's turns run while the coffee timer waits.
        assert omelette[0] < coffee[1] and coffee[0] < omelette[1], (coffee, omelette)
    else:
        assert coffee[1] <= omelette[0], f"one after the other: {coffee}, {omelette}"
