"""The cooking behind the breakfast app, shared by its CGI, WSGI and ASGI forms.

Plain Python and the standard library only, no protocol in sight: parsing the
query numbers, the CPU-bound omelette, the form (page, parsing, validation,
thank-you page), JSON bodies and the error shape. Each app file does its own
I/O and imports this module, the CGI script as the top-level module ``kitchen``
and the others as ``apps.breakfast.kitchen``, so nothing here imports from
its own package.

Query numbers: ``QUERY_DEFAULTS`` (per endpoint) and ``MAXIMUM`` below; a
missing one takes its default, anything but a whole number in 0..MAXIMUM is a
400. The limits below keep what the app accepts to what its server can finish.
"""

from __future__ import annotations

import html
import json
import re
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from http import HTTPStatus

# The typing module costs a CGI script ~15 ms at every start; annotations only
# need it while type checking (mypy reads any name TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from email.message import MIMEPart
    from typing import Final

Headers = list[tuple[str, str]]

# --- routes ----------------------------------------------------------------------------------

# App-relative path -> the methods it answers. HEAD goes wherever GET goes
# (RFC 9110 §9.3.2: the same as GET, without the content).
ROUTES: Final[dict[str, tuple[str, ...]]] = {
    "/": ("GET", "HEAD"),
    "/env": ("GET", "HEAD"),
    "/form": ("GET", "HEAD", "POST"),
    "/coffee": ("GET", "HEAD"),
    "/omelette": ("GET", "HEAD"),
    "/breakfast": ("GET", "HEAD"),
    "/blocking-coffee": ("GET", "HEAD"),
    "/stream": ("GET", "HEAD"),
    "/upload": ("POST",),
    "/ws": ("GET", "HEAD"),
    "/events": ("GET", "HEAD"),
}

# Why CGI and WSGI answer 501 on the two endpoints that need a long-lived connection.
NEEDS_ASGI: Final[dict[str, str]] = {
    "/ws": (
        "WebSocket needs a long-lived connection the app can write to at any time; "
        "CGI/WSGI have one request -> one response"
    ),
    "/events": (
        "server-sent events hold the connection open for as long as the client listens; "
        "here a CGI script or a sync WSGI worker would be tied up for all of it, "
        "so this lab serves them in ASGI only"
    ),
}

# --- errors and bodies -----------------------------------------------------------------------


class HTTPError(Exception):
    """A 4xx/5xx answer: ``{"error": message, "status": status}`` plus optional extras."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or []

    def reply(self) -> Reply:
        extra = {} if self.field is None else {"field": self.field}
        return json_reply(error_body(self.status, self.message, **extra), self.status, self.headers)


class Reply:
    """A whole (not streamed) response: status code, headers, body bytes."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def status_line(status: int) -> str:
    """``404`` -> ``"404 Not Found"`` (the reason phrase the HTTP RFCs suggest)."""
    return f"{status} {HTTPStatus(status).phrase}"


def error_body(status: int, message: str, **extra: object) -> dict[str, object]:
    """The lab's one error shape."""
    return {"error": message, "status": status, **extra}


def json_bytes(data: object) -> bytes:
    """A JSON document as UTF-8 bytes, indented for people reading it in a terminal."""
    return (json.dumps(data, indent=2) + "\n").encode()


def json_reply(data: object, status: int = 200, headers: Headers | None = None) -> Reply:
    body = json_bytes(data)
    return Reply(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        + (headers or []),
        body,
    )


def html_reply(page: str, status: int = 200) -> Reply:
    body = page.encode()
    return Reply(
        status,
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
        body,
    )


def check_route(path: str, method: str) -> None:
    """404 for an unknown path, 405 (with Allow) for a method the path does not answer."""
    methods = ROUTES.get(path)
    if methods is None:
        raise HTTPError(404, f"no such path: {path!r}")
    if method not in methods:
        # RFC 9110 §15.5.6: a 405 MUST carry an Allow header listing the methods.
        allow = ", ".join(methods)
        raise HTTPError(405, f"{method} is not allowed on {path}", headers=[("Allow", allow)])


# --- query numbers ---------------------------------------------------------------------------

MAXIMUM: Final[dict[str, int]] = {
    "ms": 10_000,
    "coffee_ms": 10_000,
    "omelette_ms": 10_000,
    "interval_ms": 10_000,
    "chunks": 1_000,
    "count": 1_000,
    "thread": 1,
}

# Endpoint -> {parameter: default}; the range is 0..MAXIMUM.
QUERY_DEFAULTS: Final[dict[str, dict[str, int]]] = {
    "/coffee": {"ms": 100},
    "/omelette": {"ms": 100},
    # thread=1: the fix, the same blocking call moved off the event loop
    # (asyncio.to_thread) under ASGI; CGI and WSGI have no loop to block.
    "/blocking-coffee": {"ms": 100, "thread": 0},
    "/breakfast": {"coffee_ms": 100, "omelette_ms": 100},
    "/stream": {"chunks": 5, "interval_ms": 200},
    "/events": {"count": 5, "interval_ms": 100},
}

_DIGITS: Final = re.compile(r"[0-9]{1,6}")  # ASCII digits only: str.isdigit() accepts "²"


def parse_query(path: str, query_string: str) -> dict[str, int]:
    """The whole-number parameters of ``path`` from a raw query string, defaults filled in.

    Parameters the endpoint does not know are ignored; a known one given twice,
    or not a whole number in its range, is a 400 naming it.
    """
    try:
        pairs = urllib.parse.parse_qsl(query_string, keep_blank_values=True, max_num_fields=100)
    except ValueError:
        raise HTTPError(400, "too many query parameters (at most 100)") from None
    given: dict[str, list[str]] = {}
    for name, value in pairs:
        given.setdefault(name, []).append(value)
    numbers: dict[str, int] = {}
    for name, default in QUERY_DEFAULTS.get(path, {}).items():
        values = given.get(name)
        if values is None:
            numbers[name] = default
        elif len(values) > 1:
            raise HTTPError(400, f"{name} must be given once, got {len(values)} values")
        else:
            numbers[name] = whole_number(name, values[0])
    return numbers


def whole_number(name: str, raw: str) -> int:
    maximum = MAXIMUM[name]
    if _DIGITS.fullmatch(raw) is None or int(raw) > maximum:
        raise HTTPError(400, f"{name} must be a whole number in 0..{maximum}, got {raw!r}")
    return int(raw)


def parse_content_length(raw: str | None) -> int | None:
    """CONTENT_LENGTH / Content-Length: None when absent or empty, else a whole number."""
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise HTTPError(400, f"Content-Length must be a whole number, got {raw!r}")
    return int(raw)


# --- the omelette: CPU-bound pure-Python work ------------------------------------------------


def whisk(cpu_seconds: float) -> int:
    """Beat eggs (pure-Python arithmetic) until this thread has used ``cpu_seconds`` of CPU.

    Returns how many rounds were beaten. The clock is ``time.thread_time()``, the
    CPU time this thread has had, not the wall clock (``time.perf_counter()``): with
    more busy processes than cores, or other coroutines taking turns on the same
    thread, N ms of work then takes longer than N ms, as real CPU-bound work does,
    instead of quietly shrinking to fit N ms.
    """
    until = time.thread_time() + cpu_seconds
    rounds = 0
    egg = 1
    while time.thread_time() < until:
        for _ in range(100):
            egg = (egg * 31 + 7) % 1_000_003
        rounds += 1
    return rounds


def cook_omelette(ms: int) -> int:
    """About ``ms`` milliseconds of CPU work in one go; returns the whisk rounds."""
    return whisk(ms / 1000)


def elapsed_ms(since: float) -> float:
    """Milliseconds since the ``time.perf_counter()`` reading ``since``."""
    return round((time.perf_counter() - since) * 1000, 3)


# --- when each step of a breakfast ran -------------------------------------------------------

# The clock of the trace headers: X-Gateway-Start/-End are time.time() readings,
# Unix seconds (gateway/trace.py), stamped by the gateway or, in CGI, by the
# server and the script. Steps read the same clock, so a timeline can place the
# coffee and the omelette inside the request's bar. (time.time() is the wall
# clock, not monotonic: right for comparing with the headers, which are too.)
trace_clock = time.time


def step(start: float, end: float) -> dict[str, float]:
    """One step of a request, ``{"start", "end"}`` in Unix seconds with microseconds
    (the precision of the trace headers)."""
    return {"start": round(start, 6), "end": round(end, 6)}


def breakfast_body(
    numbers: Mapping[str, int],
    whisks: int,
    *,
    overlapped: bool,
    coffee: tuple[float, float],
    omelette: tuple[float, float],
    started: float,
) -> dict[str, object]:
    """The JSON of ``/breakfast`` in every mode: the query numbers, the whisk rounds,
    ``elapsed_ms`` since the ``time.perf_counter()`` reading ``started``, and
    ``steps``: when the coffee and the omelette each began and ended (trace clock)."""
    return {
        **numbers,
        "whisks": whisks,
        "overlapped": overlapped,
        "elapsed_ms": elapsed_ms(started),
        "steps": {"coffee": step(*coffee), "omelette": step(*omelette)},
    }


def breakfast_in_turn(numbers: Mapping[str, int]) -> dict[str, object]:
    """``/breakfast`` one thing at a time (CGI, WSGI): wait for the coffee, then cook
    the omelette; about coffee_ms + omelette_ms. ASGI overlaps the two instead."""
    started = time.perf_counter()
    coffee_start = trace_clock()
    time.sleep(numbers["coffee_ms"] / 1000)
    omelette_start = trace_clock()
    whisks = cook_omelette(numbers["omelette_ms"])
    return breakfast_body(
        numbers,
        whisks,
        overlapped=False,
        coffee=(coffee_start, omelette_start),
        omelette=(omelette_start, trace_clock()),
        started=started,
    )


# --- WebSocket -------------------------------------------------------------------------------

# Largest /ws message: 64 KiB. The ASGI server closes with 1009 past it, before
# reading it (RFC 6455 §7.4.1; gateway/servers/gunicorn.py), and stops reading
# while 32 messages wait for the app: a peer that never reads pins about 2.6 MiB.
WS_MAX_MESSAGE_BYTES: Final = 64 * 1024

# --- streamed lines --------------------------------------------------------------------------

CHUNK_BYTES: Final = 64 * 1024  # how much of a request body to read at a time

# In CGI and WSGI a /stream must be over within this many ms in all (chunks x
# interval_ms; longer is a 400 that says so): the CGI runner kills a script
# after 30 s (GATEWAY_TIMEOUT_S), so a longer stream would be cut off halfway,
# and a sync worker is held for the whole stream (gunicorn kills one busy past
# 2 x GATEWAY_TIMEOUT_S + 5 = 65 s). An ASGI stream holds no worker.
STREAM_MAX_MS: Final = 20_000


def check_stream_length(chunks: int, interval_ms: int) -> None:
    """400 when a stream would run past ``STREAM_MAX_MS``: refused before it starts."""
    if chunks * interval_ms > STREAM_MAX_MS:
        raise HTTPError(
            400,
            f"chunks x interval_ms must be at most {STREAM_MAX_MS} in this mode "
            f"(a stream must end within {STREAM_MAX_MS // 1000} s, well before the server's "
            f"request deadline), got {chunks} x {interval_ms} = {chunks * interval_ms}",
        )


def stream_line(chunk: int) -> bytes:
    """One NDJSON line of /stream: which chunk, and when it was made (Unix seconds)."""
    return (json.dumps({"chunk": chunk, "t": round(time.time(), 6)}) + "\n").encode()


# --- the form --------------------------------------------------------------------------------

FORM_FIELDS: Final = ("first_name", "last_name", "email")
FORM_MAX_BYTES: Final = 1024 * 1024  # a bigger POST /form body is a 413
# More fields (urlencoded pairs or multipart parts) than this is a 400; the form
# has three. Counted before parsing, so refusing costs one pass over the bytes.
FORM_MAX_FIELDS: Final = 100
FIELD_MAX_CHARS: Final = 100
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")

_PAGE: Final = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title></head>
<body>
{content}
</body>
</html>
"""


def form_page(action: str) -> str:
    """The classic form; ``action`` is where it posts (the mount point + ``/form``)."""
    inputs = "\n".join(
        f"  <p><label>{name.replace('_', ' ').capitalize()} "
        f'<input name="{name}" type="{"email" if name == "email" else "text"}" '
        f'maxlength="{FIELD_MAX_CHARS}" required></label></p>'
        for name in FORM_FIELDS
    )
    content = (
        "<h1>Breakfast club</h1>\n"
        f'<form method="post" action="{html.escape(action, quote=True)}">\n'
        f"{inputs}\n"
        '  <p><button type="submit">Sign up</button></p>\n'
        "</form>"
    )
    return _PAGE.format(title="Breakfast club", content=content)


def thank_you_page(person: Mapping[str, str], form_url: str) -> str:
    """The 200 answer to a good POST /form; everything the person typed is escaped."""
    first, last = html.escape(person["first_name"]), html.escape(person["last_name"])
    content = (
        f"<h1>Thank you, {first} {last}!</h1>\n"
        f"<p>We will write to {html.escape(person['email'])}.</p>\n"
        f'<p><a href="{html.escape(form_url, quote=True)}">Sign up someone else</a></p>'
    )
    return _PAGE.format(title="Thank you", content=content)


def parse_form(content_type: str, body: bytes) -> dict[str, list[str]]:
    """Form fields from a urlencoded or multipart body; anything else is a 415."""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        # HTML's urlencoded serializer: name=value pairs joined by "&", UTF-8, percent-escaped.
        text = body.decode("utf-8", errors="replace")
        fields: dict[str, list[str]] = {}
        try:
            pairs = urllib.parse.parse_qsl(
                text, keep_blank_values=True, max_num_fields=FORM_MAX_FIELDS
            )
        except ValueError:
            raise HTTPError(400, f"too many form fields (at most {FORM_MAX_FIELDS})") from None
        for name, value in pairs:
            fields.setdefault(name, []).append(value)
        return fields
    if media_type == "multipart/form-data":
        return _parse_multipart(content_type, body)
    raise HTTPError(
        415,
        "POST /form takes application/x-www-form-urlencoded or multipart/form-data, "
        f"not {media_type or 'a body without Content-Type'!r}",
    )


def _parse_multipart(content_type: str, body: bytes) -> dict[str, list[str]]:
    # RFC 7578 §4: multipart/form-data is a MIME multipart body; the email package
    # parses MIME, so hand it the Content-Type header followed by the body.
    # Imported here, not at the top: the email package takes longer to import than
    # the rest of the app together, and a CGI script pays imports on every request.
    import email.policy
    from email.parser import BytesParser

    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", errors="replace")
    parser = BytesParser(policy=email.policy.HTTP)
    boundary = parser.parsebytes(head, headersonly=True).get_boundary()
    if not boundary:
        raise HTTPError(400, "multipart/form-data without a boundary parameter")
    # RFC 2046 §5.1.1: every part begins with "--" + boundary (the last one is
    # followed by "--" once more), and the boundary never occurs inside a part.
    # So this count bounds the parts from above, at the cost of one bytes.count.
    parts = body.count(b"--" + boundary.encode("latin-1", errors="replace")) - 1
    if parts > FORM_MAX_FIELDS:
        raise HTTPError(400, f"too many form fields: {parts} parts (at most {FORM_MAX_FIELDS})")
    try:
        message = parser.parsebytes(head + body)
    except (LookupError, UnicodeError):  # see _form_part: an RFC 2231 charset in a part header
        raise HTTPError(400, "a part's header uses a charset that cannot decode text") from None
    if not message.is_multipart():
        raise HTTPError(400, "multipart/form-data body has no boundary or no parts")
    fields: dict[str, list[str]] = {}
    for number, part in enumerate(message.iter_parts(), start=1):
        name, value = _form_part(number, part)
        if name:
            fields.setdefault(name, []).append(value)
    return fields


def _form_part(number: int, part: MIMEPart) -> tuple[str, str]:
    """One multipart part as (name, text); ("", "") for a part without a name.

    Decoding is where a hostile part bites: a charset Python knows but cannot
    decode with. LookupError: a charset Python does not know, or a codec that is
    not a text encoding (base64, rot13, zlib). UnicodeError: one that cannot
    decode with errors="replace" (idna, punycode, undefined), in the value or in
    an RFC 2231 parameter (``name*=idna''...``). Either is a 400 naming the part.
    """
    try:
        # RFC 7578 §4.2: each part has 'Content-Disposition: form-data; name="..."'.
        disposition = part.get("content-disposition")
        name = str(disposition.params.get("name") or "") if disposition is not None else ""
        # RFC 7578 §4.4: a part's text is in the charset its Content-Type names.
        charset = part.get_content_charset() or "utf-8"
    except (LookupError, UnicodeError):
        raise HTTPError(
            400, f"part {number} has a header in a charset that cannot decode text"
        ) from None
    if not name:
        return "", ""
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    try:
        return name, data.decode(charset, errors="replace")
    except (LookupError, UnicodeError):
        raise HTTPError(
            400, f"part {number} ({name!r}) has charset {charset!r}, which cannot decode text"
        ) from None


def validate_form(fields: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """The three fields, stripped and checked; the first bad one is a 400 naming it."""
    person: dict[str, str] = {}
    for name in FORM_FIELDS:
        values = list(fields.get(name, ()))
        if not values:
            raise HTTPError(400, f"{name} is missing", field=name)
        if len(values) > 1:
            raise HTTPError(400, f"{name} must be given once", field=name)
        value = values[0].strip()
        if not value:
            raise HTTPError(400, f"{name} is empty", field=name)
        if len(value) > FIELD_MAX_CHARS:
            raise HTTPError(400, f"{name} is longer than {FIELD_MAX_CHARS} characters", field=name)
        if _CONTROL.search(value):
            raise HTTPError(400, f"{name} contains control characters", field=name)
        if name == "email" and _EMAIL.fullmatch(value) is None:
            raise HTTPError(400, f"email does not look like an address: {value!r}", field=name)
        person[name] = value
    return person


def check_body_size(size: int | None, limit: int) -> None:
    """413 when a body (declared or read so far) is bigger than ``limit`` bytes."""
    if size is not None and size > limit:
        raise HTTPError(413, f"the body is larger than {limit} bytes (got {size} or more)")
