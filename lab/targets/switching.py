"""What every target shares: the split algorithm, knowing when a reload is done,
knowing which mode serves ``/``, and the settings every gateway gets.

The checks here wrap ``lab.routing`` (the one grammar) so a bad value
is a ``LabError`` with the grammar's own message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final, TypeVar

from gateway import trace
from gateway.config import MODE_SPECS
from lab import routing
from lab.errors import LabError, UsageError
from lab.routing import MODES, Split, format_split
from lab.settings import LabSettings
from lab.system.http import http_get, wait_until
from lab.system.procfs import Proc
from lab.targets import LimitsDict

PLAIN_MODE_FILE = "plain_mode"
T = TypeVar("T")


def _usage(call: Callable[[], T]) -> T:
    try:
        return call()
    except routing.RenderError as exc:
        raise UsageError(str(exc)) from None


def check_mode(mode: str) -> str:
    """``mode`` if it is one of MODES, else a UsageError (changing nothing)."""
    _usage(lambda: routing.check_mode(mode))
    return mode


def parse_weights(text: str) -> Split | None:
    """``lab split`` syntax: ``"wsgi=90,asgi=10"`` -> the split; ``""`` -> None (no split)."""
    if not text.strip():
        return None
    return _usage(lambda: routing.parse_split(text))


def check_weights(weights: Mapping[str, int]) -> Split:
    """``weights`` if the grammar accepts them, else a UsageError (changing nothing)."""
    if not weights:
        raise UsageError("a split needs at least one mode=percent")
    return _usage(lambda: routing.parse_split(format_split(weights)))


def parse_replicas(text: str) -> int:
    return _usage(lambda: routing.parse_replicas(text))


def check_replicas(replicas: int) -> int:
    return _usage(lambda: routing.check_replicas(replicas))


def limits_dict(cfg: LabSettings) -> LimitsDict:
    return {
        "proxy_read_timeout_s": cfg.limits.proxy_read_timeout_s,
        "client_max_body_bytes": cfg.limits.client_max_body_bytes,
        "cgi_max_scripts": cfg.limits.cgi_max_scripts,
    }


def gateway_env(cfg: LabSettings, mode: str) -> dict[str, str]:
    """``GATEWAY_*`` variables that carry the lab's settings to ``mode``'s gateway
    (compose.yaml passes the same ones under Docker).

    LAB_GATEWAY_WORKERS goes to wsgi and asgi only: CGI's concurrency is its
    script cap under either server (one runner process; fcgiwrap preforks
    ``cgi_max_scripts``), so a worker count has no meaning there.
    """
    env = {
        "GATEWAY_CGI_MAX_SCRIPTS": str(cfg.limits.cgi_max_scripts),
        "GATEWAY_MAX_BODY_BYTES": str(cfg.limits.client_max_body_bytes),
        "GATEWAY_TIMEOUT_S": str(cfg.limits.proxy_read_timeout_s),
    }
    if not MODE_SPECS[mode].fixed_workers:  # type: ignore[index]
        env["GATEWAY_WORKERS"] = str(cfg.gateway_workers)
    return env


# -- the split --------------------------------------------------------------------


def mode_after_split(split: Mapping[str, int], recorded: str | None) -> str:
    """The plain mode ``lab split ""`` goes back to: the one active before the split,
    else (nothing recorded) the split's largest share, the "stable" side of a canary."""
    if recorded in MODES:
        return recorded
    return max(split.items(), key=lambda item: item[1])[0]


def record_plain_mode(cfg: LabSettings, mode: str) -> None:
    """Remember the plain mode a split replaces, for ``lab split ""``."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    (cfg.state_dir / PLAIN_MODE_FILE).write_text(mode + "\n", encoding="utf-8")


def recorded_plain_mode(cfg: LabSettings) -> str | None:
    try:
        return (cfg.state_dir / PLAIN_MODE_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def apply_split(
    cfg: LabSettings,
    weights: Mapping[str, int] | None,
    current: str | Split | None,
    *,
    apply: Callable[[Split], None],
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
        raise LabError(f"split {format_split(checked)} is loaded, but {cfg.url}/ fails")
    say(f"split: {cfg.url}/ is now served by {format_split(checked)}")


# -- which mode serves "/" ----------------------------------------------------------


def served_mode(cfg: LabSettings) -> str | None:
    """The mode that answers ``/`` with no X-Lab-Mode header and no cookie."""
    try:
        status, headers, _ = http_get(cfg.url + "/", timeout=2.0)
    except OSError:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    return lowered.get(trace.MODE.lower()) if status < 500 else None


def wait_for_mode(cfg: LabSettings, mode: str, deadline_s: float = 15.0) -> None:
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
MASTER_TITLE = "nginx: master process"


def accepting_workers(rows: Iterable[Proc], master: int) -> set[int]:
    """Pids of the master's workers that still accept connections."""
    return {p.pid for p in rows if p.ppid == master and p.title == WORKER_TITLE}


def reload_done(before: set[int], rows: Iterable[Proc], master: int) -> bool:
    """True once the workers that accept connections are all new (started after ``before``)."""
    now = accepting_workers(rows, master)
    return bool(now) and not now & before


def wait_for_reload(
    rows: Callable[[], list[Proc]], master: int, before: set[int], deadline_s: float = 15.0
) -> None:
    """Return once ``reload_done``; LabError after ``deadline_s`` (nginx kept the old config)."""
    if not wait_until(lambda: reload_done(before, rows(), master), deadline_s, interval_s=0.05):
        raise LabError(
            f"nginx did not start workers with the new config within {deadline_s:.0f}s: "
            "it kept the old one (its error log says why; see `lab logs`)"
        )


# How long nginx's old workers may take to finish the requests they hold after a reload.
DRAIN_DEADLINE_S: Final = 15.0


def drain_old_workers(
    before: set[int], rows: Callable[[], Iterable[Proc]], say: Callable[[str], None]
) -> None:
    """Wait until nginx's workers from before a reload (``before``, their pids) have
    finished the requests they hold: until then they may still use an upstream the
    caller is about to stop. Past ``DRAIN_DEADLINE_S`` it says so and returns (a
    gateway's stop is graceful too: SIGTERM, then gunicorn lets its workers finish)."""
    if not wait_until(lambda: not before & {p.pid for p in rows()}, DRAIN_DEADLINE_S, 0.2):
        say(f"nginx's old workers still hold connections after {DRAIN_DEADLINE_S:.0f}s")


def worker_counts(rows: Iterable[Proc], masters: Mapping[str, Iterable[int]]) -> dict[str, int]:
    """Worker processes in force per mode: the live children of each mode's gunicorn masters.

    ``masters`` maps a mode to the pids of its gateways' masters (one per replica).
    """
    rows = list(rows)
    return {
        mode: sum(1 for p in rows if p.ppid in set(pids) and p.state != "Z")
        for mode, pids in masters.items()
    }
