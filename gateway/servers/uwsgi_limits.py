"""gunicorn's header limits for the uwsgi packets it reads (``--server uwsgi``), too.

Over HTTP gunicorn refuses a request with more than ``limit_request_fields``
header fields, or a field longer than ``limit_request_field_size`` bytes,
with a 431 (RFC 6585 §5). Its uwsgi reader (gunicorn 27's ``--protocol
uwsgi``) checks neither, so behind nginx's ``uwsgi_pass`` a 9 KiB header or
150 fields reached the app where every other server refuses them. This
wraps the reader's one method that turns the packet's variables into
headers and applies the same two limits there, raising the same exception
gunicorn's HTTP parser raises (its worker answers it with the 431, in JSON
through error_pages). gunicorn has no hook for it, so one method is wrapped,
as error_pages does for gunicorn's error pages; gunicorn is pinned below its
next major version (pyproject.toml) and tests/integration/test_hostile.py
checks the result under every server.
"""

from __future__ import annotations

from typing import Any

from gunicorn.http.errors import LimitRequestHeaders
from gunicorn.uwsgi.message import UWSGIRequest

_WRAPPED = "_lab_uwsgi_limits"


def check_header_limits(headers: list[tuple[str, str]], max_fields: int, max_bytes: int) -> None:
    """LimitRequestHeaders past either limit, as gunicorn's HTTP parser counts them.

    A field's size is that of its line without the CRLF: name, ": " and value.
    """
    if max_fields and len(headers) > max_fields:
        raise LimitRequestHeaders("limit request headers fields")
    for name, value in headers:
        if max_bytes and len(name) + 2 + len(value) > max_bytes:
            raise LimitRequestHeaders("limit request headers fields size")


def install_uwsgi_header_limits() -> None:
    """Apply ``check_header_limits`` to every uwsgi packet gunicorn reads (idempotent)."""
    extract = UWSGIRequest._extract_request_info
    if getattr(extract, _WRAPPED, False):
        return

    def extract_and_check(self: Any) -> None:
        extract(self)
        fields = int(getattr(self.cfg, "limit_request_fields", 0) or 0)
        size = int(getattr(self.cfg, "limit_request_field_size", 0) or 0)
        check_header_limits(self.headers, fields, size)

    setattr(extract_and_check, _WRAPPED, True)
    UWSGIRequest._extract_request_info = extract_and_check
