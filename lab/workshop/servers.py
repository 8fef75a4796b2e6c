"""The servers a workshop tool measures: ``--servers wsgi/sync,wsgi/gthread``, and the
one swapping helper the bench, the timeline and the claims share.

``parse_servers`` is pure: a list of ``MODE/SERVER`` pairs checked against the
registry (CONTRACT.md, "Servers behind each route"); a bad one is a UsageError
(one line, exit 2) before anything changes. ``servers_restored`` swaps the
lab's servers as ``lab server`` does (under the lab's lock) and, on the way
out, puts back the server each mode had before, whether the block ended, failed
or was interrupted (Ctrl-C).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from gateway import trace
from gateway.servers.registry import SERVERS, ServerError, check_server
from lab.errors import LabError, UsageError
from lab.routing import MODES

EXAMPLE: Final = "wsgi/sync,wsgi/gthread"

Pair = tuple[str, str]  # (mode, server)


def parse_servers(text: str) -> list[Pair]:
    """``"wsgi/sync, wsgi/gthread"`` -> [("wsgi", "sync"), ("wsgi", "gthread")], in order."""
    items = [x.strip() for x in text.split(",")]
    if not text.strip() or any(not x for x in items):
        raise UsageError(f"--servers takes MODE/SERVER pairs separated by commas, e.g. {EXAMPLE}")
    pairs: list[Pair] = []
    for item in items:
        mode, slash, server = item.partition("/")
        if not slash or not mode or not server:
            raise UsageError(f"--servers: {item!r} is not MODE/SERVER (e.g. {EXAMPLE})")
        if mode not in MODES:
            raise UsageError(
                f"--servers: unknown mode {mode!r} in {item!r}: use {', '.join(MODES)}"
            )
        try:
            pair = (mode, check_server(mode, server))
        except ServerError as exc:
            raise UsageError(f"--servers: {exc}") from None
        if pair in pairs:
            raise UsageError(f"--servers: {item} is listed twice")
        pairs.append(pair)
    return pairs


def label(mode: str, server: str) -> str:
    """How a result names what it measured: ``wsgi/gthread``."""
    return f"{mode}/{server}"


def series_label(mode: str, server: str) -> str:
    """A chart's name for one series: ``WSGI gthread`` (``WSGI`` when the server is unknown)."""
    return f"{mode.upper()} {server}".strip()


def all_pairs() -> list[Pair]:
    """Every (mode, server) the lab can run, defaults first (benchmarks/servers.py)."""
    return [(m, s) for m in MODES for s in SERVERS[m]]


def serving(base: str, mode: str) -> str:
    """The server answering ``/<mode>/`` at ``base`` (its X-Gateway-Server), "" if none says."""
    from lab.system.http import http_get

    try:
        _, headers, _ = http_get(f"{base.rstrip('/')}/{mode}/", timeout=5.0)
    except OSError:
        return ""
    return {k.lower(): v for k, v in headers.items()}.get(trace.SERVER.lower(), "")


def plan(base: str, modes: Sequence[str], servers: Sequence[Pair] | None) -> list[Pair]:
    """What a tool measures, in order: the ``--servers`` pairs, else each mode under
    the server that answers it now."""
    return list(servers) if servers else [(m, serving(base, m)) for m in modes]


Use = Callable[[str, str], None]


@contextlib.contextmanager
def swapping(servers: Sequence[Pair] | None) -> Iterator[Use]:
    """``servers_restored`` when the tool was given ``--servers``; else a ``use`` that
    changes nothing (each mode is measured under the server it has)."""
    if not servers:
        yield lambda mode, server: None
        return
    with servers_restored() as use:
        yield use


@contextlib.contextmanager
def servers_restored() -> Iterator[Use]:
    """``use(mode, server)`` puts ``server`` behind ``mode`` (``lab server``); on leaving,
    every mode it changed gets its server from before back, whatever happened."""
    from lab.settings import LabSettings
    from lab.targets import ServerTarget, get_target, state

    cfg = LabSettings.from_env()
    target = get_target(state.current_target_name(cfg))
    before = dict[str, Any](target.status(cfg)).get("servers") or {}
    if not isinstance(target, ServerTarget) or not before:
        raise LabError(f"the lab at {cfg.url} cannot swap the servers behind its modes")
    current = {m: str(before[m]) for m in MODES if m in before}

    def use(mode: str, server: str) -> None:
        if current.get(mode) == server:
            return
        with state.exclusive(cfg, "server"):
            target.server(cfg, mode, server)
        current[mode] = server

    try:
        yield use
    finally:
        failed: list[str] = []
        for mode, server in before.items():
            try:
                use(mode, str(server))
            except LabError as exc:  # try the other modes too, then say what is left
                failed.append(
                    f"{mode} (put {server} back with `lab server {mode} {server}`: {exc})"
                )
        if failed:
            raise LabError("could not restore the servers of " + "; ".join(failed))


@contextlib.contextmanager
def server_swapped(mode: str, server: str) -> Iterator[None]:
    """The lab's ``mode`` route served by ``server`` for a while, then by the server it
    had before, whatever happens in between."""
    with servers_restored() as use:
        use(mode, server)
        yield
