"""The modes and the one grammar for what serves ``/``: a mode, or a weighted split.

Pure and standard library only (it ships into the nginx image with the
renderer). Every caller parses here: ``lab switch``/``split``/``scale``, the
renderer's CLI, the marker line of ``active_mode.conf``, and the docker
target's ``lab-nginx mode`` output. Numbers are ASCII digits only
(``NUMBER_RE``): ``str.isdigit()`` accepts ``"¹⁰⁰"``, which ``int()`` then
rejects with a bare ValueError, so it is never used here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

# The same names as gateway.config.MODES (tests/unit/lab/test_routing.py checks it);
# not imported from there, since this module must run without the gateway package.
MODES: Final = ("cgi", "wsgi", "asgi")
DEFAULT_MODE: Final = "wsgi"
# Eight replicas per mode: enough to watch nginx spread requests on a laptop, and
# the native port scheme (replica_port) has room for them.
MAX_REPLICAS: Final = 8
# Native replicas beyond the first listen at LAB_PORT + REPLICA_PORT_STEP * k + i.
REPLICA_PORT_STEP: Final = 10
NUMBER_RE: Final = re.compile(r"[0-9]+")  # ASCII only: re's \d, like isdigit, is Unicode

# A split of "/": mode -> whole percent, in the order given.
Split = dict[str, int]
# What serves "/": a plain mode, or a split.
Active = str | Split


class RenderError(ValueError):
    """A bad mode, split, value or template; the message says which."""


def check_mode(mode: str) -> str:
    """``mode`` if it is one of MODES, else RenderError."""
    if mode not in MODES:
        raise RenderError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


def whole_number(text: str) -> int | None:
    """``"42"`` -> 42; None unless ``text`` is ASCII digits only (no sign, no space)."""
    return int(text) if NUMBER_RE.fullmatch(text) else None


def parse_split(text: str) -> Split:
    """``"wsgi=90,asgi=10"`` -> ``{"wsgi": 90, "asgi": 10}``.

    Whole percents, each 1..100, summing to exactly 100: nginx's split_clients
    takes percentages, and normalising "wsgi=9,asgi=1" would hide a typo.
    RenderError names the bad part.
    """
    split: Split = {}
    for part in (p.strip() for p in text.split(",")):
        name, sep, weight_text = (s.strip() for s in part.partition("="))
        if not sep:
            raise RenderError(f"bad weight {part!r}: write MODE=PERCENT, e.g. wsgi=90,asgi=10")
        weight = whole_number(weight_text)
        if weight is None:
            raise RenderError(
                f"bad weight {part!r}: write MODE=PERCENT with a whole number, e.g. wsgi=90,asgi=10"
            )
        check_mode(name)
        if name in split:
            raise RenderError(f"mode {name} appears twice in {text!r}")
        if not 1 <= weight <= 100:
            raise RenderError(
                f"weight of {name} must be 1..100 (leave a mode out for 0), not {weight}"
            )
        split[name] = weight
    if (total := sum(split.values())) != 100:
        raise RenderError(f"weights must sum to 100 (percent), not {total}: {text!r}")
    return split


def format_split(split: Mapping[str, int]) -> str:
    """The label of a split, in ``lab split`` syntax: ``wsgi=90,asgi=10``."""
    return ",".join(f"{m}={w}" for m, w in split.items())


def parse_active(text: str) -> Active:
    """``"asgi"`` -> ``"asgi"``; ``"wsgi=90,asgi=10"`` -> the split. RenderError otherwise."""
    text = text.strip()
    return parse_split(text) if "=" in text else check_mode(text)


def active_label(active: Active | None) -> str | None:
    """``active_mode`` of ``lab status``: the mode, or the split's label while one is active."""
    return active if active is None or isinstance(active, str) else format_split(active)


def check_replicas(replicas: int) -> int:
    if not 1 <= replicas <= MAX_REPLICAS:
        raise RenderError(f"replicas must be between 1 and {MAX_REPLICAS}, not {replicas}")
    return replicas


def parse_replicas(text: str) -> int:
    """``"3"`` -> 3: a whole number 1..MAX_REPLICAS, else RenderError."""
    replicas = whole_number(text.strip())
    if replicas is None:
        raise RenderError(f"replicas must be a whole number 1..{MAX_REPLICAS}, not {text!r}")
    return check_replicas(replicas)


def gateway_ports(nginx_port: int) -> dict[str, int]:
    """Native gateways listen just above nginx: 8080 -> cgi 8081, wsgi 8082, asgi 8083.

    Deriving them from LAB_PORT lets two native labs share a machine.
    """
    return {mode: nginx_port + 1 + i for i, mode in enumerate(MODES)}


def replica_port(nginx_port: int, mode: str, index: int) -> int:
    """Native: the port of replica ``index`` (0-based) of ``mode``'s gateway.

    Replica 0 is the gateway ``lab up`` starts, on LAB_PORT+1..+3
    (``gateway_ports``). Replica i >= 1 of the k-th mode (cgi 1, wsgi 2,
    asgi 3) listens on LAB_PORT + 10*k + i: for 8080, cgi 8091-8097, wsgi
    8101-8107, asgi 8111-8117. These never meet the base ports; two native labs
    on one machine need LAB_PORTs at least 40 apart.
    """
    check_mode(mode)
    if not 0 <= index < MAX_REPLICAS:
        raise RenderError(f"replica index must be 0..{MAX_REPLICAS - 1}, not {index}")
    if index == 0:
        return gateway_ports(nginx_port)[mode]
    return nginx_port + REPLICA_PORT_STEP * (MODES.index(mode) + 1) + index
