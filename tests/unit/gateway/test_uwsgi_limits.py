"""gunicorn's header limits applied to the uwsgi packets it reads (gateway.servers.uwsgi_limits)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from gunicorn.http.errors import LimitRequestHeaders
from gunicorn.uwsgi.message import UWSGIRequest

from gateway.servers.uwsgi_limits import check_header_limits, install_uwsgi_header_limits


def test_within_the_limits_nothing_is_raised() -> None:
    check_header_limits([("X-A", "v")] * 100, 100, 8190)
    check_header_limits([("X-Big", "a" * (8190 - 7))], 100, 8190)


@pytest.mark.parametrize(
    "headers",
    [[("X-A", "v")] * 101, [("X-Big", "a" * (8190 - 6))]],
    ids=["101-fields", "one-byte-over"],
)
def test_past_a_limit_is_gunicorns_431_exception(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(LimitRequestHeaders):
        check_header_limits(headers, 100, 8190)


def test_the_uwsgi_reader_applies_them() -> None:
    install_uwsgi_header_limits()
    install_uwsgi_header_limits()  # idempotent: one wrapper
    uwsgi_vars = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    uwsgi_vars |= {f"HTTP_X_H{i}": "v" for i in range(150)}
    request = SimpleNamespace(
        uwsgi_vars=uwsgi_vars,
        headers=[],
        cfg=SimpleNamespace(limit_request_fields=100, limit_request_field_size=8190),
    )
    with pytest.raises(LimitRequestHeaders):
        UWSGIRequest._extract_request_info(request)
    request.headers = []
    request.uwsgi_vars = {"REQUEST_METHOD": "GET", "HTTP_HOST": "a"}
    UWSGIRequest._extract_request_info(request)
    assert request.headers == [("HOST", "a")]
