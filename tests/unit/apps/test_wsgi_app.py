"""The WSGI app in-process, under wsgiref.validate (PEP 3333 turned into assertions)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

from apps.breakfast import wsgi_app
from tests.support.contract import (
    ADA,
    CONTRACT_CASES,
    FORM,
    Case,
    Result,
    check_breakfast_steps,
    check_contract,
)


def make_environ(
    method: str = "GET",
    path: str = "/",
    query: str = "",
    body: bytes = b"",
    content_type: str = "",
    script_name: str = "",
    **extra: Any,
) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(body),
        "SERVER_SOFTWARE": "wsgiref-test",
    }
    if body or method == "POST":
        environ["CONTENT_LENGTH"] = str(len(body))
    if content_type:
        environ["CONTENT_TYPE"] = content_type
    environ.update(extra)
    setup_testing_defaults(environ)
    return environ


def call(environ: dict[str, Any]) -> tuple[Result, list[bytes]]:
    """Run the app under the validator; returns the result and the pieces as yielded."""
    seen: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append((status, headers))
        return lambda data: None

    result: Iterable[bytes] = validator(wsgi_app.application)(environ, start_response)
    try:
        pieces = list(result)
    finally:
        result.close()  # type: ignore[attr-defined]
    status, headers = seen[-1]
    lowered = {name.lower(): value for name, value in headers}
    return Result(int(status.split()[0]), lowered, b"".join(pieces)), pieces


@pytest.mark.parametrize("case", CONTRACT_CASES)
def test_contract(case: Case) -> None:
    environ = make_environ(case.method, case.path, case.query, case.body, case.content_type)
    result, _ = call(environ)
    check_contract(case, "wsgi", result)


def test_who_counts_requests_in_this_process() -> None:
    first = json.loads(call(make_environ())[0].body)
    second = json.loads(call(make_environ())[0].body)
    assert second["requests_served"] == first["requests_served"] + 1
    assert first["pid"] == first["worker"]
    assert first["server"] == "wsgiref-test"


def test_env_shows_the_environ_as_strings() -> None:
    result, _ = call(make_environ(path="/env", query="a=1", script_name="/wsgi"))
    variables = json.loads(result.body)["variables"]
    assert variables["SCRIPT_NAME"] == "/wsgi"
    assert variables["PATH_INFO"] == "/env"
    assert variables["QUERY_STRING"] == "a=1"
    assert variables["wsgi.url_scheme"] == "http"
    assert variables["wsgi.version"] == "(1, 0)"  # a non-string, shown by repr
    assert all(isinstance(value, str) for value in variables.values())


@pytest.mark.parametrize(
    ("script_name", "action"),
    [pytest.param("/wsgi", "/wsgi/form", id="mounted"), pytest.param("", "/form", id="root")],
)
def test_form_action_uses_the_mount_point(script_name: str, action: str) -> None:
    page, _ = call(make_environ(path="/form", script_name=script_name))
    assert f'action="{action}"' in page.body.decode()
    thanks, _ = call(
        make_environ("POST", "/form", body=ADA, content_type=FORM, script_name=script_name)
    )
    assert f'href="{action}"' in thanks.body.decode()


def test_mounted_app_routes_on_path_info() -> None:
    result, _ = call(make_environ(path="/coffee", query="ms=0", script_name="/wsgi"))
    assert result.status == 200


def test_stream_yields_each_line_as_it_is_ready() -> None:
    environ = make_environ(path="/stream", query="chunks=3&interval_ms=20")
    started = time.perf_counter()
    result, pieces = call(environ)
    assert len(pieces) == 3  # one yield per line: the server can send each on its own
    assert time.perf_counter() - started >= 0.060
    times = [json.loads(piece)["t"] for piece in pieces]
    assert times == sorted(times)
    assert result.headers.get("x-accel-buffering") == "no"


def test_stream_is_lazy() -> None:
    # The app returns at once; the waiting happens while the server iterates.
    environ = make_environ(path="/stream", query="chunks=1&interval_ms=10000")
    started = time.perf_counter()
    result = wsgi_app.application(environ, lambda status, headers, exc_info=None: None)
    assert time.perf_counter() - started < 5
    result.close()  # type: ignore[attr-defined]


def test_upload_reads_no_further_than_content_length() -> None:
    environ = make_environ("POST", "/upload", body=b"abcdefgh")
    environ["CONTENT_LENGTH"] = "3"
    body = environ["wsgi.input"]  # the validator wraps it in the environ
    result, _ = call(environ)
    assert json.loads(result.body)["bytes"] == 3
    assert body.read() == b"defgh"  # still there: never read


def test_upload_chunked_reads_to_the_end_when_input_is_terminated() -> None:
    environ = make_environ("POST", "/upload", body=b"x" * 100_000)
    del environ["CONTENT_LENGTH"]  # a chunked request has none
    environ["wsgi.input_terminated"] = True
    result, _ = call(environ)
    assert json.loads(result.body)["bytes"] == 100_000


def test_upload_without_length_or_termination_has_no_body() -> None:
    environ = make_environ("POST", "/upload", body=b"x" * 10)
    del environ["CONTENT_LENGTH"]
    result, _ = call(environ)
    assert json.loads(result.body)["bytes"] == 0


def test_upload_short_body_is_a_400() -> None:
    environ = make_environ("POST", "/upload", body=b"abc")
    environ["CONTENT_LENGTH"] = "10"
    result, _ = call(environ)
    assert result.status == 400


def test_form_declared_too_large_is_refused_unread() -> None:
    environ = make_environ("POST", "/form", body=b"a=b", content_type=FORM)
    environ["CONTENT_LENGTH"] = str(2 * 1024 * 1024)
    body = environ["wsgi.input"]
    result, _ = call(environ)
    assert result.status == 413
    assert body.read() == b"a=b"


def test_bad_content_length_is_a_400() -> None:
    # Called directly: the validator itself refuses such an environ.
    environ = make_environ("POST", "/upload", body=b"abc")
    environ["CONTENT_LENGTH"] = "three"
    statuses: list[str] = []
    wsgi_app.application(environ, lambda status, headers, exc_info=None: statuses.append(status))
    assert statuses == ["400 Bad Request"]


def test_whole_responses_are_lists() -> None:
    # The gateway layer (and PEP 3333 servers) can tell a finished response (a list)
    # from a stream (an iterator) without iterating.
    body = wsgi_app.application(make_environ(), lambda status, headers, exc_info=None: None)
    assert isinstance(body, list)


def test_breakfast_says_when_the_coffee_and_the_omelette_ran() -> None:
    before = time.time()
    result, _ = call(make_environ(path="/breakfast", query="coffee_ms=30&omelette_ms=20"))
    check_breakfast_steps("wsgi", result.body, before, time.time(), coffee_ms=30)
