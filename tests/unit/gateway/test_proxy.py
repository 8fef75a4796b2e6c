"""Trusted peers, mount points and forwarded values: the pure rules in gateway.proxy."""

import pytest

from gateway.proxy import AllowList, client_address, ip_entries, scheme_from, split_mount


@pytest.mark.parametrize(
    ("spec", "peer", "trusted"),
    [
        pytest.param("127.0.0.1,::1", "127.0.0.1", True, id="loopback-v4"),
        pytest.param("127.0.0.1,::1", "::1", True, id="loopback-v6"),
        pytest.param("127.0.0.1,::1", "10.0.0.7", False, id="other-address"),
        pytest.param("172.28.0.0/24", "172.28.0.9", True, id="cidr-inside"),
        pytest.param("172.28.0.0/24", "172.28.1.9", False, id="cidr-outside"),
        pytest.param("127.0.0.1", None, False, id="no-peer"),
        pytest.param("127.0.0.1", "", False, id="unix-socket-not-allowed"),
        pytest.param("unix,127.0.0.1", "", True, id="unix-socket-wsgi"),
        pytest.param("unix,127.0.0.1", None, True, id="unix-socket-asgi"),
        pytest.param("unix", "127.0.0.1", False, id="unix-only-tcp-peer"),
        pytest.param("127.0.0.1", "/run/gw.sock", False, id="a-path-is-no-address"),
        pytest.param("*", "203.0.113.5", True, id="star"),
        pytest.param("", "127.0.0.1", False, id="empty-list"),
    ],
)
def test_allow_list(spec: str, peer: str | None, trusted: bool) -> None:
    assert AllowList.parse(spec).trusts(peer) is trusted


def test_ip_entries_leave_out_unix() -> None:
    assert ip_entries(" unix , 127.0.0.1,::1 ") == "127.0.0.1,::1"
    assert ip_entries("unix") == ""


def test_allow_list_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        AllowList.parse("127.0.0.1,not-an-ip")


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        pytest.param("/wsgi/env", "/wsgi", ("/wsgi", "/env"), id="below-mount"),
        pytest.param("/wsgi", "/wsgi", ("/wsgi", ""), id="mount-itself"),
        pytest.param("/wsgi/", "/wsgi", ("/wsgi", "/"), id="mount-slash"),
        pytest.param("/wsgix/env", "/wsgi", None, id="whole-segments-only"),
        pytest.param("/env", "/wsgi", None, id="elsewhere"),
        pytest.param("/wsgi/env", None, None, id="no-prefix"),
        pytest.param("/wsgi/env", "wsgi", None, id="relative-prefix"),
        pytest.param("/wsgi/env", "/wsgi/", None, id="trailing-slash"),
        pytest.param("/a/../b", "/a/..", None, id="dot-segment"),
        pytest.param("/a b/x", "/a b", None, id="space"),
    ],
)
def test_split_mount(path: str, prefix: str | None, expected: tuple[str, str] | None) -> None:
    assert split_mount(path, prefix) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("1.2.3.4, 203.0.113.5", "203.0.113.5"),
        ("::1", "::1"),
        ("evil", None),
        ("", None),
        (None, None),
    ],
)
def test_client_address(value: str | None, expected: str | None) -> None:
    assert client_address(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("https", "https"), ("HTTP", "http"), ("gopher", None), (None, None)],
)
def test_scheme_from(value: str | None, expected: str | None) -> None:
    assert scheme_from(value) == expected


def test_remembered_verdicts_are_the_verdicts() -> None:
    """The memoized parses answer a repeated value as they answered it first."""
    allow = AllowList.parse("127.0.0.1")
    for _ in range(2):
        assert allow.trusts("127.0.0.1")
        assert not allow.trusts("127.0.0.2")
        assert not allow.trusts("/run/nginx.sock")
        assert client_address("203.0.113.9") == "203.0.113.9"
        assert client_address("not-an-address") is None
        assert split_mount("/asgi/x", "/asgi") == ("/asgi", "/x")
        assert split_mount("/a/../b", "/a/..") is None
    # Two allow lists never share what one of them decided.
    assert not AllowList.parse("10.0.0.0/8").trusts("127.0.0.1")
    assert AllowList.parse("10.0.0.0/8") == AllowList.parse("10.0.0.0/8")
