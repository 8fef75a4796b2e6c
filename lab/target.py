"""Where a lab runs: the interface every target (native, docker) implements.

A target owns the processes or containers of one lab. The CLI only talks to
this interface, so ``lab up`` means the same on every target:

- ``up(cfg)`` is idempotent: it starts what is missing and returns once every
  service answers its health check (nginx ``/nginx-health``, each gateway
  ``/healthz``), or raises ``LabError`` saying what failed and what to do.
- ``down(cfg)`` stops exactly what ``up`` started, nothing else.
- ``status(cfg)`` returns the ``lab status --json`` shape (CONTRACT.md).
- ``switch(cfg, mode)`` re-renders ``active_mode.conf``, checks the config with
  ``nginx -t``, reloads nginx gracefully (no request dropped) and returns once
  ``/`` without header or cookie is answered by ``mode`` (``wait_for_mode``).
- ``logs(cfg, follow)`` prints the logs of every service.
- ``is_running(cfg)`` is true when the target's services exist (healthy or not).

Targets are classes with a no-argument constructor: ``lab.native.NativeTarget``
and ``lab.docker.DockerTarget`` (``name`` "native" and "docker"). The helpers
below (``check_mode``, ``limits_dict``, ``gateway_env``, ``wait_for_mode``,
``is_healthy``) are shared by both. The rendered nginx config comes from
``lab.nginx_conf``; ``switch`` re-renders only ``active_mode.conf``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, cast, runtime_checkable

from lab.config import MODES, LabConfig

if TYPE_CHECKING:
    from collections.abc import Mapping

TARGET_NAMES = ("docker", "native")
DEFAULT_MODE = "wsgi"
MODE_HEADER = "X-Gateway-Mode"


class LabError(Exception):
    """A failure the user can act on: the message says what went wrong and what to do."""


class LimitsDict(TypedDict):
    proxy_read_timeout_s: int
    client_max_body_bytes: int
    cgi_max_scripts: int


class StatusDict(TypedDict):
    """``lab status --json`` (CONTRACT.md), plus ``running``."""

    target: str
    url: str
    running: bool
    active_mode: str | None
    gateways: dict[str, str]
    limits: LimitsDict


@runtime_checkable
class Target(Protocol):
    name: str

    def up(self, cfg: LabConfig) -> None: ...

    def down(self, cfg: LabConfig) -> None: ...

    def status(self, cfg: LabConfig) -> StatusDict: ...

    def switch(self, cfg: LabConfig, mode: str) -> None: ...

    def logs(self, cfg: LabConfig, follow: bool) -> None: ...

    def is_running(self, cfg: LabConfig) -> bool: ...


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of MODES, else raise LabError (changing nothing)."""
    if mode not in MODES:
        raise LabError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


def limits_dict(cfg: LabConfig) -> LimitsDict:
    return {
        "proxy_read_timeout_s": cfg.limits.proxy_read_timeout_s,
        "client_max_body_bytes": cfg.limits.client_max_body_bytes,
        "cgi_max_scripts": cfg.limits.cgi_max_scripts,
    }


def gateway_env(cfg: LabConfig) -> dict[str, str]:
    """``GATEWAY_*`` variables that carry the lab's limits to every gateway."""
    return {
        "GATEWAY_CGI_MAX_SCRIPTS": str(cfg.limits.cgi_max_scripts),
        "GATEWAY_MAX_BODY_BYTES": str(cfg.limits.client_max_body_bytes),
        "GATEWAY_TIMEOUT_S": str(cfg.limits.proxy_read_timeout_s),
    }


# -- small HTTP helpers (stdlib, loopback only) shared by the targets ---------


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
    try:
        status, _, _ = http_get(url, timeout=timeout)
    except OSError:
        return False
    return status == 200


def wait_until(check: Any, deadline_s: float, interval_s: float = 0.1) -> bool:
    """Call ``check()`` until it is true or ``deadline_s`` seconds have passed."""
    end = time.monotonic() + deadline_s
    while True:
        if check():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval_s)


def served_mode(cfg: LabConfig) -> str | None:
    """The mode that answers ``/`` with no X-Lab-Mode header and no cookie."""
    try:
        status, headers, _ = http_get(cfg.url + "/", timeout=2.0)
    except OSError:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    return lowered.get(MODE_HEADER.lower()) if status < 500 else None


def wait_for_mode(cfg: LabConfig, mode: str, deadline_s: float = 15.0) -> None:
    """Return once ``/`` (no header, no cookie) is served by ``mode``; LabError after the deadline.

    After ``nginx -s reload`` old workers finish their requests with the old
    config while new workers start with the new one, so a few answers may still
    come from the previous mode; a few in a row from ``mode`` means it is in effect.
    """
    streak = 0

    def in_effect() -> bool:
        nonlocal streak
        streak = streak + 1 if served_mode(cfg) == mode else 0
        return streak >= 3

    if not wait_until(in_effect, deadline_s, interval_s=0.05):
        raise LabError(
            f"switched the config to {mode}, but {cfg.url}/ is still not served by {mode} "
            f"after {deadline_s:.0f}s (it answers as {served_mode(cfg)!r}); see `lab logs`"
        )


# -- choosing a target ----------------------------------------------------------


def docker_answers(timeout_s: float = 3.0) -> bool:
    """True when a Docker engine answers ``docker info`` within ``timeout_s``."""
    if shutil.which("docker") is None:
        return False
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{json .ServerVersion}}"],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and bool(json.loads(proc.stdout or b"null"))


def target_name(env: Mapping[str, str] | None = None) -> str:
    """``LAB_TARGET`` if set (docker|native), else docker when an engine answers, else native."""
    e = os.environ if env is None else env
    name = e.get("LAB_TARGET", "").strip().lower()
    if name and name not in TARGET_NAMES:
        raise LabError(f"LAB_TARGET={name!r} is not a target: use one of {', '.join(TARGET_NAMES)}")
    if name:
        return name
    return "docker" if docker_answers() else "native"


def get_target(name: str) -> Target:
    """The target called ``name``; the docker one is imported only when asked for."""
    if name == "native":
        from lab.native import NativeTarget

        return NativeTarget()
    if name == "docker":
        try:
            from lab.docker import DockerTarget  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise LabError(
                f"the docker target is not available ({exc}); "
                "run with LAB_TARGET=native to use the host's nginx instead"
            ) from exc
        return cast(Target, DockerTarget())
    raise LabError(f"unknown target {name!r}: use one of {', '.join(TARGET_NAMES)}")


def choose_target(env: Mapping[str, str] | None = None) -> Target:
    return get_target(target_name(env))
