"""Small HTTP helpers on loopback (stdlib): GET, a health check, and polling until true."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping


def http_get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 2.0
) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``; returns (status, headers, body). Errors with a status are returned too."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers 200 within ``timeout``."""
    try:
        status, _, _ = http_get(url, timeout=timeout)
    except OSError:
        return False
    return status == 200


def wait_until(check: Callable[[], object], deadline_s: float, interval_s: float = 0.1) -> bool:
    """Call ``check()`` until it is true or ``deadline_s`` seconds have passed."""
    end = time.monotonic() + deadline_s
    while True:
        if check():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval_s)
