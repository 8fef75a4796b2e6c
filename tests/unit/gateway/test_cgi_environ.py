"""RFC 3875 §4.1 meta-variables, one row per rule; ids name the section."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gateway.cgi.environ import (
    DROPPED_HEADERS,
    SERVER_SOFTWARE,
    CGIRequest,
    CGIRequestError,
    build_meta_variables,
)

BASE = CGIRequest(
    method="GET",
    script_name="/cgi",
    path_info="/env",
    query_string="a=1&b=%20x",
    headers=[("Host", "lab.example:8080"), ("User-Agent", "pytest")],
    remote_addr="203.0.113.7",
    remote_port=54321,
    server_name="lab.example",
    server_port=8080,
    server_protocol="HTTP/1.1",
    scheme="http",
    content_length=None,
)

# (id, changes to BASE, expected variables (None: must be absent))
CASES: list[tuple[str, dict[str, Any], dict[str, str | None]]] = [
    ("4.1.1-auth-type-null", {}, {"AUTH_TYPE": ""}),
    ("4.1.2-content-length-absent-without-body", {}, {"CONTENT_LENGTH": None}),
    ("4.1.2-content-length-with-body", {"content_length": 12}, {"CONTENT_LENGTH": "12"}),
    ("4.1.2-content-length-empty-body", {"content_length": 0}, {"CONTENT_LENGTH": "0"}),
    ("4.1.3-content-type-absent", {}, {"CONTENT_TYPE": None}),
    (
        "4.1.3-content-type-from-header",
        {"headers": [("Content-Type", "application/x-www-form-urlencoded")]},
        {"CONTENT_TYPE": "application/x-www-form-urlencoded", "HTTP_CONTENT_TYPE": None},
    ),
    ("4.1.4-gateway-interface", {}, {"GATEWAY_INTERFACE": "CGI/1.1"}),
    ("4.1.5-path-info", {}, {"PATH_INFO": "/env"}),
    ("4.1.5-path-info-empty", {"path_info": ""}, {"PATH_INFO": ""}),
    ("4.1.5-path-info-utf8-bytes", {"path_info": "/caf\xc3\xa9"}, {"PATH_INFO": "/caf\xc3\xa9"}),
    ("4.1.6-path-translated-omitted", {}, {"PATH_TRANSLATED": None}),
    ("4.1.7-query-string-raw", {}, {"QUERY_STRING": "a=1&b=%20x"}),
    ("4.1.7-query-string-empty", {"query_string": ""}, {"QUERY_STRING": ""}),
    ("4.1.8-remote-addr", {}, {"REMOTE_ADDR": "203.0.113.7"}),
    ("4.1.9-remote-host-is-addr", {}, {"REMOTE_HOST": "203.0.113.7"}),
    ("4.1.10-remote-ident-unset", {}, {"REMOTE_IDENT": None, "REMOTE_USER": None}),
    ("4.1.12-request-method", {"method": "POST"}, {"REQUEST_METHOD": "POST"}),
    ("4.1.13-script-name", {}, {"SCRIPT_NAME": "/cgi"}),
    ("4.1.13-script-name-root", {"script_name": ""}, {"SCRIPT_NAME": ""}),
    ("4.1.14-server-name", {}, {"SERVER_NAME": "lab.example"}),
    ("4.1.15-server-port", {}, {"SERVER_PORT": "8080"}),
    ("4.1.16-server-protocol", {}, {"SERVER_PROTOCOL": "HTTP/1.1"}),
    (
        "4.1.16-server-protocol-1.0",
        {"server_protocol": "HTTP/1.0"},
        {"SERVER_PROTOCOL": "HTTP/1.0"},
    ),
    ("4.1.12-extension-method-as-sent", {"method": "PROPFIND"}, {"REQUEST_METHOD": "PROPFIND"}),
    (
        "4.1.7-isindex-query-stays-raw",
        {"query_string": "word1+word2%21"},
        {"QUERY_STRING": "word1+word2%21"},
    ),
    (
        "4.1.18-proxy-any-case",
        {"headers": [("PROXY", "http://evil:3128"), ("proxy", "x")]},
        {"HTTP_PROXY": None},
    ),
    (
        "4.1.18-shell-metacharacters-verbatim",
        {"headers": [("X-Cmd", "$(id); `id` | a && b > c 'q' \"d\"")]},
        {"HTTP_X_CMD": "$(id); `id` | a && b > c 'q' \"d\""},
    ),
    ("4.1.17-server-software", {}, {"SERVER_SOFTWARE": SERVER_SOFTWARE}),
    ("4.1.18-http-header", {}, {"HTTP_USER_AGENT": "pytest", "HTTP_HOST": "lab.example:8080"}),
    (
        "4.1.18-dash-to-underscore",
        {"headers": [("X-Request-Id", "abc")]},
        {"HTTP_X_REQUEST_ID": "abc"},
    ),
    (
        "4.1.18-duplicates-joined",
        {"headers": [("Accept", "text/html"), ("accept", "application/json")]},
        {"HTTP_ACCEPT": "text/html, application/json"},
    ),
    ("4.1.18-drops-proxy", {"headers": [("Proxy", "http://evil:3128")]}, {"HTTP_PROXY": None}),
    (
        "4.1.18-drops-authorization",
        {"headers": [("Authorization", "Basic eDp5"), ("Proxy-Authorization", "Basic eDp5")]},
        {"HTTP_AUTHORIZATION": None, "HTTP_PROXY_AUTHORIZATION": None},
    ),
    (
        "4.1.18-drops-content-length",
        {"headers": [("Content-Length", "5")], "content_length": 5},
        {"HTTP_CONTENT_LENGTH": None, "CONTENT_LENGTH": "5"},
    ),
    (
        "4.1.18-drops-underscore-names",
        {"headers": [("X-Foo_Bar", "sneaky"), ("X-Foo-Bar", "real")]},
        {"HTTP_X_FOO_BAR": "real"},
    ),
    (
        "4.1.18-drops-hop-by-hop",
        {"headers": [("Connection", "keep-alive"), ("TE", "trailers"), ("Upgrade", "h2c")]},
        {"HTTP_CONNECTION": None, "HTTP_TE": None, "HTTP_UPGRADE": None},
    ),
    ("ext-remote-port", {}, {"REMOTE_PORT": "54321"}),
    ("ext-remote-port-unknown", {"remote_port": None}, {"REMOTE_PORT": None}),
    ("ext-http-scheme", {}, {"REQUEST_SCHEME": "http", "HTTPS": None}),
    ("ext-https-scheme", {"scheme": "https"}, {"REQUEST_SCHEME": "https", "HTTPS": "on"}),
]


@pytest.mark.parametrize("changes, expected", [pytest.param(c, e, id=i) for i, c, e in CASES])
def test_meta_variable(changes: dict[str, Any], expected: dict[str, str | None]) -> None:
    meta = build_meta_variables(replace(BASE, **changes))
    assert {k: meta.get(k) for k in expected} == expected


def test_only_known_variables_and_strings() -> None:
    meta = build_meta_variables(BASE)
    assert all(isinstance(v, str) for v in meta.values())
    assert sorted(meta) == sorted(
        [
            "AUTH_TYPE", "GATEWAY_INTERFACE", "PATH_INFO", "QUERY_STRING", "REMOTE_ADDR",
            "REMOTE_HOST", "REQUEST_METHOD", "SCRIPT_NAME", "SERVER_NAME", "SERVER_PORT",
            "SERVER_PROTOCOL", "SERVER_SOFTWARE", "REMOTE_PORT", "REQUEST_SCHEME",
            "HTTP_HOST", "HTTP_USER_AGENT",
        ]
    )  # fmt: skip


def test_dropped_headers_are_lower_case() -> None:
    assert all(name == name.lower() for name in DROPPED_HEADERS)
    assert {"proxy", "authorization", "content-length", "content-type"} <= DROPPED_HEADERS


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"path_info": "/a\0b"}, id="nul-in-path-info"),
        pytest.param({"query_string": "a=\0"}, id="nul-in-query"),
        pytest.param({"headers": [("X-Evil", "a\0b")]}, id="nul-in-header"),
        pytest.param({"path_info": "/\u20ac"}, id="not-one-byte-per-char"),
        pytest.param({"headers": [("X=Y", "1")]}, id="equals-in-name"),
    ],
)
def test_values_no_environment_can_hold(changes: dict[str, Any]) -> None:
    with pytest.raises(CGIRequestError):
        build_meta_variables(replace(BASE, **changes))
