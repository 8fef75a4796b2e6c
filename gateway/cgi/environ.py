"""RFC 3875 §4.1: a request, described front-neutrally, as CGI meta-variables.

Pure: no I/O. ``CGIRequest`` is what any HTTP front (the WSGI bridge today)
knows about a request; ``build_meta_variables`` turns it into the environment
the script is started with.

Strings are PEP 3333 "native strings": one character per byte of the request
(ISO-8859-1), exactly what gunicorn puts in a WSGI environ. The runner encodes
them back to those bytes for the script's environment, so a UTF-8 path reaches
the script as the UTF-8 bytes the client sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from gateway import __version__

GATEWAY_INTERFACE: Final = "CGI/1.1"
SERVER_SOFTWARE: Final = f"gateway-lab/{__version__}"

# Request headers that never become HTTP_* meta-variables (lower-case names).
DROPPED_HEADERS: Final = frozenset(
    {
        # httpoxy (httpoxy.org): HTTP_PROXY would be read as proxy settings by
        # the HTTP client libraries a script uses.
        "proxy",
        # RFC 3875 §4.1.18: the server "SHOULD remove any header fields
        # carrying authentication information, such as 'Authorization';
        "authorization",
        "proxy-authorization",
        # or that are available to the script in other variables, such as
        # 'Content-Length' and 'Content-Type'."
        "content-length",
        "content-type",
        # §4.1.18: "The server MAY remove header fields that relate solely to
        # client-side communication issues, such as 'Connection'": the
        # hop-by-hop fields (RFC 9110 §7.6.1).
        "connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
    }
)


# Linux refuses to exec with an environment string ("NAME=value" and its NUL)
# longer than MAX_ARG_STRLEN, 32 pages (execve(2), "Limits on size of
# arguments and environment"): one header repeated until its joined value is
# that long would fail the spawn with E2BIG.
MAX_ENVIRONMENT_STRING: Final = 32 * 4096


def oversized_variables(meta: dict[str, str]) -> str | None:
    """The names of meta-variables too long for one environment string, or None."""
    names = [k for k, v in meta.items() if len(k) + len(v) + 2 > MAX_ENVIRONMENT_STRING]
    return ", ".join(names) or None


class CGIRequestError(ValueError):
    """A request value that cannot be passed to a script (the bridge answers 400)."""


@dataclass(frozen=True)
class CGIRequest:
    method: str
    script_name: str  # the mount point, "" at the root
    path_info: str  # the rest of the path, percent-decoded, "" or starting with "/"
    query_string: str  # raw, still percent-encoded, "" when none
    headers: list[tuple[str, str]]  # as received, Content-Type included
    remote_addr: str
    remote_port: int | None
    server_name: str
    server_port: int
    server_protocol: str  # "HTTP/1.1"
    scheme: str  # "http" or "https"
    content_length: int | None  # None: the request has no body


def header_variable(name: str) -> str | None:
    """The HTTP_* name for a request header, or None when it is dropped.

    RFC 3875 §4.1.18: "The meta-variable name is formed by converting the
    header field name to upper case, replacing all occurrences of "-" with "_"
    and prepending "HTTP_"." Names with "_" are dropped: "X-Foo_Bar" and
    "X-Foo-Bar" would both become HTTP_X_FOO_BAR, and the one that wins would
    depend on order (werkzeug and nginx drop them too).
    """
    lower = name.lower()
    if "_" in name or lower in DROPPED_HEADERS:
        return None
    return "HTTP_" + name.upper().replace("-", "_")


def header_variables(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """RFC 3875 §4.1.18 protocol-specific meta-variables from the request headers."""
    out: dict[str, str] = {}
    for name, value in headers:
        key = header_variable(name)
        if key is None:
            continue
        # §4.1.18: "If multiple header fields with the same field-name are
        # received then the server MUST rewrite them as a single value having
        # the same semantics" -- a comma-separated list (RFC 9110 §5.3).
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in headers if k.lower() == name]
    return ", ".join(values) if values else None


def build_meta_variables(req: CGIRequest) -> dict[str, str]:
    """Every RFC 3875 §4.1 meta-variable this gateway provides for ``req``."""
    meta: dict[str, str] = {
        # RFC 3875 §4.1.1: the gateway authenticates nobody, so AUTH_TYPE is NULL.
        "AUTH_TYPE": "",
        # RFC 3875 §4.1.4: "the dialect of CGI being used by the server".
        "GATEWAY_INTERFACE": GATEWAY_INTERFACE,
        # RFC 3875 §4.1.5: the path after the script's own part, decoded.
        "PATH_INFO": req.path_info,
        # RFC 3875 §4.1.6: PATH_TRANSLATED is omitted: the script is not mapped
        # from a document tree, so there is no "local URI" to translate into.
        # RFC 3875 §4.1.7: "The server MUST set this variable; if the
        # Script-URI does not include a query component, the QUERY_STRING MUST
        # be defined as an empty string". Passed raw, still URL-encoded.
        "QUERY_STRING": req.query_string,
        # RFC 3875 §4.1.8: "the network address of the client sending the request".
        "REMOTE_ADDR": req.remote_addr,
        # RFC 3875 §4.1.9: no reverse lookup; "the server MAY substitute the
        # REMOTE_ADDR value".
        "REMOTE_HOST": req.remote_addr,
        # RFC 3875 §4.1.10/§4.1.11: REMOTE_IDENT and REMOTE_USER are left unset
        # (no ident lookup, no authentication).
        # RFC 3875 §4.1.12: "the method which should be used by the script".
        "REQUEST_METHOD": req.method,
        # RFC 3875 §4.1.13: "a URI path ... which could identify the CGI script".
        "SCRIPT_NAME": req.script_name,
        # RFC 3875 §4.1.14: "the name of the server host to which the client
        # request is directed".
        "SERVER_NAME": req.server_name,
        # RFC 3875 §4.1.15: "the TCP/IP port on which this request is received".
        "SERVER_PORT": str(req.server_port),
        # RFC 3875 §4.1.16: "the name and version of the application protocol".
        "SERVER_PROTOCOL": req.server_protocol,
        # RFC 3875 §4.1.17: "the name and version of the information server software".
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
    }
    if req.content_length is not None:
        # RFC 3875 §4.1.2: "The server MUST set this meta-variable if and only
        # if the request is accompanied by a message-body entity."
        meta["CONTENT_LENGTH"] = str(req.content_length)
    if (content_type := _header(req.headers, "content-type")) is not None:
        # RFC 3875 §4.1.3: the Internet Media Type of the body, from the
        # Content-Type header; the server does not guess one.
        meta["CONTENT_TYPE"] = content_type
    if req.remote_port is not None:
        # Common extension (Apache, nginx fastcgi_params), not in RFC 3875.
        meta["REMOTE_PORT"] = str(req.remote_port)
    # Common extensions (Apache mod_ssl, nginx fastcgi_params), not in RFC 3875:
    # the scheme the client used, which SERVER_PROTOCOL does not tell.
    meta["REQUEST_SCHEME"] = req.scheme
    if req.scheme == "https":
        meta["HTTPS"] = "on"
    # RFC 3875 §4.1.18: protocol-specific meta-variables, HTTP_*.
    meta.update(header_variables(req.headers))
    check_environment(meta)
    return meta


def check_environment(meta: dict[str, str]) -> None:
    """Raise CGIRequestError for a name or value no process environment can hold.

    An environment entry is a C string "NAME=value": no NUL anywhere, no "="
    in the name, and every character one byte (native strings, see above).
    """
    for key, value in meta.items():
        if not key or "=" in key:
            raise CGIRequestError(f"invalid meta-variable name {key!r}")
        for text in (key, value):
            if "\0" in text:
                raise CGIRequestError(f"{key} contains a NUL character")
            try:
                text.encode("latin-1")
            except UnicodeEncodeError:
                raise CGIRequestError(f"{key} contains a character outside one byte") from None
