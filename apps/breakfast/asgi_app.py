"""The breakfast app as an ASGI callable (the ASGI 3.0 spec, asgi.readthedocs.io).

``application(scope, receive, send)`` is a coroutine: the request is the ``scope`` dict
plus messages from ``receive()``, the answer is messages to ``send()``, and every
``await`` lets the one event loop run other requests. Look at ``breakfast`` (two
jobs overlapped), ``blocking_coffee`` (the mistake) and ``websocket_echo``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from apps.breakfast import kitchen

MODE = "asgi"

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

# One event loop serves many requests, several of them at the same moment.
requests_served = 0


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    global requests_served
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    requests_served += 1
    path = app_path(scope)
    if scope["type"] == "websocket":
        await websocket_echo(scope, receive, send, path)
        return
    try:
        kitchen.check_route(path, scope["method"])
        await HANDLERS[path](scope, receive, send)
    except kitchen.HTTPError as error:
        await respond(scope, send, error.reply())


def app_path(scope: Scope) -> str:
    # ASGI HTTP scope: "path" is the whole path and so still begins with "root_path",
    # the mount point (/asgi). The app routes on what follows it.
    path = str(scope["path"])
    if path[:8].lower().startswith(("http://", "https://")):
        # RFC 9112 §3.2.2: a server MUST accept the absolute-form
        # ("GET http://host/env HTTP/1.1"); a server that leaves the scheme and
        # authority in "path" (gunicorn's asyncio worker, reached directly) would
        # make every such request a 404. Route on the path part, as the others do.
        path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
    return without_fragment(path).removeprefix(scope.get("root_path", "")) or "/"


def without_fragment(text: str) -> str:
    # RFC 9112 §3.2: a request-target has no fragment ("#..." stays with the
    # client). CGI and WSGI servers drop one a careless client sends; an ASGI
    # server may leave it in path or query_string, so drop it here the same way.
    return text.partition("#")[0]


def mount_point(scope: Scope) -> str:
    return str(scope.get("root_path", ""))


async def respond(scope: Scope, send: Send, reply: kitchen.Reply) -> None:
    """A whole response: one http.response.start, one http.response.body."""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    # HEAD: same headers as GET, no body (RFC 9110 §9.3.2). The server does not strip
    # it for us, so the app sends an empty body.
    body = b"" if scope["method"] == "HEAD" else reply.body
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    # ASGI lifespan protocol: nothing to set up, but say so, so the server need not guess.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# --- endpoints -------------------------------------------------------------------------------


async def who(scope: Scope, receive: Receive, send: Send) -> None:
    # ASGI has no SERVER_SOFTWARE; the scope names the ASGI version and the protocol's
    # spec version (scope["asgi"]), which is what the app can know.
    asgi = scope.get("asgi", {})
    server = f"asgi/{asgi.get('version', '3.0')}"
    if "spec_version" in asgi:
        server += f" {scope['type']}/{asgi['spec_version']}"
    data = {
        "mode": MODE,
        "pid": os.getpid(),
        "worker": os.getpid(),  # the worker process runs the event loop that runs the app
        "requests_served": requests_served,
        "server": server,
    }
    await respond(scope, send, kitchen.json_reply(data))


async def env(scope: Scope, receive: Receive, send: Send) -> None:
    data = {"mode": MODE, "variables": jsonable(scope)}
    await respond(scope, send, kitchen.json_reply(data))


def jsonable(value: object) -> object:
    """The scope as JSON: bytes as latin-1 text (HTTP's own), tuples as lists, objects by repr."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    return repr(value)  # e.g. scope["app"], or whatever a server put in scope["state"]


def query_string(scope: Scope) -> str:
    if "#" in str(scope["path"]):
        return ""  # "/coffee#top?ms=5": the "?ms=5" is part of the fragment too
    return without_fragment(bytes(scope.get("query_string", b"")).decode("latin-1"))


async def coffee(scope: Scope, receive: Receive, send: Send) -> None:
    ms = kitchen.parse_query("/coffee", query_string(scope))["ms"]
    started = time.perf_counter()
    await wait_at_least(ms / 1000)  # the loop serves other requests while this one waits
    data = {"ms": ms, "elapsed_ms": kitchen.elapsed_ms(started)}
    await respond(scope, send, kitchen.json_reply(data))


def default_executor_threads() -> int:
    """How many threads ``asyncio.to_thread`` may use at once in this process: the
    default executor is a ThreadPoolExecutor with its default ``max_workers``,
    min(32, CPUs + 4) (concurrent.futures docs; CPUs: os.process_cpu_count from
    Python 3.13, os.cpu_count before)."""
    count = getattr(os, "process_cpu_count", os.cpu_count)
    return min(32, (count() or 1) + 4)


async def blocking_coffee(scope: Scope, receive: Receive, send: Send) -> None:
    numbers = kitchen.parse_query("/blocking-coffee", query_string(scope))
    ms = numbers["ms"]
    started = time.perf_counter()
    if numbers["thread"]:
        # THE FIX for a blocking call you cannot rewrite: run it on a thread of the
        # loop's default executor and await the result. The loop serves other
        # requests meanwhile; at most that executor's threads sleep at once.
        await asyncio.to_thread(time.sleep, ms / 1000)
    else:
        # THE MISTAKE, on purpose: time.sleep inside async def. It never awaits, so
        # the event loop is stuck here and every other request on this worker waits
        # too. The fixes: ?thread=1 above, or /coffee's await asyncio.sleep(...).
        time.sleep(ms / 1000)
    data = {**numbers, "elapsed_ms": kitchen.elapsed_ms(started)}
    if numbers["thread"]:
        data["threads"] = default_executor_threads()
    await respond(scope, send, kitchen.json_reply(data))


async def omelette(scope: Scope, receive: Receive, send: Send) -> None:
    ms = kitchen.parse_query("/omelette", query_string(scope))["ms"]
    started = time.perf_counter()
    # CPU work has no await in it: async does not make it faster, and the loop runs
    # nothing else until it is done. CPU-bound work is bound by the CPU in every mode.
    whisks = kitchen.cook_omelette(ms)
    data = {"ms": ms, "whisks": whisks, "elapsed_ms": kitchen.elapsed_ms(started)}
    await respond(scope, send, kitchen.json_reply(data))


async def breakfast(scope: Scope, receive: Receive, send: Send) -> None:
    query = kitchen.parse_query("/breakfast", query_string(scope))
    started = time.perf_counter()
    # Put the kettle on and cook meanwhile: both run at once on the one event loop.
    coffee, (whisks, omelette) = await asyncio.gather(
        brew_coffee(query["coffee_ms"]),
        cook_omelette_in_turns(query["omelette_ms"]),
    )
    data = kitchen.breakfast_body(
        query, whisks, overlapped=True, coffee=coffee, omelette=omelette, started=started
    )
    await respond(scope, send, kitchen.json_reply(data))


async def brew_coffee(ms: int) -> tuple[float, float]:
    """Wait ``ms`` for the coffee; when the wait began and ended (trace clock)."""
    start = kitchen.trace_clock()
    await wait_at_least(ms / 1000)
    return start, kitchen.trace_clock()


async def wait_at_least(seconds: float) -> None:
    """``asyncio.sleep(seconds)``, and never a moment less on the wall clock.

    uvloop's timers (libuv's) count whole milliseconds from a clock read once per
    loop turn, so a sleep armed late in a busy turn can end early: 199.9 ms for
    200 was seen. The rest, if any, is slept too, so the coffee is the wait asked.
    """
    until = time.time() + seconds
    await asyncio.sleep(seconds)
    while (left := until - time.time()) > 0:
        await asyncio.sleep(left)


async def cook_omelette_in_turns(ms: int) -> tuple[int, tuple[float, float]]:
    """The omelette in 1 ms slices with an ``await`` between them: the whisk
    rounds, and when the first turn began and the last one ended (trace clock).

    Each ``await asyncio.sleep(0)`` hands the loop back for a moment, so the coffee
    timer (and any other request) gets its turn: the wait and the work overlap in
    one thread. ``asyncio.to_thread(kitchen.cook_omelette, ms)`` would overlap
    them too, but by adding a thread, which buys no extra CPU under the GIL; the
    slices keep the picture to one loop and show what an ``await`` is for.
    """
    whisks = 0
    first = last = kitchen.trace_clock()  # the first turn begins now
    for _ in range(ms):
        whisks += kitchen.whisk(0.001)  # one millisecond of CPU work per turn
        last = kitchen.trace_clock()  # this turn is over; the loop may run others
        await asyncio.sleep(0)
    return whisks, (first, last)


async def stream(scope: Scope, receive: Receive, send: Send) -> None:
    query = kitchen.parse_query("/stream", query_string(scope))
    # No Content-Length: more_body=True tells the server more is coming, and it frames
    # the body itself (chunked on HTTP/1.1). X-Accel-Buffering: no asks nginx to pass
    # each piece on at once.
    headers = [(b"content-type", b"application/x-ndjson"), (b"x-accel-buffering", b"no")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send_in_turns(
        scope, receive, send, query["chunks"], query["interval_ms"], kitchen.stream_line
    )


async def events(scope: Scope, receive: Receive, send: Send) -> None:
    query = kitchen.parse_query("/events", query_string(scope))
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send_in_turns(scope, receive, send, query["count"], query["interval_ms"], sse_event)


def sse_event(number: int) -> bytes:
    # HTML Living Standard, server-sent events: "field: value" lines, a blank line
    # ends the event; "id" is what the browser sends back as Last-Event-ID.
    data = json.dumps({"event": number, "t": round(time.time(), 6)})  # one line: no "\n"
    return f"id: {number}\ndata: {data}\n\n".encode()


async def send_in_turns(
    scope: Scope,
    receive: Receive,
    send: Send,
    count: int,
    interval_ms: int,
    make: Callable[[int], bytes],
) -> None:
    """Send ``make(0)``, ``make(1)``, ... ``interval_ms`` apart, until done or the client leaves.

    The app hears that the client went away from ``receive()`` (http.disconnect),
    so a watcher task listens while the loop sleeps between pieces.
    """
    if scope["method"] == "HEAD":
        await send({"type": "http.response.body", "body": b""})
        return
    gone = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        for number in range(count):
            done, _ = await asyncio.wait({gone}, timeout=interval_ms / 1000)
            if done:
                return  # nobody is listening any more
            await send({"type": "http.response.body", "body": make(number), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        gone.cancel()


async def wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def upload(scope: Scope, receive: Receive, send: Send) -> None:
    digest = hashlib.sha256()
    size = 0
    # The body arrives as http.request messages, in whatever pieces the server read,
    # until one says more_body=False.
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return  # the client gave up; nobody to answer
        block = message.get("body", b"")
        digest.update(block)
        size += len(block)
        if not message.get("more_body", False):
            break
    await respond(scope, send, kitchen.json_reply({"bytes": size, "sha256": digest.hexdigest()}))


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole body, at most ``limit`` bytes (413 beyond); None if the client left."""
    declared = kitchen.parse_content_length(header(scope, b"content-length"))
    kitchen.check_body_size(declared, limit)  # declared too big: refuse before reading
    blocks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        blocks.append(message.get("body", b""))
        size += len(blocks[-1])
        kitchen.check_body_size(size, limit)
        if not message.get("more_body", False):
            return b"".join(blocks)


def header(scope: Scope, name: bytes) -> str | None:
    # ASGI: headers are [name, value] byte pairs, names lower-cased, in the order received.
    values = [bytes(value).decode("latin-1") for key, value in scope["headers"] if key == name]
    return ", ".join(values) if values else None


async def form(scope: Scope, receive: Receive, send: Send) -> None:
    form_url = mount_point(scope) + "/form"  # the link must work under /asgi/ and at /
    if scope["method"] != "POST":
        await respond(scope, send, kitchen.html_reply(kitchen.form_page(form_url)))
        return
    body = await read_body(scope, receive, kitchen.FORM_MAX_BYTES)
    if body is None:
        return
    # Parsing a form is CPU work with no await in it: up to 1 MiB of MIME on the
    # event loop would stall every other request of this worker meanwhile, so
    # it runs in a thread and the loop keeps serving.
    fields = await asyncio.to_thread(kitchen.parse_form, header(scope, b"content-type") or "", body)
    person = kitchen.validate_form(fields)
    await respond(scope, send, kitchen.html_reply(kitchen.thank_you_page(person, form_url)))


async def plain_http_ws(scope: Scope, receive: Receive, send: Send) -> None:
    # /ws over plain HTTP, without the Upgrade handshake: say what is needed.
    # RFC 9110 §15.5.22: a 426 MUST name the protocol to switch to in Upgrade.
    error = kitchen.HTTPError(
        426,
        "/ws is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)",
        headers=[("Upgrade", "websocket")],
    )
    await respond(scope, send, error.reply())


async def websocket_echo(scope: Scope, receive: Receive, send: Send, path: str) -> None:
    """WebSocket /ws: accept, then send every message back until the client closes."""
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            if path != "/ws":
                await refuse_handshake(scope, send, path)
                return
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
        elif message["type"] == "websocket.disconnect":
            return


async def refuse_handshake(scope: Scope, send: Send, path: str) -> None:
    """A WebSocket handshake on a path other than /ws: the JSON 404 an HTTP GET gets.

    Through nginx this does not happen: nginx passes Upgrade on only to /ws, so
    elsewhere the handshake arrives as the plain GET it also is (RFC 9110 §7.8: a
    server MAY ignore Upgrade) and is answered like one, in every mode. Reached
    directly, the server has already chosen WebSocket. The ASGI "WebSocket Denial
    Response" extension lets the app answer the handshake with any HTTP response;
    a server without it (gunicorn's asyncio worker) can only say 403 after a
    close before accept, with an empty body.
    """
    if "websocket.http.response" in scope.get("extensions", {}):
        try:
            kitchen.check_route(path, "GET")
            error = kitchen.HTTPError(404, f"no WebSocket endpoint at {path!r}: it is /ws")
        except kitchen.HTTPError as unknown:
            error = unknown
        reply = error.reply()
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        start = {"type": "websocket.http.response.start", "status": reply.status}
        await send(start | {"headers": headers})
        await send({"type": "websocket.http.response.body", "body": reply.body})
        return
    await send({"type": "websocket.close", "code": 1008})


HANDLERS: dict[str, Handler] = {
    "/": who,
    "/env": env,
    "/form": form,
    "/coffee": coffee,
    "/omelette": omelette,
    "/breakfast": breakfast,
    "/blocking-coffee": blocking_coffee,
    "/stream": stream,
    "/upload": upload,
    "/ws": plain_http_ws,
    "/events": events,
}
