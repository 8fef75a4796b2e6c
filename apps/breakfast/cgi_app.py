#!/usr/bin/env -S python3 -IS
"""The breakfast app as a CGI script (RFC 3875, CGI/1.1).

The server starts this program afresh for every request: the request is the
environment (meta-variables such as REQUEST_METHOD, PATH_INFO, QUERY_STRING) plus the
body on stdin; the answer is a header block (Status:, Content-Type:, a blank line)
and the body, written to stdout. Then the process exits. Look at ``main`` and ``respond``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator, Mapping

STARTED = time.time()  # the interpreter is up: this script's first line runs

# Not `from typing import TYPE_CHECKING`: importing typing would add ~15 ms to
# every request (a CGI script starts from nothing each time). mypy reads any
# name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:  # the type checker knows kitchen under its package name
    from typing import BinaryIO

    from apps.breakfast import kitchen
else:
    # Run as `python -I script`, whose directory is not on sys.path: put it there.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import kitchen

MODE = "cgi"
# Set in the script's environment by the FastCGI server's launcher
# (gateway/servers/fcgiwrap.py), never by a request: a client's headers arrive
# as HTTP_* variables only. Under fcgiwrap no gateway layer wraps the script, so
# the script adds the trace headers and answers /healthz itself; under the
# lab's own runner the gateway does both and this stays empty.
SERVER = os.environ.get("GATEWAY_SERVER", "")

# RFC 3875 §4.1 names, plus a few that servers commonly add. /env shows these and the
# HTTP_* ones (§4.1.18), not the rest of the process environment (PATH, LANG, ...).
META_VARIABLES = (
    "AUTH_TYPE",  # §4.1.1
    "CONTENT_LENGTH",  # §4.1.2
    "CONTENT_TYPE",  # §4.1.3
    "GATEWAY_INTERFACE",  # §4.1.4
    "PATH_INFO",  # §4.1.5
    "PATH_TRANSLATED",  # §4.1.6
    "QUERY_STRING",  # §4.1.7
    "REMOTE_ADDR",  # §4.1.8
    "REMOTE_HOST",  # §4.1.9
    "REMOTE_IDENT",  # §4.1.10
    "REMOTE_USER",  # §4.1.11
    "REQUEST_METHOD",  # §4.1.12
    "SCRIPT_NAME",  # §4.1.13
    "SERVER_NAME",  # §4.1.14
    "SERVER_PORT",  # §4.1.15
    "SERVER_PROTOCOL",  # §4.1.16
    "SERVER_SOFTWARE",  # §4.1.17
    "REQUEST_URI",  # common extensions, not in the RFC
    "REQUEST_SCHEME",
    "HTTPS",
    "REMOTE_PORT",
    "SERVER_ADDR",
)

out: BinaryIO = sys.stdout.buffer  # the response is bytes: stdout in binary mode

# When the app's own work began: after the interpreter started and the imports ran,
# so X-Gateway-Start .. X-Gateway-App-Start is the process's start-up (set in main).
app_started = STARTED

# The request-header limits every other server of the lab holds (gunicorn's:
# at most 100 fields, each line at most 8190 bytes; RFC 6585 §5, 431). nginx
# takes lines up to 16 KiB and fcgiwrap passes on whatever nginx sends, so under
# fcgiwrap (SERVER set) the script holds them itself.
MAX_HEADER_FIELDS = 100
MAX_HEADER_FIELD_BYTES = 8190


def main() -> int:
    global app_started
    app_started = time.time()
    method = os.environ.get("REQUEST_METHOD", "GET")  # RFC 3875 §4.1.12
    # §4.1.5 PATH_INFO: the app-relative path; §4.1.13 SCRIPT_NAME: where the app is mounted.
    path = os.environ.get("PATH_INFO") or "/"
    if path == "/healthz" and SERVER:
        respond(kitchen.json_reply({"status": "ok", "mode": MODE}))
        return 0
    try:
        if SERVER:
            check_header_limits(os.environ)
        kitchen.check_route(path, method)
        HANDLERS[path]()
    except kitchen.HTTPError as error:
        respond(error.reply())
    if SERVER:
        drain_stdin()
    return 0


def drain_stdin() -> None:
    """Read what is left of the request body, and drop it (under fcgiwrap).

    fcgiwrap writes the whole body to the script's stdin; when the script has
    exited without reading it (a 413 on the declared length, say), the write
    fails and fcgiwrap sends its own plain-text "502 An error occurred while
    reading the request" in place of the script's answer. nginx bounds the
    body (client_max_body_size) and fcgiwrap closes stdin at its end.
    """
    while sys.stdin.buffer.read(65536):
        pass


def check_header_limits(environ: Mapping[str, str]) -> None:
    """A 431 past MAX_HEADER_FIELDS or MAX_HEADER_FIELD_BYTES, counted from the
    meta-variables the request's header fields became (RFC 3875 §4.1.18)."""
    fields = [(k[5:], v) for k, v in environ.items() if k.startswith("HTTP_")]
    fields += [(k, environ[k]) for k in ("CONTENT_TYPE", "CONTENT_LENGTH") if k in environ]
    if len(fields) > MAX_HEADER_FIELDS:
        raise kitchen.HTTPError(431, f"more than {MAX_HEADER_FIELDS} header fields")
    for name, value in fields:
        if len(name) + 2 + len(value) > MAX_HEADER_FIELD_BYTES:
            field = name.replace("_", "-").title()
            raise kitchen.HTTPError(431, f"header {field} over {MAX_HEADER_FIELD_BYTES} bytes")


def respond(reply: kitchen.Reply) -> None:
    """The CGI response: header lines, a blank line, the body; the server does the HTTP."""
    write_headers(reply.status, reply.headers)
    # RFC 3875 §4.3.3: "The script MUST NOT provide a response message-body for a HEAD request."
    if os.environ.get("REQUEST_METHOD") != "HEAD":
        out.write(reply.body)
    out.flush()


def write_headers(status: int, headers: kitchen.Headers, finished: bool = True) -> None:
    # RFC 3875 §6.3.3: "Status:" carries the status code and reason phrase; §6.3.1
    # Content-Type and the other fields follow. §7.2: on UNIX the newline is LF, and
    # an empty line ends the header block.
    lines = [f"Status: {kitchen.status_line(status)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"{name}: {value}" for name, value in app_times(finished)]
    if SERVER:
        lines += [f"{name}: {value}" for name, value in trace_headers(finished)]
    out.write(("\n".join(lines) + "\n\n").encode("latin-1"))


def app_times(finished: bool) -> kitchen.Headers:
    """When the app's own work began and ended, under every server (docs/architecture.md).

    The server knows when it started this process (X-Gateway-Start); only the
    script knows when the interpreter's start-up and the imports were over. A
    streamed answer (``finished`` false) has no App-End.
    """
    headers = [("X-Gateway-App-Start", f"{app_started:.6f}")]
    if finished:
        headers.append(("X-Gateway-App-End", f"{time.time():.6f}"))
    return headers


def process_started() -> float:
    """When the kernel created this process (fcgiwrap's fork), Unix seconds.

    proc(5): field 22 of /proc/self/stat, ``starttime``, is the time the process
    started after system boot, in clock ticks (sysconf(_SC_CLK_TCK), usually 100
    a second), on the clock CLOCK_BOOTTIME reads. So it is good to one tick: the
    middle of that tick is returned. Elsewhere than Linux: the script's first line.
    """
    try:
        with open("/proc/self/stat", "rb") as stat:
            raw = stat.read()
        # Field 2, the command name in parentheses, may hold spaces: count after it.
        ticks = int(raw[raw.rindex(b")") + 2 :].split()[22 - 3])
        hz = os.sysconf("SC_CLK_TCK")
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - (ticks + 0.5) / hz
    except (OSError, ValueError, IndexError):
        return STARTED
    return min(time.time() - age, STARTED)


def trace_headers(finished: bool) -> kitchen.Headers:
    """Who served this and when (CONTRACT.md, trace headers), said by the script itself.

    The Pid is this process, new for every request; the Worker is its parent, the
    fcgiwrap process that forked it. Start is when fcgiwrap forked it, as the
    lab's runner reports the spawn: the bar covers the process's start-up too. A
    streamed answer (``finished`` false) has no End.
    """
    request_id = os.environ.get("HTTP_X_REQUEST_ID") or os.urandom(16).hex()  # set by nginx
    headers = [
        ("X-Gateway-Mode", MODE),
        ("X-Gateway-Server", SERVER),
        ("X-Gateway-Pid", str(os.getpid())),
        ("X-Gateway-Worker", str(os.getppid())),
        ("X-Gateway-Host", os.uname().nodename),
        ("X-Request-Id", request_id),
        ("X-Gateway-Start", f"{process_started():.6f}"),
    ]
    if finished:
        headers.append(("X-Gateway-End", f"{time.time():.6f}"))
    return headers


def query(path: str) -> dict[str, int]:
    return kitchen.parse_query(path, os.environ.get("QUERY_STRING", ""))  # RFC 3875 §4.1.7


def mount_point() -> str:
    return os.environ.get("SCRIPT_NAME", "")


# --- endpoints -------------------------------------------------------------------------------


def who() -> None:
    data = {
        "mode": MODE,
        "pid": os.getpid(),  # a new process for every request
        "worker": os.getppid(),  # the server process that started this script
        "requests_served": 1,  # ... and so it never serves a second one
        "server": os.environ.get("SERVER_SOFTWARE", ""),  # RFC 3875 §4.1.17
    }
    respond(kitchen.json_reply(data))


def env() -> None:
    variables = {
        name: value
        for name, value in sorted(os.environ.items())
        if name in META_VARIABLES or name.startswith("HTTP_")
    }
    respond(kitchen.json_reply({"mode": MODE, "variables": variables}))


def coffee() -> None:
    ms = query("/coffee")["ms"]
    started = time.perf_counter()
    time.sleep(ms / 1000)  # this process waits; the server starts others for other requests
    respond(kitchen.json_reply({"ms": ms, "elapsed_ms": kitchen.elapsed_ms(started)}))


def blocking_coffee() -> None:
    # In CGI each request has its own process: blocking it blocks nobody else, and
    # thread=1 (the ASGI fix) is accepted and changes nothing.
    numbers = query("/blocking-coffee")
    started = time.perf_counter()
    time.sleep(numbers["ms"] / 1000)
    respond(kitchen.json_reply({**numbers, "elapsed_ms": kitchen.elapsed_ms(started)}))


def omelette() -> None:
    ms = query("/omelette")["ms"]
    started = time.perf_counter()
    whisks = kitchen.cook_omelette(ms)
    data = {"ms": ms, "whisks": whisks, "elapsed_ms": kitchen.elapsed_ms(started)}
    respond(kitchen.json_reply(data))


def breakfast() -> None:
    # One thing at a time: wait for the coffee, then cook the omelette.
    data = kitchen.breakfast_in_turn(query("/breakfast"))
    respond(kitchen.json_reply(data))


def stream() -> None:
    numbers = query("/stream")
    # The runner ends a script after 30 s: a longer stream is refused, not cut off.
    kitchen.check_stream_length(numbers["chunks"], numbers["interval_ms"])
    # No Content-Length: the body ends when the script exits (RFC 3875 §6.4: the
    # server reads "until the script signals the end ... by way of an end-of-file").
    # X-Accel-Buffering asks nginx to pass each line on at once.
    headers = [("Content-Type", "application/x-ndjson"), ("X-Accel-Buffering", "no")]
    write_headers(200, headers, finished=False)
    out.flush()
    if os.environ.get("REQUEST_METHOD") == "HEAD":  # §4.3.3: no body for HEAD
        return
    for chunk in range(numbers["chunks"]):
        time.sleep(numbers["interval_ms"] / 1000)
        out.write(kitchen.stream_line(chunk))
        out.flush()  # hand the line to the server now, not when Python's buffer fills


def upload() -> None:
    digest = hashlib.sha256()
    size = 0
    for block in read_body():
        digest.update(block)
        size += len(block)
    respond(kitchen.json_reply({"bytes": size, "sha256": digest.hexdigest()}))


def read_body(limit: int | None = None) -> Iterator[bytes]:
    """The request body from stdin in blocks of at most 64 KiB; over ``limit``: 413.

    RFC 3875 §4.2: the body is CONTENT_LENGTH bytes on stdin, and "the script MUST
    NOT attempt to read more than CONTENT_LENGTH bytes, even if more data is
    available". No CONTENT_LENGTH: no body.
    """
    remaining = kitchen.parse_content_length(os.environ.get("CONTENT_LENGTH")) or 0
    if limit is not None:
        kitchen.check_body_size(remaining, limit)  # declared too big: refuse before reading
    stdin = sys.stdin.buffer
    while remaining > 0:
        block = stdin.read(min(remaining, kitchen.CHUNK_BYTES))
        if not block:
            raise kitchen.HTTPError(400, f"the body ended {remaining} bytes early")
        remaining -= len(block)
        yield block


def form() -> None:
    form_url = mount_point() + "/form"  # the link must work under /cgi/ and at /
    if os.environ.get("REQUEST_METHOD") != "POST":
        respond(kitchen.html_reply(kitchen.form_page(form_url)))
        return
    body = b"".join(read_body(limit=kitchen.FORM_MAX_BYTES))
    fields = kitchen.parse_form(os.environ.get("CONTENT_TYPE", ""), body)  # §4.1.3
    person = kitchen.validate_form(fields)
    respond(kitchen.html_reply(kitchen.thank_you_page(person, form_url)))


def needs_asgi() -> None:
    path = os.environ.get("PATH_INFO") or "/"
    respond(kitchen.HTTPError(501, kitchen.NEEDS_ASGI[path]).reply())


HANDLERS = {
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


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        # The server stopped reading (the client went away). Point stdout at
        # /dev/null so Python's final flush does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
