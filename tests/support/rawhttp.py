"""Replay raw bytes at a server and read back what it answered, parsed by h11.

The request side is deliberately raw: hostile cases are bytes no HTTP client
library would send. The response side is parsed by a real HTTP/1.1 parser (h11,
as a client), never by hand: each answer becomes a ``RawResponse``, and bytes
that are not a valid response are reported as ``protocol_error``.

Also here: the loader for the case files in ``tests/integration/raw/``
(``load_case``), in the spirit of gunicorn's ``tests/requests/{valid,invalid}``:
``NNN-name.http`` holds the request bytes, ``NNN-name.json`` what must happen.

``.http`` format: real line breaks in the file are ignored (they only keep it
readable); the bytes on the wire are written as escapes: ``\\r``, ``\\n``,
``\\t``, ``\\0``, ``\\xHH``, ``\\\\``. Placeholders: ``{prefix}`` (the mount
point the endpoint is reached under, "" directly at a gateway), ``{host}``
(host:port of the endpoint), ``{marker}`` (the path of any hidden request) and
``{big:N}`` (N bytes of "a").
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import h11

MARKER: Final = "/__smuggled__"
CASES_DIR: Final = Path(__file__).resolve().parents[1] / "integration" / "raw"
# After the expected answers, how long to keep listening for one more: a hidden
# request that was parsed as a request of its own is answered at once.
GRACE_S: Final = 0.4

_ESCAPE_RE: Final = re.compile(rb"\\(x[0-9a-fA-F]{2}|[rnt0\\])")
_SIMPLE_ESCAPES: Final = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0", b"\\": b"\\"}
_BIG_RE: Final = re.compile(rb"\{big:(\d+)\}")


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names; repeated ones comma-joined
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RawResult:
    """What came back on one connection."""

    responses: list[RawResponse] = field(default_factory=list)
    closed: bool = False  # the server closed the connection
    timed_out: bool = False  # the deadline passed with no complete answer and no close
    protocol_error: str | None = None  # bytes h11 could not parse as a response
    waited: bool = False  # silent until the client half-closed (see ``exchange``)
    elapsed_s: float = 0.0

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    def outcome(self) -> str:
        """A short word for tables: "400", "400+close", "close", "hang", "200,404", ..."""
        if self.timed_out and not self.responses:
            return "hang"
        parts = ",".join(str(s) for s in self.statuses) or "close"
        if self.protocol_error:
            parts += "+garbage"
        elif self.responses and self.closed:
            parts += "+close"
        return f"wait:{parts}" if self.waited else parts


def decode_escapes(text: bytes) -> bytes:
    r"""File text to wire bytes: drop real line breaks, then decode \r \n \t \0 \xHH \\."""
    joined = text.replace(b"\r", b"").replace(b"\n", b"")

    def one(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        if code.startswith(b"x"):
            return bytes([int(code[1:], 16)])
        return _SIMPLE_ESCAPES[code]

    return _ESCAPE_RE.sub(one, joined)


def render(template: bytes, *, prefix: str, host: str) -> bytes:
    """A case's wire bytes for one endpoint (placeholders filled, escapes decoded)."""
    data = _BIG_RE.sub(lambda m: b"a" * int(m.group(1)), template)
    for name, value in (("prefix", prefix), ("host", host), ("marker", MARKER)):
        data = data.replace(b"{" + name.encode() + b"}", value.encode())
    return decode_escapes(data)


@dataclass(frozen=True)
class Case:
    """One raw request file and its expectation (``NNN-name.json``).

    expect: "reject": a 4xx (or one of ``allow``) or a close with no answer; never
              a 2xx/3xx. "any": a valid reading of the RFC may accept it (bare LF
              line ends, say); it still must not be a 5xx, hang or smuggle.
    answers: how many responses a server that reads it as intended sends at most
             (1 for one visible request; the hidden request must not add one).
    """

    name: str
    category: str
    template: bytes
    expect: str
    rfc: str
    allow: tuple[int, ...] = ()
    answers: int = 1
    # The message is incomplete under some reading (a huge chunk size, a line end
    # the server does not accept): waiting for more bytes is then correct, as
    # long as the server answers or closes once the client half-closes.
    may_wait: bool = False

    def wire(self, prefix: str, host: str) -> bytes:
        return render(self.template, prefix=prefix, host=host)


def load_case(path: Path) -> Case:
    spec = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    return Case(
        name=path.stem,
        category=spec["category"],
        template=path.read_bytes(),
        expect=spec["expect"],
        rfc=spec["rfc"],
        allow=tuple(spec.get("allow", ())),
        answers=spec.get("answers", 1),
        may_wait=spec.get("may_wait", False),
    )


def load_cases(directory: Path = CASES_DIR) -> list[Case]:
    cases = [load_case(p) for p in sorted(directory.glob("*.http"))]
    # An empty glob would turn the whole corpus into one silent skip.
    if len(cases) < 50:
        raise RuntimeError(f"only {len(cases)} raw cases in {directory}: expected at least 50")
    return cases


class _ResponseReader:
    """h11 as a client: one synthetic request per expected answer, so it frames each response.

    The bytes actually sent are the raw ones; h11 only needs to know a request
    (and its method: a HEAD answer has no body) went out before each answer.
    """

    def __init__(self, method: str) -> None:
        self.method = method
        self.conn = h11.Connection(our_role=h11.CLIENT)
        self.responses: list[RawResponse] = []
        self.error: str | None = None
        self.received = 0
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._announce()

    def _announce(self) -> None:
        self.conn.send(h11.Request(method=self.method, target="/", headers=[("Host", "raw")]))
        self.conn.send(h11.EndOfMessage())

    def feed(self, data: bytes) -> None:
        """Give bytes (b"" at EOF) to h11 and collect every complete response."""
        if self.error is not None:
            return
        if not data and not self.received:
            return  # closed without a byte: a clean close, not a broken response
        self.received += len(data)
        try:
            self.conn.receive_data(data)
            self._drain()
        except h11.RemoteProtocolError as exc:
            self.error = f"{exc} (after {len(self.responses)} responses)"

    def _drain(self) -> None:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if event is h11.PAUSED and self.conn.their_state is h11.DONE:
                    self._next_cycle()
                    continue
                return
            if isinstance(event, h11.Response):
                self._status = event.status_code
                self._headers = {}
                for name, value in event.headers:
                    key = name.decode("latin-1").lower()
                    text = value.decode("latin-1")
                    self._headers[key] = (
                        f"{self._headers[key]}, {text}" if key in self._headers else text
                    )
                self._body = bytearray()
            elif isinstance(event, h11.Data):
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.responses.append(RawResponse(self._status, self._headers, bytes(self._body)))
            elif isinstance(event, h11.ConnectionClosed):
                return
            # h11.InformationalResponse (100 Continue): not a final answer; skipped.

    def _next_cycle(self) -> None:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            self._announce()

    @property
    def must_close(self) -> bool:
        return self.conn.their_state in (h11.MUST_CLOSE, h11.CLOSED)


def exchange(
    host: str,
    port: int,
    data: bytes,
    *,
    deadline_s: float = 5.0,
    expect_answers: int = 1,
    grace_s: float = GRACE_S,
    method: str = "GET",
    patience_s: float | None = None,
    connect: Callable[[float], socket.socket] | None = None,
) -> RawResult:
    """Send ``data`` on a fresh connection and read what comes back.

    ``connect(timeout)`` opens the connection (tests.support.endpoints: a relay
    under Docker); by default a TCP connection to host:port.

    Reads until the server closes, or the deadline passes, or ``expect_answers``
    responses have arrived and ``grace_s`` more passed with nothing else (a
    keep-alive connection left open is not a hang).

    ``patience_s``: when nothing at all has come back by then, the server may
    be waiting for bytes it believes were promised (a chunk size it read as
    huge, a line end it does not recognise). The client then says it has sent
    everything (a half close, SHUT_WR) and the server gets until the deadline
    to answer or close; ``waited`` records that this happened. A server that
    stays silent even then has hung.
    """
    result = RawResult()
    reader = _ResponseReader(method)
    started = time.monotonic()
    end = started + deadline_s
    opened = connect(deadline_s) if connect else socket.create_connection((host, port), deadline_s)
    with opened as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may reject and close before it has read everything
        settle_at: float | None = None
        nudge_at = started + patience_s if patience_s is not None else None
        while True:
            now = time.monotonic()
            if len(reader.responses) >= expect_answers and settle_at is None:
                settle_at = now + grace_s
            if nudge_at is not None and now >= nudge_at and not reader.responses:
                nudge_at = None
                result.waited = True
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
            limits = [end, settle_at, nudge_at if not reader.responses else None]
            limit = min(t for t in limits if t is not None)
            if now >= limit:
                if now >= end or (settle_at is not None and now >= settle_at):
                    result.timed_out = settle_at is None
                    break
                continue
            sock.settimeout(limit - now)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            reader.feed(chunk)
            if not chunk:
                result.closed = True
                break
    result.responses = reader.responses
    result.protocol_error = reader.error
    result.elapsed_s = time.monotonic() - started
    return result


def get(
    host: str, port: int, target: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> RawResult:
    """A plain, well-formed GET (Connection: close), through the same reader."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return exchange(host, port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), **kwargs)
