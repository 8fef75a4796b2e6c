"""kitchen.py, the plain-Python cooking behind the breakfast app.

The app contract that test_cgi_app, test_wsgi_app and test_asgi_app run against
their own form of the app is in tests/support/contract.py.
"""

from __future__ import annotations

import json
import time

import pytest

from apps.breakfast import kitchen
from tests.support.contract import BOUNDARY, CONTRACT_CASES, FORM, MULTIPART

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
