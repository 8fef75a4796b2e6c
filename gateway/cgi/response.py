"""RFC 3875 §6: a CGI script's output as a response the gateway can send.

Pure: bytes in, ``CGIResponse`` (or ``CGIResponseError``) out.

Rules, in the order they are applied:

Rule 1 (§6.1, §6.3): the output starts with a header block that ends at the
  first empty line. "NL" may be LF or CR LF; both are accepted, mixed too.
  Output that ends before the empty line is an error, and so is a header block
  longer than ``max_header_bytes`` with no end in sight.
Rule 2 (§6.3): every header line is ``field-name ":" [ field-value ]``. The name
  is an HTTP token; the value may not hold control characters other than TAB.
  Continuation lines (obsolete line folding, RFC 9112 §5.2) are errors.
Rule 3 (§6.3): at least one CGI field (Content-Type, Location, Status) must be
  present, and none of them twice.
Rule 4 (§6.3.3): Status is "NNN reason": three digits, 200..599 (the response
  is final), then an optional reason phrase (a missing one is filled in).
Rule 5 (§6.2.2): a Location that is a local path ("/..." but not "//...") with
  no other field and no body is a local redirect: the server serves that path
  instead, as if it had been requested.
Rule 6 (§6.2.3): a Location that is an absolute URI with no Status is a client
  redirect: 302 Found, with no Content-Type and no body.
Rule 7 (§6.2.4): a Location with a Status is sent to the client as the script
  wrote it (a client redirect with a document). A local path is accepted here
  too, because HTTP allows relative references in Location (RFC 9110 §10.2.2).
Rule 8 (§6.3.1): "If an entity body is returned, the script MUST supply a
  Content-Type field": a body without one is an error.
Rule 9 (§6.2.1): otherwise it is a document response; the Status defaults to
  200 OK.
Rule 10 (RFC 9110 §7.6.1): hop-by-hop headers describe a connection the script
  does not own; they are dropped from the response.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from gateway import errors

MAX_HEADER_BYTES: Final = 64 * 1024

ResponseKind = Literal["document", "local-redirect", "client-redirect", "client-redirect-doc"]

# RFC 9110 §7.6.1 hop-by-hop fields, and the non-standard ones seen in the wild.
HOP_BY_HOP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN_RE: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: field-value characters: visible, SP, HTAB, obs-text.
_VALUE_RE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
# RFC 3875 §6.3.3: Status = "Status:" status-code SP reason-phrase NL.
_STATUS_RE: Final = re.compile(r"([0-9]{3})(?:[ \t]+(.*))?")
# RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then ":".
_ABSOLUTE_URI_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_LINE_END_RE: Final = re.compile(rb"\r?\n")
_BLANK_LINE_RE: Final = re.compile(rb"(?:\r?\n){2}|^\r?\n")


class CGIResponseError(ValueError):
    """Script output that is not a valid CGI response (the bridge answers 502)."""


@dataclass(frozen=True)
class CGIResponseHead:
    """The header block of a CGI response, read and classified."""

    status: int
    reason: str
    headers: list[tuple[str, str]]  # Status removed, hop-by-hop removed, order kept
    kind: ResponseKind
    location: str | None = None

    @property
    def status_line(self) -> str:
        return f"{self.status} {self.reason}"

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)


@dataclass(frozen=True)
class CGIResponse(CGIResponseHead):
    body: bytes = b""


def find_header_end(data: bytes, max_header_bytes: int = MAX_HEADER_BYTES) -> int | None:
    """Offset of the first body byte once the header block is complete, else None.

    Rule 1: a block that has not ended within ``max_header_bytes`` is an error,
    so a caller can feed a growing prefix of a stream.
    """
    match = _BLANK_LINE_RE.search(data, 0, max_header_bytes + 4)
    if match is not None and match.start() <= max_header_bytes:
        return match.end()
    if len(data) > max_header_bytes:
        raise CGIResponseError(f"header block longer than {max_header_bytes} bytes")
    return None


def _parse_fields(block: bytes) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    for raw in _LINE_END_RE.split(block):
        if not raw:
            continue
        if raw[:1] in (b" ", b"\t"):
            # Rule 2: obs-fold (RFC 9112 §5.2) is not accepted.
            raise CGIResponseError("header line folding is not allowed")
        name, sep, value = raw.partition(b":")
        if not sep or not _TOKEN_RE.fullmatch(name):
            # Rule 2: RFC 3875 §6.3: generic-field = field-name ":" [ field-value ].
            raise CGIResponseError(f"malformed header line {raw[:80]!r}")
        value = value.strip(b" \t")
        if not _VALUE_RE.fullmatch(value):
            raise CGIResponseError(f"control character in header {name.decode()!r}")
        fields.append((name.decode("ascii"), value.decode("latin-1")))
    return fields


def _status(value: str) -> tuple[int, str]:
    # Rule 4: RFC 3875 §6.3.3: status-code = "200" | "302" | "400" | "501" | extension-code;
    # extension-code = 3digit.
    match = _STATUS_RE.fullmatch(value)
    if match is None:
        raise CGIResponseError(f"Status must be three digits and a reason, not {value!r}")
    code = int(match.group(1))
    if not 200 <= code <= 599:
        raise CGIResponseError(f"Status {code} is not a final status (200..599)")
    # A missing reason phrase: the lab's own (gateway.errors).
    return code, (match.group(2) or "").strip() or errors.reason(code)


def _is_local_path(location: str) -> bool:
    # RFC 3875 §6.2.2: local-pathquery = abs-path [ "?" query-string ];
    # "//host/..." is a network-path reference, not a local one.
    return location.startswith("/") and not location.startswith("//")


def parse_cgi_head(block: bytes, *, has_body: bool) -> CGIResponseHead:
    """Classify a complete header block (Rules 2-10).

    ``has_body``: whether any byte follows the header block. With a streamed
    body, pass True when a body may follow.
    """
    fields = _parse_fields(block)
    cgi: dict[str, str] = {}
    others: list[tuple[str, str]] = []
    for name, value in fields:
        lower = name.lower()
        if lower in ("content-type", "location", "status"):
            if lower in cgi:
                # Rule 3: one value per CGI field.
                raise CGIResponseError(f"{name} given twice")
            cgi[lower] = value
        if lower in HOP_BY_HOP_HEADERS or lower == "status":
            continue  # Rule 10; Status becomes the status line, not a header.
        others.append((name, value))
    if not cgi:
        # Rule 3: RFC 3875 §6.3: at least one CGI field is required.
        raise CGIResponseError("no Content-Type, Location or Status header")

    status = _status(cgi["status"]) if "status" in cgi else None
    location = cgi.get("location")
    if location is not None and status is None:
        if _is_local_path(location):
            # Rule 5: RFC 3875 §6.2.2: "The script MUST NOT return any other
            # header fields or a message-body".
            if len(fields) != 1 or has_body:
                raise CGIResponseError("a local redirect must have no other header and no body")
            return CGIResponseHead(0, "", [], "local-redirect", location)
        if not _ABSOLUTE_URI_RE.fullmatch(location):
            raise CGIResponseError(f"Location is not a local path or an absolute URI: {location!r}")
        # Rule 6: RFC 3875 §6.2.3: "The server MUST generate a 302 'Found' HTTP response".
        if "content-type" in cgi or has_body:
            # RFC 3875 §6.2.4: a redirect with a document MUST supply a Status.
            raise CGIResponseError("a redirect with a document needs a Status header")
        return CGIResponseHead(302, "Found", others, "client-redirect", location)

    if has_body and "content-type" not in cgi:
        # Rule 8: RFC 3875 §6.3.1.
        raise CGIResponseError("a body without a Content-Type header")
    code, reason = status or (200, "OK")  # Rule 9: RFC 3875 §6.2.1.
    if location is not None:
        # Rule 7: RFC 3875 §6.2.4 client-redirdoc-response.
        return CGIResponseHead(code, reason, others, "client-redirect-doc", location)
    return CGIResponseHead(code, reason, others, "document")


def parse_cgi_response(data: bytes, *, max_header_bytes: int = MAX_HEADER_BYTES) -> CGIResponse:
    """A script's complete output as a CGIResponse (Rules 1-10)."""
    end = find_header_end(data, max_header_bytes)
    if end is None:
        raise CGIResponseError("output ended before the blank line that ends the headers")
    head = parse_cgi_head(data[:end], has_body=end < len(data))
    return CGIResponse(
        head.status, head.reason, head.headers, head.kind, head.location, body=data[end:]
    )
