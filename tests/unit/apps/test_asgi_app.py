"""The ASGI app in-process, through asgiref's ApplicationCommunicator."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from typing import Any

import pytest
from asgiref import testing

from apps.breakfast import asgi_app
from tests.support.contract import (
    ADA,
    CONTRACT_CASES,
    FORM,
    Case,
    Result,
    check_breakfast_steps,
    check_contract,
)

TIMEOUT = 5  # seconds any single step may take before the test fails
ApplicationCommunicator: Any = testing.ApplicationCommunicator  # asgiref's helper has no hints


def http_scope(
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: list[tuple[bytes, bytes]] | None = None,
    root_path: str = "",
) -> dict[str, Any]:
    # ASGI HTTP scope: "path" includes "root_path".
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": query.encode(),
        "headers": headers or [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8083),
    }


async def request(
    scope: dict[str, Any], body: bytes = b"", piece: int = 64 * 1024
) -> tuple[Result, list[dict[str, Any]]]:
    """One HTTP exchange: the body in pieces, then every message until the response ends."""
    communicator = ApplicationCommunicator(asgi_app.application, scope)
    pieces = [body[i : i + piece] for i in range(0, len(body), piece)] or [b""]
    for number, data in enumerate(pieces, 1):
        more = number < len(pieces)
        await communicator.send_input({"type": "http.request", "body": data, "more_body": more})
    start = await communicator.receive_output(TIMEOUT)
    assert start["type"] == "http.response.start"
    messages = [start]
    while True:
        message = await communicator.receive_output(TIMEOUT)
        assert message["type"] == "http.response.body"
        messages.append(message)
        if not message.get("more_body", False):
            break
    await communicator.wait(TIMEOUT)
    headers = {bytes(k).decode().lower(): bytes(v).decode() for k, v in start["headers"]}
    body_out = b"".join(m.get("body", b"") for m in messages[1:])
    return Result(start["status"], headers, body_out), messages


def call(scope: dict[str, Any], body: bytes = b"") -> Result:
    return asyncio.run(request(scope, body))[0]


def content_headers(case: Case) -> list[tuple[bytes, bytes]]:
    headers = [(b"host", b"testserver")]
    if case.content_type:
        headers.append((b"content-type", case.content_type.encode()))
    if case.body or case.method == "POST":
        headers.append((b"content-length", str(len(case.body)).encode()))
    return headers


@pytest.mark.parametrize("case", CONTRACT_CASES)
def test_contract(case: Case) -> None:
    scope = http_scope(case.method, case.path, case.query, content_headers(case))
    check_contract(case, "asgi", call(scope, case.body))


def test_who_counts_requests_and_names_the_asgi_version() -> None:
    first = json.loads(call(http_scope()).body)
    second = json.loads(call(http_scope()).body)
    assert second["requests_served"] == first["requests_served"] + 1
    assert first["pid"] == first["worker"]
    assert first["server"] == "asgi/3.0 http/2.3"


def test_env_shows_the_scope_as_json() -> None:
    scope = http_scope("GET", "/env", "a=1", root_path="/asgi")
    scope["state"] = {"pool": object()}
    scope["app"] = object()
    variables = json.loads(call(scope).body)["variables"]
    assert variables["root_path"] == "/asgi"
    assert variables["path"] == "/asgi/env"
    assert variables["query_string"] == "a=1"  # bytes, decoded latin-1
    assert variables["headers"] == [["host", "testserver"]]  # tuples as lists
    assert variables["client"] == ["127.0.0.1", 50000]
    assert variables["app"].startswith("<object object")  # not JSON: its repr
    assert variables["state"]["pool"].startswith("<object object")


@pytest.mark.parametrize(
    ("root_path", "action"),
    [pytest.param("/asgi", "/asgi/form", id="mounted"), pytest.param("", "/form", id="root")],
)
def test_form_action_uses_the_root_path(root_path: str, action: str) -> None:
    page = call(http_scope(path="/form", root_path=root_path))
    assert f'action="{action}"' in page.body.decode()
    headers = [(b"content-type", FORM.encode()), (b"content-length", str(len(ADA)).encode())]
    thanks = call(http_scope("POST", "/form", headers=headers, root_path=root_path), ADA)
    assert thanks.status == 200
    assert f'href="{action}"' in thanks.body.decode()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/asgi", 200, id="mount-point-itself-is-root"),
        pytest.param("/asgi/", 200, id="root"),
        pytest.param("/asgi/coffee", 200, id="coffee"),
        pytest.param("/asgi/nope", 404, id="unknown"),
    ],
)
def test_routes_on_the_path_after_root_path(path: str, status: int) -> None:
    scope = http_scope(query="ms=0", root_path="/asgi")
    scope["path"] = path
    assert call(scope).status == status


def test_breakfast_overlaps_coffee_and_omelette() -> None:
    scope = http_scope(path="/breakfast", query="coffee_ms=1000&omelette_ms=100")
    data = json.loads(call(scope).body)
    assert data["overlapped"] is True
    # One after the other takes at least 1000 + 100 ms, however fast the CPU; side
    # by side, the 100 ms of CPU work fits inside the 1000 ms wait, even when a
    # busy machine stretches it tenfold.
    assert 1000 <= data["elapsed_ms"] < 1100


async def finish_order(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """Run two requests on the one loop, the first started first; which finished first?"""
    order: list[str] = []

    async def run(name: str, scope: dict[str, Any]) -> None:
        await request(scope)
        order.append(name)

    slow = asyncio.ensure_future(run("slow", first))
    await asyncio.sleep(0)  # let the slow one start
    await asyncio.gather(slow, run("quick", second))
    return order


@pytest.mark.parametrize(
    ("path", "query", "order"),
    [
        pytest.param("/coffee", "ms=200", ["quick", "slow"], id="coffee-awaits"),
        pytest.param(
            "/breakfast",
            "coffee_ms=0&omelette_ms=200",
            ["quick", "slow"],
            id="breakfast-takes-turns",
        ),
        pytest.param("/blocking-coffee", "ms=200", ["slow", "quick"], id="blocking-coffee-blocks"),
        pytest.param(
            "/blocking-coffee", "ms=200&thread=1", ["quick", "slow"], id="blocking-call-on-a-thread"
        ),
        pytest.param("/omelette", "ms=200", ["slow", "quick"], id="omelette-holds-the-loop"),
    ],
)
def test_what_holds_the_event_loop(path: str, query: str, order: list[str]) -> None:
    slow = http_scope(path=path, query=query)
    quick = http_scope(path="/coffee", query="ms=0")
    assert asyncio.run(finish_order(slow, quick)) == order


def test_stream_sends_each_line_in_its_own_message() -> None:
    result, messages = asyncio.run(
        request(http_scope(path="/stream", query="chunks=3&interval_ms=10"))
    )
    bodies = [m["body"] for m in messages[1:]]
    assert [json.loads(b)["chunk"] for b in bodies if b] == [0, 1, 2]
    assert all(m.get("more_body") for m in messages[1:-1])
    assert messages[-1] == {"type": "http.response.body", "body": b""}
    assert result.headers.get("x-accel-buffering") == "no"


def test_stream_head_sends_no_body_and_does_not_wait() -> None:
    started = time.perf_counter()
    result = call(http_scope("HEAD", "/stream", "chunks=1000&interval_ms=10000"))
    assert (result.status, result.body) == (200, b"")
    assert time.perf_counter() - started < TIMEOUT


async def stream_then_leave() -> dict[str, Any]:
    scope = http_scope(path="/stream", query="chunks=1000&interval_ms=10")
    communicator = ApplicationCommunicator(asgi_app.application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(TIMEOUT)
    first: dict[str, Any] = await communicator.receive_output(TIMEOUT)
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(TIMEOUT)  # the app returns instead of streaming on
    assert start["status"] == 200
    return first


def test_stream_stops_when_the_client_leaves() -> None:
    first = asyncio.run(stream_then_leave())
    assert json.loads(first["body"])["chunk"] == 0


def test_events_are_server_sent_events() -> None:
    result = call(http_scope(path="/events", query="count=3&interval_ms=1"))
    events = result.body.decode().split("\n\n")
    assert events[-1] == ""
    for number, event in enumerate(events[:-1]):
        fields = dict(line.split(": ", 1) for line in event.split("\n"))
        assert fields["id"] == str(number)
        assert json.loads(fields["data"])["event"] == number
    assert result.headers["cache-control"] == "no-cache"


def test_upload_in_many_small_messages() -> None:
    body = b"0123456789" * 10_000
    scope = http_scope("POST", "/upload", headers=[(b"content-length", b"100000")])
    result, _ = asyncio.run(request(scope, body, piece=1000))
    assert json.loads(result.body)["bytes"] == 100_000


def test_form_too_large_without_content_length() -> None:
    scope = http_scope("POST", "/form", headers=[(b"content-type", FORM.encode())])
    result, _ = asyncio.run(request(scope, b"a" * (1024 * 1024 + 10), piece=256 * 1024))
    assert result.status == 413


async def websocket(path: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "subprotocols": [],
    }
    communicator = ApplicationCommunicator(asgi_app.application, scope)
    await communicator.send_input({"type": "websocket.connect"})
    replies = [await communicator.receive_output(TIMEOUT)]
    if replies[0]["type"] == "websocket.accept":
        for message in messages:
            await communicator.send_input(message)
            replies.append(await communicator.receive_output(TIMEOUT))
        await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait(TIMEOUT)
    return replies


def test_websocket_echoes_text_and_bytes() -> None:
    replies = asyncio.run(
        websocket(
            "/ws",
            [
                {"type": "websocket.receive", "text": "hello"},
                {"type": "websocket.receive", "bytes": b"\x00\x01"},
            ],
        )
    )
    assert replies == [
        {"type": "websocket.accept"},
        {"type": "websocket.send", "text": "hello"},
        {"type": "websocket.send", "bytes": b"\x00\x01"},
    ]


def test_websocket_elsewhere_is_refused() -> None:
    replies = asyncio.run(websocket("/chat", []))
    assert replies == [{"type": "websocket.close", "code": 1008}]


async def lifespan() -> list[dict[str, Any]]:
    communicator = ApplicationCommunicator(asgi_app.application, {"type": "lifespan"})
    await communicator.send_input({"type": "lifespan.startup"})
    started = await communicator.receive_output(TIMEOUT)
    await communicator.send_input({"type": "lifespan.shutdown"})
    stopped = await communicator.receive_output(TIMEOUT)
    await communicator.wait(TIMEOUT)
    return [started, stopped]


def test_lifespan_is_acknowledged() -> None:
    assert asyncio.run(lifespan()) == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]


def test_blocking_call_on_a_thread_reports_the_executor_it_may_use() -> None:
    result = call(http_scope(path="/blocking-coffee", query="ms=0&thread=1"))
    data = json.loads(result.body)
    assert (data["ms"], data["thread"]) == (0, 1)
    # The number the claim's model uses: the default executor's own max_workers.
    with concurrent.futures.ThreadPoolExecutor() as pool:
        assert data["threads"] == pool._max_workers == asgi_app.default_executor_threads()


def test_breakfast_says_when_the_coffee_and_the_omelette_ran() -> None:
    before = time.time()
    result = call(http_scope(path="/breakfast", query="coffee_ms=30&omelette_ms=20"))
    check_breakfast_steps("asgi", result.body, before, time.time(), coffee_ms=30)


def test_the_omelette_step_runs_from_its_first_turn_to_its_last() -> None:
    # No turns at all: the step is an instant, not the coffee's wait.
    result = call(http_scope(path="/breakfast", query="coffee_ms=50&omelette_ms=0"))
    omelette = json.loads(result.body)["steps"]["omelette"]
    assert omelette["end"] - omelette["start"] < 0.025


def test_a_wait_that_ends_early_sleeps_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop may end a sleep a little early on the wall clock; the coffee never is."""
    now = [1000.0]
    slept: list[float] = []

    async def early_sleep(seconds: float) -> None:  # the first wake is 0.1 ms early
        slept.append(seconds)
        now[0] += seconds - (0.0001 if len(slept) == 1 else 0.0)

    monkeypatch.setattr(asgi_app.time, "time", lambda: now[0])
    monkeypatch.setattr(asgi_app.asyncio, "sleep", early_sleep)
    asyncio.run(asgi_app.wait_at_least(0.2))
    assert now[0] >= 1000.2 and slept[0] == 0.2 and len(slept) == 2
    assert slept[1] == pytest.approx(0.0001)
