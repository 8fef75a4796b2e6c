"""Where a lab runs: the interface every target (native, docker) implements.

A target owns the processes or containers of one lab. The CLI only talks to
this interface, so ``lab up`` means the same on every target:

- ``up(cfg)`` is idempotent: it starts what is missing and returns once every
  service answers its health check (nginx ``/nginx-health``, each gateway
  ``/healthz``), or raises ``LabError`` saying what failed and what to do.
- ``down(cfg)`` stops exactly what ``up`` started, nothing else.
- ``status(cfg)`` returns the ``lab status --json`` shape (CONTRACT.md);
  ``active_mode`` is the default mode of ``/``, or while a split is active its
  label in ``lab split`` syntax (``"wsgi=90,asgi=10"``, see ``active_label``).
- ``switch(cfg, mode)`` re-renders ``active_mode.conf``, checks the config with
  ``nginx -t``, reloads nginx gracefully (no request dropped) and returns once
  the reload is done (``reload_done``) and ``/`` without header or cookie is
  answered by ``mode`` (``wait_for_mode``).
- ``split(cfg, weights)`` does the same with a weighted split of ``/`` (nginx's
  ``split_clients``, e.g. ``{"wsgi": 90, "asgi": 10}``); ``None`` goes back to
  the plain mode that was active before the split. Weights come from
  ``parse_weights``: whole percents, each 1..100, summing to exactly 100 (no
  normalising: what you type is the share you get).
- ``scale(cfg, mode, replicas)`` (``ScalableTarget``) runs ``replicas`` (1..8,
  ``check_replicas``) gateways of ``mode`` behind nginx, which spreads requests
  over them round robin. Scaling up starts the new replicas, waits for their
  ``/healthz``, then reloads nginx with every replica in ``upstreams.conf``;
  scaling down reloads nginx without the surplus first and stops it only once
  the reload is done and nginx's old workers have let go of it, so no request
  is dropped. Returns once nginx runs with the new set. ``status`` then reports
  ``replicas`` (mode -> count) next to the CONTRACT.md keys.
- ``logs(cfg, follow)`` prints the logs of every service.
- ``is_running(cfg)`` is true when the target's services exist (healthy or not).

Targets are classes with a no-argument constructor: ``lab.native.NativeTarget``
and ``lab.docker.DockerTarget`` (``name`` "native" and "docker"). The helpers
below (``check_mode``, ``parse_weights``, ``limits_dict``, ``gateway_env``,
``wait_for_mode``, ``wait_for_reload``, ``is_healthy``) are shared by both, and
``apply_split`` is ``split`` itself, given each target's way to read and load. The
rendered nginx config comes from ``lab.nginx_conf``; ``switch`` and ``split``
re-render only ``active_mode.conf``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict, cast, runtime_checkable

from lab.config import MODES, LabConfig
from lab.nginx_conf import MAX_REPLICAS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

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
    # Gateways per mode (``lab scale``), from targets that can scale.
    replicas: NotRequired[dict[str, int]]
    # The server behind each mode (``lab server``) and its worker processes.
    servers: NotRequired[dict[str, str]]
    workers: NotRequired[dict[str, int]]


@runtime_checkable
class Target(Protocol):
    name: str

    def up(self, cfg: LabConfig) -> None: ...

    def down(self, cfg: LabConfig) -> None: ...

    def status(self, cfg: LabConfig) -> StatusDict: ...

    def switch(self, cfg: LabConfig, mode: str) -> None: ...

    def split(self, cfg: LabConfig, weights: Mapping[str, int] | None) -> None: ...

    def logs(self, cfg: LabConfig, follow: bool) -> None: ...

    def is_running(self, cfg: LabConfig) -> bool: ...


@runtime_checkable
class ScalableTarget(Target, Protocol):
    """A target that can run several replicas of one gateway (both real targets can)."""

    def scale(self, cfg: LabConfig, mode: str, replicas: int) -> None: ...


@runtime_checkable
class ServerTarget(Target, Protocol):
    """A target that can swap the server behind a mode (``lab server``; lab/servers.py)."""

    def server(self, cfg: LabConfig, mode: str, server: str) -> None: ...


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of MODES, else raise LabError (changing nothing)."""
    if mode not in MODES:
        raise LabError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


def parse_replicas(text: str) -> int:
    """``"3"`` -> 3: a whole number 1..MAX_REPLICAS, else LabError (nothing changed yet)."""
    if not _WEIGHT_RE.fullmatch(text.strip()):
        raise LabError(f"replicas must be a whole number 1..{MAX_REPLICAS}, not {text!r}")
    return check_replicas(int(text))


def check_replicas(replicas: int) -> int:
    # Eight per mode: enough to watch nginx spread requests on a laptop, and
    # the native port scheme (lab.nginx_conf.replica_port) has room for them.
    if not 1 <= replicas <= MAX_REPLICAS:
        raise LabError(f"replicas must be between 1 and {MAX_REPLICAS}, not {replicas}")
    return replicas


_WEIGHT_RE = re.compile(r"[0-9]+")
PLAIN_MODE_FILE = "plain_mode"


def parse_weights(text: str) -> dict[str, int] | None:
    """``"wsgi=90,asgi=10"`` -> ``{"wsgi": 90, "asgi": 10}``; ``""`` -> None (no split).

    Whole percents, each 1..100, summing to exactly 100: nginx's split_clients
    takes percentages, and normalising "wsgi=9,asgi=1" would hide a typo.
    Raises LabError naming the bad part; nothing has been changed by then.
    """
    if not text.strip():
        return None
    weights: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        name, sep, weight = (s.strip() for s in part.partition("="))
        if not sep or not _WEIGHT_RE.fullmatch(weight):
            raise LabError(
                f"bad weight {part!r}: write MODE=PERCENT with a whole number, e.g. wsgi=90,asgi=10"
            )
        check_mode(name)
        if name in weights:
            raise LabError(f"mode {name} appears twice in {text!r}")
        if not 1 <= int(weight) <= 100:
            raise LabError(
                f"weight of {name} must be 1..100 (leave a mode out for 0), not {weight}"
            )
        weights[name] = int(weight)
    if (total := sum(weights.values())) != 100:
        raise LabError(f"weights must sum to 100 (percent), not {total}: {text!r}")
    return weights


def check_weights(weights: Mapping[str, int]) -> dict[str, int]:
    """``weights`` if ``parse_weights`` would accept them, else LabError (changing nothing)."""
    checked = parse_weights(format_weights(weights))
    if checked is None:
        raise LabError("a split needs at least one mode=percent")
    return checked


def format_weights(weights: Mapping[str, int]) -> str:
    """The label of a split, in ``lab split`` syntax: ``wsgi=90,asgi=10``."""
    return ",".join(f"{m}={w}" for m, w in weights.items())


def active_label(active: str | Mapping[str, int] | None) -> str | None:
    """``active_mode`` of ``lab status``: the mode, or the split's label while one is active."""
    return active if active is None or isinstance(active, str) else format_weights(active)


def mode_after_split(split: Mapping[str, int], recorded: str | None) -> str:
    """The plain mode ``lab split ""`` goes back to: the one active before the split,
    else (nothing recorded) the split's largest share, the "stable" side of a canary."""
    if recorded in MODES:
        return recorded
    return max(split.items(), key=lambda item: item[1])[0]


def record_plain_mode(cfg: LabConfig, mode: str) -> None:
    """Remember the plain mode a split replaces, for ``lab split ""``."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    (cfg.state_dir / PLAIN_MODE_FILE).write_text(mode + "\n", encoding="utf-8")


def recorded_plain_mode(cfg: LabConfig) -> str | None:
    try:
        return (cfg.state_dir / PLAIN_MODE_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def apply_split(
    cfg: LabConfig,
    weights: Mapping[str, int] | None,
    current: str | dict[str, int] | None,
    *,
    apply: Callable[[dict[str, int]], None],
    switch: Callable[[str], None],
    say: Callable[[str], None],
) -> None:
    """``split(cfg, weights)`` on any target, given the target's own pieces.

    ``current`` is the mode or split active now; ``apply`` loads a checked
    split into nginx and returns once the reload is done; ``switch`` goes to a
    plain mode (``Target.switch``); ``say`` tells the user. ``None`` ends a
    split: back to the plain mode recorded when it began (``mode_after_split``).
    """
    if weights is None:
        if not isinstance(current, dict):
            say(f"no split is active: {cfg.url}/ is served by {current}")
            return
        switch(mode_after_split(current, recorded_plain_mode(cfg)))
        return
    checked = check_weights(weights)
    if isinstance(current, str):
        record_plain_mode(cfg, current)
    apply(checked)
    if served_mode(cfg) not in checked:
        raise LabError(f"split {format_weights(checked)} is loaded, but {cfg.url}/ fails")
    say(f"split: {cfg.url}/ is now served by {format_weights(checked)}")


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


# -- knowing when a reload is done ----------------------------------------------
# On SIGHUP the nginx master reads the new config, starts new workers and tells
# the old ones to stop accepting: an old worker closes its listening sockets and
# renames itself "worker process is shutting down", then finishes the requests it
# holds. So the new config is in effect for every new connection once there is a
# new worker and every old one is gone or shutting down. Deterministic, unlike
# sampling "/" (a split that includes the previous mode looks the same for a while).

WORKER_TITLE = "nginx: worker process"
# (pid, parent pid, process title): what /proc says about one process.
ProcRow = tuple[int, int, str]


def accepting_workers(rows: Iterable[ProcRow], master: int) -> set[int]:
    """Pids of the master's workers that still accept connections."""
    return {pid for pid, ppid, title in rows if ppid == master and title == WORKER_TITLE}


def reload_done(before: set[int], rows: Iterable[ProcRow], master: int) -> bool:
    """True once the workers that accept connections are all new (started after ``before``)."""
    now = accepting_workers(rows, master)
    return bool(now) and not now & before


def read_proc(proc: Path | None = None) -> list[ProcRow]:
    """Every process's (pid, ppid, title) from /proc (Linux)."""
    root = proc or Path("/proc")
    rows = []
    for stat in root.glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid ...: comm may hold spaces, so split after ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            title = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError, UnicodeDecodeError):
            continue
        rows.append((int(stat.parent.name), int(fields[1]), title))
    return rows


def wait_for_reload(
    rows: Callable[[], list[ProcRow]], master: int, before: set[int], deadline_s: float = 15.0
) -> None:
    """Return once ``reload_done``; LabError after ``deadline_s`` (nginx kept the old config)."""
    if not wait_until(lambda: reload_done(before, rows(), master), deadline_s, interval_s=0.05):
        raise LabError(
            f"nginx did not start workers with the new config within {deadline_s:.0f}s: "
            "it kept the old one (its error log says why; see `lab logs`)"
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
