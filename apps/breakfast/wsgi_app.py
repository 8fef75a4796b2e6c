"""The breakfast app as a WSGI callable (PEP 3333).

The server calls ``application(environ, start_response)`` once per request: the request
is the ``environ`` dict, the answer is ``start_response(status, headers)`` plus an iterable
of bytes. Look at ``stream`` (a generator, sent piece by piece as it yields) and
``read_body`` (``wsgi.input`` read in chunks, never past CONTENT_LENGTH).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from apps.breakfast import kitchen

MODE = "wsgi"

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
Handler = Callable[[Environ, StartResponse], Iterable[bytes]]

# One process serves many requests over its life (gunicorn pre-forks and reuses workers).
requests_served = 0


def application(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    global requests_served
    requests_served += 1
    # PEP 3333: SCRIPT_NAME is where the app is mounted, PATH_INFO the app-relative rest.
    path = environ.get("PATH_INFO") or "/"
    try:
        kitchen.check_route(path, environ["REQUEST_METHOD"])
        return HANDLERS[path](environ, start_response)
    except kitchen.HTTPError as error:
        return respond(environ, start_response, error.reply())


def respond(environ: Environ, start_response: StartResponse, reply: kitchen.Reply) -> list[bytes]:
    """A whole response: status line and headers, then the body as a one-item list."""
    start_response(kitchen.status_line(reply.status), reply.headers)
    # HEAD: the same headers as GET, no body (RFC 9110 §9.3.2).
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [reply.body]


def mount_point(environ: Environ) -> str:
    return str(environ.get("SCRIPT_NAME", ""))


# --- endpoints -------------------------------------------------------------------------------


def who(environ: Environ, start_response: StartResponse) -> list[bytes]:
    data = {
        "mode": MODE,
        "pid": os.getpid(),
        "worker": os.getpid(),  # the worker process runs the app itself
        "requests_served": requests_served,
        "server": environ.get("SERVER_SOFTWARE", ""),
    }
    return respond(environ, start_response, kitchen.json_reply(data))


def env(environ: Environ, start_response: StartResponse) -> list[bytes]:
    # The environ as the app got it: CGI-style strings plus wsgi.* objects (shown by repr).
    variables = {k: v if isinstance(v, str) else repr(v) for k, v in sorted(environ.items())}
    return respond(
        environ, start_response, kitchen.json_reply({"mode": MODE, "variables": variables})
    )


def coffee(environ: Environ, start_response: StartResponse) -> list[bytes]:
    ms = kitchen.parse_query("/coffee", environ.get("QUERY_STRING", ""))["ms"]
    started = time.perf_counter()
    time.sleep(ms / 1000)  # the worker waits, and serves nobody else meanwhile
    data = {"ms": ms, "elapsed_ms": kitchen.elapsed_ms(started)}
    return respond(environ, start_response, kitchen.json_reply(data))


def blocking_coffee(environ: Environ, start_response: StartResponse) -> list[bytes]:
    # In WSGI every wait blocks the worker anyway: this is /coffee by another name.
    # thread=1 (the ASGI fix) is accepted and changes nothing: no loop to unblock.
    numbers = kitchen.parse_query("/blocking-coffee", environ.get("QUERY_STRING", ""))
    started = time.perf_counter()
    time.sleep(numbers["ms"] / 1000)
    data = {**numbers, "elapsed_ms": kitchen.elapsed_ms(started)}
    return respond(environ, start_response, kitchen.json_reply(data))


def omelette(environ: Environ, start_response: StartResponse) -> list[bytes]:
    ms = kitchen.parse_query("/omelette", environ.get("QUERY_STRING", ""))["ms"]
    started = time.perf_counter()
    whisks = kitchen.cook_omelette(ms)
    data = {"ms": ms, "whisks": whisks, "elapsed_ms": kitchen.elapsed_ms(started)}
    return respond(environ, start_response, kitchen.json_reply(data))


def breakfast(environ: Environ, start_response: StartResponse) -> list[bytes]:
    query = kitchen.parse_query("/breakfast", environ.get("QUERY_STRING", ""))
    # One thing at a time: wait for the coffee, then cook the omelette.
    data = kitchen.breakfast_in_turn(query)
    return respond(environ, start_response, kitchen.json_reply(data))


def stream(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    query = kitchen.parse_query("/stream", environ.get("QUERY_STRING", ""))
    # A sync worker busy for longer than its timeout is killed (the stream with
    # it, and the worker is gone for everyone): a longer stream is refused.
    kitchen.check_stream_length(query["chunks"], query["interval_ms"])
    # No Content-Length: the length is unknown until the end, so the server frames
    # the body itself (chunked encoding on HTTP/1.1). X-Accel-Buffering asks nginx
    # to pass each piece on at once instead of collecting the whole response.
    headers = [("Content-Type", "application/x-ndjson"), ("X-Accel-Buffering", "no")]
    start_response("200 OK", headers)
    if environ["REQUEST_METHOD"] == "HEAD":
        return []

    def lines() -> Iterator[bytes]:
        # PEP 3333: the server sends each yielded block before asking for the next.
        for chunk in range(query["chunks"]):
            time.sleep(query["interval_ms"] / 1000)
            yield kitchen.stream_line(chunk)

    return lines()


def upload(environ: Environ, start_response: StartResponse) -> list[bytes]:
    digest = hashlib.sha256()
    size = 0
    for block in read_body(environ):
        digest.update(block)
        size += len(block)
    return respond(
        environ, start_response, kitchen.json_reply({"bytes": size, "sha256": digest.hexdigest()})
    )


def read_body(environ: Environ, limit: int | None = None) -> Iterator[bytes]:
    """The request body from ``wsgi.input`` in blocks of at most 64 KiB; over ``limit``: 413.

    PEP 3333: "the application should not attempt to read more data than is
    specified by the CONTENT_LENGTH variable". With no CONTENT_LENGTH there is
    no body, unless the server sets ``wsgi.input_terminated`` (gunicorn does, for
    chunked requests): then the input ends where the body ends, so read to the end.
    """
    stream = environ["wsgi.input"]
    remaining = kitchen.parse_content_length(environ.get("CONTENT_LENGTH"))
    if remaining is None and not environ.get("wsgi.input_terminated"):
        remaining = 0
    if limit is not None:
        kitchen.check_body_size(remaining, limit)  # declared too big: refuse before reading
    size = 0
    while remaining is None or remaining > 0:
        want = kitchen.CHUNK_BYTES if remaining is None else min(remaining, kitchen.CHUNK_BYTES)
        block = stream.read(want)
        if not block:
            if remaining is not None:
                raise kitchen.HTTPError(400, f"the body ended {remaining} bytes early")
            return
        size += len(block)
        if remaining is not None:
            remaining -= len(block)
        if limit is not None:
            kitchen.check_body_size(size, limit)
        yield block


def form(environ: Environ, start_response: StartResponse) -> list[bytes]:
    form_url = mount_point(environ) + "/form"  # the link must work under /wsgi/ and at /
    if environ["REQUEST_METHOD"] != "POST":
        return respond(environ, start_response, kitchen.html_reply(kitchen.form_page(form_url)))
    body = b"".join(read_body(environ, limit=kitchen.FORM_MAX_BYTES))
    fields = kitchen.parse_form(environ.get("CONTENT_TYPE", ""), body)
    person = kitchen.validate_form(fields)
    return respond(
        environ, start_response, kitchen.html_reply(kitchen.thank_you_page(person, form_url))
    )


def needs_asgi(environ: Environ, start_response: StartResponse) -> list[bytes]:
    path = environ.get("PATH_INFO") or "/"
    return respond(
        environ, start_response, kitchen.HTTPError(501, kitchen.NEEDS_ASGI[path]).reply()
    )


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
    "/ws": needs_asgi,
    "/events": needs_asgi,
}
