"""Is a gateway ready? Ask its /healthz in the protocol it speaks.

Two of the servers speak no HTTP (gateway/servers/registry.py): nginx reaches
fcgiwrap over FastCGI and the uwsgi server over the uwsgi protocol. A health
check (the lab's, compose's) asks them in their own protocol, the same request
nginx would send for ``GET /healthz``. Building the request and reading the
status line are pure functions; ``probe`` does the I/O.

- FastCGI 1.0 (the FastCGI specification, §3.3 records, §3.4 name-value pairs,
  §5.1 FCGI_BEGIN_REQUEST): BEGIN_REQUEST for the Responder role, the PARAMS
  stream, an empty STDIN; the answer's STDOUT carries the CGI response.
- uwsgi (uWSGI's "The uwsgi protocol" page): a 4-byte header (modifier1 0 for
  a WSGI request, the size of the variables, modifier2 0), then the variables
  as 16-bit little-endian length-prefixed strings; the answer is HTTP/1.x.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Mapping
from typing import Final

FCGI_VERSION_1: Final = 1
FCGI_BEGIN_REQUEST: Final = 1
FCGI_END_REQUEST: Final = 3
FCGI_PARAMS: Final = 4
FCGI_STDIN: Final = 5
FCGI_STDOUT: Final = 6
FCGI_RESPONDER: Final = 1
REQUEST_ID: Final = 1
MAX_ANSWER: Final = 1 << 16

_HTTP_STATUS_RE: Final = re.compile(rb"HTTP/1\.[01] ([0-9]{3})")
_CGI_STATUS_RE: Final = re.compile(rb"(?im)^Status:[ \t]*([0-9]{3})")


def health_params(path: str, script: str | None = None) -> dict[str, str]:
    """The CGI-style variables of ``GET path``, as nginx sends them (fastcgi/uwsgi_params)."""
    params = {
        "REQUEST_METHOD": "GET",
        "REQUEST_URI": path,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_NAME": "healthcheck",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "healthcheck",
    }
    if script is not None:
        params["SCRIPT_FILENAME"] = script
    return params


def fcgi_record(kind: int, content: bytes) -> bytes:
    """One FastCGI record (§3.3): version, type, request id, length, padding 0, reserved."""
    if len(content) > 0xFFFF:
        raise ValueError("a FastCGI record holds at most 65535 bytes")
    return struct.pack("!BBHHBx", FCGI_VERSION_1, kind, REQUEST_ID, len(content), 0) + content


def _fcgi_length(n: int) -> bytes:
    # §3.4: lengths below 128 take one byte; others four, with the top bit set.
    return bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)


def fastcgi_request(params: Mapping[str, str]) -> bytes:
    """A whole Responder request with no body (§5.1, §3.4)."""
    pairs = b""
    for name, value in params.items():
        k, v = name.encode("latin-1"), value.encode("latin-1")
        pairs += _fcgi_length(len(k)) + _fcgi_length(len(v)) + k + v
    begin = struct.pack("!HB5x", FCGI_RESPONDER, 0)  # flags 0: close when done
    return b"".join(
        [
            fcgi_record(FCGI_BEGIN_REQUEST, begin),
            fcgi_record(FCGI_PARAMS, pairs),
            fcgi_record(FCGI_PARAMS, b""),
            fcgi_record(FCGI_STDIN, b""),
        ]
    )


def fastcgi_stdout(answer: bytes) -> bytes:
    """The STDOUT stream of a FastCGI answer (the records in order; others skipped)."""
    out, pos = b"", 0
    while pos + 8 <= len(answer):
        _, kind, _, length, padding = struct.unpack("!BBHHBx", answer[pos : pos + 8])
        body = answer[pos + 8 : pos + 8 + length]
        pos += 8 + length + padding
        if kind == FCGI_STDOUT:
            out += body
    return out


def uwsgi_request(params: Mapping[str, str]) -> bytes:
    """A uwsgi packet: modifier1 0, the size of the variables (16-bit LE), modifier2 0."""
    block = b""
    for name, value in params.items():
        k, v = name.encode("latin-1"), value.encode("latin-1")
        block += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    if len(block) > 0xFFFF:
        raise ValueError("uwsgi variables hold at most 65535 bytes")
    return struct.pack("<BHB", 0, len(block), 0) + block


def answer_status(wire: str, answer: bytes) -> int | None:
    """The status code of an answer in ``wire``'s framing; None when there is none."""
    if wire == "fastcgi":
        # A CGI response without Status: is a 200 (RFC 3875 §6.3.3) once it has a header block.
        out = fastcgi_stdout(answer)
        if b"\n\n" not in out.replace(b"\r\n", b"\n"):
            return None
        head = out.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
        match = _CGI_STATUS_RE.search(head)
        return int(match.group(1)) if match else 200
    match = _HTTP_STATUS_RE.match(answer)
    return int(match.group(1)) if match else None


def health_request(wire: str, script: str | None = None) -> bytes:
    params = health_params("/healthz", script)
    if wire == "fastcgi":
        return fastcgi_request(params)
    if wire == "uwsgi":
        return uwsgi_request(params)
    return b"GET /healthz HTTP/1.0\r\nHost: healthcheck\r\n\r\n"


def probe(host: str, port: int, wire: str, script: str | None = None, timeout: float = 2.0) -> bool:
    """True when the gateway at host:port answers /healthz with 200 in ``wire``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(health_request(wire, script))
            answer = b""
            while len(answer) < MAX_ANSWER and (chunk := sock.recv(4096)):
                answer += chunk
    except OSError:
        return False
    return answer_status(wire, answer) == 200
