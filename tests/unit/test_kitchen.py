"""kitchen.py, the plain-Python cooking behind the breakfast app, and the app contract.

``CONTRACT_CASES`` and ``check_contract`` are the one table of requests and
expected answers that test_cgi_app, test_wsgi_app and test_asgi_app run against
their own form of the app.
"""

from __future__ import annotations

import hashlib
import json
import time
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
            keys=("elapsed_ms",),
        ),
        id="breakfast",
    ),
    pytest.param(Case("GET", "/blocking-coffee", "ms=5", values={"ms": 5}), id="blocking-coffee"),
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
            assert isinstance(data["error"], str) and data["error"]
            assert data["status"] == status
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


# --- kitchen itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        pytest.param("/coffee", "", {"ms": 100}, id="default"),
        pytest.param("/coffee", "ms=0", {"ms": 0}, id="zero"),
        pytest.param("/coffee", "ms=10000", {"ms": 10000}, id="maximum"),
        pytest.param("/coffee", "ms=007", {"ms": 7}, id="leading-zeros"),
        pytest.param("/coffee", "ms=5&other=x&other=y", {"ms": 5}, id="unknown-ignored"),
        pytest.param("/breakfast", "", {"coffee_ms": 100, "omelette_ms": 100}, id="breakfast"),
        pytest.param("/stream", "chunks=1000", {"chunks": 1000, "interval_ms": 200}, id="stream"),
        pytest.param("/events", "", {"count": 5, "interval_ms": 100}, id="events"),
        pytest.param("/", "ms=abc", {}, id="no-numbers-here"),
    ],
)
def test_parse_query(path: str, query: str, expected: dict[str, int]) -> None:
    assert kitchen.parse_query(path, query) == expected


@pytest.mark.parametrize(
    "raw",
    ["abc", "-1", "+1", "1.5", "1e3", "10001", "", " 1", "٣", "²", "0x10", "99999999"],
)
def test_whole_number_rejects(raw: str) -> None:
    with pytest.raises(kitchen.HTTPError) as caught:
        kitchen.whole_number("ms", raw)
    assert caught.value.status == 400
    assert caught.value.message == f"ms must be a whole number in 0..10000, got {raw!r}"


def test_parse_query_too_many_fields() -> None:
    with pytest.raises(kitchen.HTTPError, match="too many"):
        kitchen.parse_query("/coffee", "&".join(f"a{i}=1" for i in range(101)))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("", None), ("0", 0), ("1048576", 1048576)],
)
def test_parse_content_length(raw: str | None, expected: int | None) -> None:
    assert kitchen.parse_content_length(raw) == expected


@pytest.mark.parametrize("raw", ["-1", "1.0", "abc", "²", " 1"])
def test_parse_content_length_rejects(raw: str) -> None:
    with pytest.raises(kitchen.HTTPError):
        kitchen.parse_content_length(raw)


@pytest.mark.parametrize(
    ("path", "method", "status", "allow"),
    [
        pytest.param("/", "GET", None, None, id="ok"),
        pytest.param("/form", "POST", None, None, id="form-post"),
        pytest.param("/missing", "GET", 404, None, id="unknown"),
        pytest.param("", "GET", 404, None, id="empty-path"),
        pytest.param("/upload", "GET", 405, "POST", id="upload-get"),
        pytest.param("/env", "PUT", 405, "GET, HEAD", id="env-put"),
    ],
)
def test_check_route(path: str, method: str, status: int | None, allow: str | None) -> None:
    if status is None:
        kitchen.check_route(path, method)
        return
    with pytest.raises(kitchen.HTTPError) as caught:
        kitchen.check_route(path, method)
    assert caught.value.status == status
    assert dict(caught.value.headers).get("Allow") == allow


def test_every_route_is_in_the_contract() -> None:
    covered = {param.values[0].path for param in CONTRACT_CASES}  # type: ignore[union-attr]
    assert set(kitchen.ROUTES) <= covered


def test_error_reply_shape() -> None:
    reply = kitchen.HTTPError(400, "email is missing", field="email").reply()
    assert reply.status == 400
    assert dict(reply.headers) == {
        "Content-Type": "application/json",
        "Content-Length": str(len(reply.body)),
    }
    assert json.loads(reply.body) == {"error": "email is missing", "status": 400, "field": "email"}


@pytest.mark.parametrize(
    ("status", "line"),
    [(200, "200 OK"), (413, "413 Request Entity Too Large"), (501, "501 Not Implemented")],
)
def test_status_line(status: int, line: str) -> None:
    assert kitchen.status_line(status) == line


def test_cook_omelette_uses_at_least_the_cpu_time_asked() -> None:
    started, cpu_started = time.perf_counter(), time.thread_time()
    whisks = kitchen.cook_omelette(20)
    assert time.thread_time() - cpu_started >= 0.020
    assert time.perf_counter() - started >= 0.020  # CPU time never outruns the clock
    assert whisks > 0


def test_cook_omelette_zero_is_instant_and_empty() -> None:
    assert kitchen.cook_omelette(0) == 0


def test_stream_line_is_one_json_line() -> None:
    line = kitchen.stream_line(3)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["chunk"] == 3


# --- the form --------------------------------------------------------------------------------

GOOD = {"first_name": ["Ada"], "last_name": ["Lovelace"], "email": ["ada@example.org"]}


def test_validate_form_strips() -> None:
    fields = {"first_name": [" Ada "], "last_name": ["Lovelace"], "email": ["a@b.org\n"]}
    assert kitchen.validate_form(fields) == {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "a@b.org",
    }


@pytest.mark.parametrize(
    ("changes", "bad_field"),
    [
        pytest.param({"first_name": []}, "first_name", id="missing"),
        pytest.param({"last_name": [""]}, "last_name", id="empty"),
        pytest.param({"last_name": ["a", "b"]}, "last_name", id="repeated"),
        pytest.param({"first_name": ["x" * 101]}, "first_name", id="too-long"),
        pytest.param({"first_name": ["a\x00b"]}, "first_name", id="control-character"),
        pytest.param({"email": ["ada"]}, "email", id="email-no-at"),
        pytest.param({"email": ["ada@localhost"]}, "email", id="email-no-dot"),
        pytest.param({"email": ["a b@c.org"]}, "email", id="email-space"),
        pytest.param({"email": ["a@b@c.org"]}, "email", id="email-two-ats"),
    ],
)
def test_validate_form_rejects(changes: dict[str, list[str]], bad_field: str) -> None:
    with pytest.raises(kitchen.HTTPError) as caught:
        kitchen.validate_form(GOOD | changes)
    assert (caught.value.status, caught.value.field) == (400, bad_field)
    assert bad_field in caught.value.message


def test_parse_form_urlencoded_utf8() -> None:
    fields = kitchen.parse_form(FORM, b"first_name=J%C3%B6rg+M&empty=")
    assert fields == {"first_name": ["Jörg M"], "empty": [""]}


def test_parse_form_multipart_with_charset_and_file() -> None:
    body = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="first_name"\r\n'
        "Content-Type: text/plain; charset=iso-8859-1\r\n\r\n"
    ).encode() + b"J\xf6rg\r\n"
    body += (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="note"; filename="n.txt"\r\n\r\n'
        "hello\r\n"
        f"--{BOUNDARY}\r\n"
        "Content-Disposition: form-data\r\n\r\n"
        "nameless\r\n"
        f"--{BOUNDARY}--\r\n"
    ).encode()
    assert kitchen.parse_form(MULTIPART, body) == {"first_name": ["Jörg"], "note": ["hello"]}


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        pytest.param("multipart/form-data", b"--x\r\n\r\n--x--", 400, id="no-boundary"),
        pytest.param(MULTIPART, b"no parts at all", 400, id="boundary-not-found"),
        pytest.param("application/json", b"{}", 415, id="json"),
        pytest.param("", b"a=b", 415, id="none"),
    ],
)
def test_parse_form_rejects(content_type: str, body: bytes, status: int) -> None:
    with pytest.raises(kitchen.HTTPError) as caught:
        kitchen.parse_form(content_type, body)
    assert caught.value.status == status


def test_form_page_posts_to_the_action_given() -> None:
    page = kitchen.form_page('/wsgi/form"x')
    assert 'method="post" action="/wsgi/form&quot;x"' in page
    for name in kitchen.FORM_FIELDS:
        assert f'name="{name}"' in page


def test_thank_you_page_escapes_everything() -> None:
    person = {"first_name": "<b>", "last_name": "&", "email": '"@x.org'}
    page = kitchen.thank_you_page(person, "/form")
    assert "<b>" not in page.replace("<body>", "")
    assert "Thank you, &lt;b&gt; &amp;!" in page
    assert "&quot;@x.org" in page


def test_check_body_size() -> None:
    kitchen.check_body_size(None, 10)
    kitchen.check_body_size(10, 10)
    with pytest.raises(kitchen.HTTPError) as caught:
        kitchen.check_body_size(11, 10)
    assert caught.value.status == 413
