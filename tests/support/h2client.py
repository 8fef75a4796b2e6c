"""A small HTTP/2 client over TLS for the tests: the ``h2`` library speaks the
protocol (framing, HPACK, flow control); this file only moves bytes between it
and a TLS socket and collects what came back per stream.

It lets a test put many requests on ONE connection at once (multiplexing),
and misbehave on purpose where a test needs it: open more streams than the
server allows, reset streams right after opening them, send a header block
larger than the server accepts. Requests sent before the server's SETTINGS
frame has been read are not held back by h2 (RFC 9113 §6.5.3: the sender may
not know the new limits yet), which is how such a client gets past them.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

Headers = list[tuple[str, str]]


@dataclass
class Stream:
    """What came back on one stream: a response, a reset, or nothing yet."""

    stream_id: int
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None  # the server's RST_STREAM error code

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def json(self) -> object:
        import json

        return json.loads(self.body)


@dataclass
class GoAway:
    error_code: int
    last_stream_id: int


class H2Client:
    """One TLS connection offering only h2 by ALPN, verified against ``ca_file``."""

    def __init__(self, tls_url: str, ca_file: str, timeout: float = 30.0) -> None:
        parts = urlsplit(tls_url)
        assert parts.hostname and parts.port, tls_url
        self.authority = f"{parts.hostname}:{parts.port}"
        context = ssl.create_default_context(cafile=ca_file)
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname=parts.hostname)
        self.alpn = self.sock.selected_alpn_protocol()
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        self.streams: dict[int, Stream] = {}
        self.goaway: GoAway | None = None
        self.closed = False
        self.pending = b""  # bytes read but not yet a whole frame
        self.remote_settings: dict[int, int] = {}
        self.timeout = timeout

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- sending ---------------------------------------------------------------------

    def request(
        self,
        path: str,
        method: str = "GET",
        headers: Iterable[tuple[str, str]] = (),
        end_stream: bool = True,
        send: bool = True,
    ) -> int:
        """Open a stream with one request; returns its id. ``end_stream=False``
        leaves the request body unsent (the stream stays open on the server)."""
        stream_id = self.conn.get_next_available_stream_id()
        request: Headers = [
            (":method", method),
            (":scheme", "https"),
            (":authority", self.authority),
            (":path", path),
            *headers,
        ]
        self.conn.send_headers(stream_id, request, end_stream=end_stream)
        self.streams[stream_id] = Stream(stream_id)
        if send:
            self.flush()
        return stream_id

    def reset(self, stream_id: int, send: bool = True) -> None:
        self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        if send:
            self.flush()

    def flush(self) -> None:
        if data := self.conn.data_to_send():
            self.sock.sendall(data)

    # -- receiving -------------------------------------------------------------------

    def wait(self, stream_ids: Iterable[int] | None = None, timeout: float | None = None) -> None:
        """Read until every stream in ``stream_ids`` (default: all) is done, the
        server ends the connection (GOAWAY or close), or ``timeout`` passes."""
        wanted = list(self.streams) if stream_ids is None else list(stream_ids)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not all(self.streams[s].done for s in wanted) and not self.closed:
            if self.goaway is not None and all(
                self.streams[s].done for s in wanted if s <= self.goaway.last_stream_id
            ):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.read_once(left)

    def settle(self, seconds: float) -> None:
        """Read whatever arrives within ``seconds`` (for answers a test expects NOT to come)."""
        deadline = time.monotonic() + seconds
        while not self.closed and (left := deadline - time.monotonic()) > 0:
            self.read_once(left)

    def read_once(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except (ConnectionResetError, ssl.SSLError):
            self.closed = True
            return
        if not data:
            self.closed = True
            return
        self.pending += data
        # One frame at a time into h2 (RFC 9113 §4.1: a 9-octet header whose
        # first 3 octets are the payload length), so a GOAWAY is seen before
        # the frames behind it: after a GOAWAY the server may still finish the
        # streams it took (§6.8), and h2's state machine, closed by then,
        # refuses their frames with a ProtocolError.
        while len(self.pending) >= 9:
            size = 9 + int.from_bytes(self.pending[:3], "big")
            if len(self.pending) < size:
                break
            frame, self.pending = self.pending[:size], self.pending[size:]
            try:
                events = self.conn.receive_data(frame)
            except h2.exceptions.ProtocolError:
                if self.goaway is None:
                    raise
                self.closed = True
                return
            for event in events:
                self._on(event)
        self.flush()

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams[event.stream_id]
            stream.headers = {str(k): str(v) for k, v in event.headers or []}
            stream.status = int(stream.headers.pop(":status"))
        elif isinstance(event, h2.events.DataReceived):
            self.streams[event.stream_id].body += event.data or b""
            # Give the window back at once, so large answers keep flowing.
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            if event.stream_id in self.streams:
                self.streams[event.stream_id].reset = int(event.error_code or 0)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = GoAway(int(event.error_code or 0), int(event.last_stream_id or 0))
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                self.remote_settings[int(code)] = change.new_value

    # -- convenience ---------------------------------------------------------------------

    def get(self, path: str, headers: Iterable[tuple[str, str]] = ()) -> Stream:
        stream_id = self.request(path, headers=headers)
        self.wait([stream_id])
        return self.streams[stream_id]

    def get_many(self, paths: Iterable[str]) -> list[Stream]:
        """Every path as its own stream, all sent in one write, then every answer."""
        ids = [self.request(p, send=False) for p in paths]
        self.flush()
        self.wait(ids)
        return [self.streams[i] for i in ids]


MAX_CONCURRENT_STREAMS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
REFUSED_STREAM = h2.errors.ErrorCodes.REFUSED_STREAM
ENHANCE_YOUR_CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
