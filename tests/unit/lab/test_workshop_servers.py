"""--servers of the workshop tools: parsing, naming, and the swap-and-restore helper.

The helper runs against a recording target (no lab): what matters is which
swaps it asks for, in which order, and that the servers from before come back
on an error and on Ctrl-C.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.servers.registry import SERVERS, default_server
from lab.errors import LabError, UsageError
from lab.routing import MODES
from lab.workshop import servers as ws
from lab.workshop.charts import series_of


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wsgi/sync,wsgi/gthread", [("wsgi", "sync"), ("wsgi", "gthread")]),
        (" cgi/fcgiwrap , asgi/uvicorn ", [("cgi", "fcgiwrap"), ("asgi", "uvicorn")]),
        ("wsgi/uwsgi", [("wsgi", "uwsgi")]),
    ],
)
def test_parse_servers(text: str, expected: list[tuple[str, str]]) -> None:
    assert ws.parse_servers(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "MODE/SERVER pairs"),
        ("wsgi/sync,", "MODE/SERVER pairs"),
        ("wsgi", "is not MODE/SERVER"),
        ("wsgi/", "is not MODE/SERVER"),
        ("/sync", "is not MODE/SERVER"),
        ("php/sync", "unknown mode 'php'"),
        ("wsgi/nope", "unknown server 'nope' for wsgi"),
        ("cgi/gthread", "unknown server 'gthread' for cgi"),
        ("wsgi/sync,wsgi/sync", "listed twice"),
    ],
)
def test_parse_servers_refuses_in_one_line(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says) as caught:
        ws.parse_servers(text)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)


def test_every_pair_parses_and_defaults_come_first() -> None:
    pairs = ws.all_pairs()
    assert ws.parse_servers(",".join(ws.label(m, s) for m, s in pairs)) == pairs
    assert [s for m, s in pairs if m == "wsgi"][0] == default_server("wsgi")
    assert len(pairs) == sum(len(SERVERS[m]) for m in MODES)


def test_series_of_rows_keeps_mode_and_server_apart() -> None:
    rows = [
        {"mode": "wsgi", "server": "sync"},
        {"mode": "wsgi", "server": "gthread"},
        {"mode": "wsgi", "server": "sync"},
        {"mode": "asgi"},
    ]
    assert series_of(rows) == [("wsgi", "sync"), ("wsgi", "gthread"), ("asgi", "")]
    assert ws.series_label("wsgi", "gthread") == "WSGI gthread"
    assert ws.series_label("asgi", "") == "ASGI"


class Target:
    """A lab that records swaps; ``fail_on`` makes one swap raise."""

    name = "native"

    def __init__(self, fail_on: tuple[str, str] | None = None) -> None:
        self.servers = {m: default_server(m) for m in MODES}
        self.swaps: list[tuple[str, str]] = []
        self.fail_on = fail_on

    def status(self, cfg: Any) -> dict[str, Any]:
        return {"servers": dict(self.servers)}

    def server(self, cfg: Any, mode: str, server: str) -> None:
        if (mode, server) == self.fail_on:
            raise LabError(f"{mode} stays on {self.servers[mode]}: {server} did not start")
        self.swaps.append((mode, server))
        self.servers[mode] = server


@pytest.fixture
def target(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Target:
    from lab import targets

    lab = Target()
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LAB_TARGET", "native")
    monkeypatch.setattr(targets, "get_target", lambda name: lab)
    monkeypatch.setattr(targets, "ServerTarget", Target)
    return lab


def test_servers_in_turn_then_the_old_ones_back(target: Target) -> None:
    with ws.servers_restored() as use:
        for mode, server in ws.parse_servers("wsgi/sync,wsgi/gthread,wsgi/uwsgi,asgi/uvicorn"):
            use(mode, server)
    # sync is in force already: no swap for it; the end puts wsgi and asgi back.
    assert target.swaps == [
        ("wsgi", "gthread"),
        ("wsgi", "uwsgi"),
        ("asgi", "uvicorn"),
        ("wsgi", "sync"),
        ("asgi", "gunicorn"),
    ]
    assert target.servers == {m: default_server(m) for m in MODES}


@pytest.mark.parametrize("raised", [RuntimeError("a cell broke"), KeyboardInterrupt()])
def test_the_old_servers_come_back_on_an_error_and_on_ctrl_c(
    target: Target, raised: BaseException
) -> None:
    with pytest.raises(type(raised)), ws.servers_restored() as use:
        use("cgi", "fcgiwrap")
        raise raised
    assert target.servers == {m: default_server(m) for m in MODES}
    assert target.swaps[-1] == ("cgi", "runner")


def test_a_swap_that_fails_still_restores_what_was_changed(target: Target) -> None:
    target.fail_on = ("asgi", "uvicorn")
    with pytest.raises(LabError, match="did not start"), ws.servers_restored() as use:
        use("wsgi", "gthread")
        use("asgi", "uvicorn")
    assert target.servers == {m: default_server(m) for m in MODES}


def test_server_swapped_is_one_swap_and_back(target: Target) -> None:
    with ws.server_swapped("cgi", "fcgiwrap"):
        assert target.servers["cgi"] == "fcgiwrap"
    assert target.swaps == [("cgi", "fcgiwrap"), ("cgi", "runner")]


def test_without_servers_nothing_is_swapped(target: Target) -> None:
    with ws.swapping(None) as use:
        use("wsgi", "gthread")
    assert target.swaps == []
