"""The integration suite through nginx: every test is marked ``integration``; the
``lab`` fixture (tests/conftest.py) gives the stack, ``mode`` each mode in turn, and in
modules marked ``every_server`` each (mode, server) pair in turn (`lab server`).

In every_server modules two markers narrow the pairs a test runs for, in the
parametrization itself (a pair left out is not collected, never skipped):
``servers("asgi", "cgi/runner")`` names the modes or pairs the test is about,
and ``direct`` marks a test that talks to the gateway itself: a server that
speaks no HTTP (tests.support.endpoints.DIRECT_EXCLUSIONS says which and why)
has nothing to answer raw HTTP with. ``endpoints`` gives the mode's mount point
through nginx and its gateway (``gateways``: the gateway alone).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from gateway.servers.registry import SERVERS, default_server
from tests.support.endpoints import DIRECT_EXCLUSIONS, Endpoint, mode_endpoints
from tests.support.lab import (
    MODES,
    SERVING,
    Lab,
    forget_status,
    status_since_swap,
    use_server,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--server",
        action="append",
        metavar="MODE/SERVER",
        help="modules marked every_server: run only these (mode, server) pairs, e.g. wsgi/gthread",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "every_server(targets=...): the module's `mode` tests run once per (mode, server) pair "
        "(`lab server`); on targets outside `targets` (default: all), the default servers only",
    )
    config.addinivalue_line(
        "markers",
        "servers(*names): in every_server modules, only these modes or MODE/SERVER pairs",
    )
    config.addinivalue_line(
        "markers",
        "direct: talks to the gateway itself; not run for servers that speak no HTTP",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


def server_pairs(config: pytest.Config) -> list[tuple[str, str]]:
    """(mode, server) pairs for every_server modules: all of them, or --server's.

    A lab someone else runs (LAB_URL) is not ours to swap servers on: its defaults only.
    """
    modes = config.getoption("mode") or MODES
    wanted = config.getoption("server")
    pairs = [(m, s) for m in modes for s in SERVERS[m]]
    if os.environ.get("LAB_URL"):
        return [(m, default_server(m)) for m in modes]
    if wanted:
        unknown = set(wanted) - {f"{m}/{s}" for m, s in pairs}
        if unknown:
            raise pytest.UsageError(f"--server: no such pair {sorted(unknown)}: {pairs}")
        return [(m, s) for m, s in pairs if f"{m}/{s}" in wanted]
    return pairs


def applicable_pairs(item: pytest.Item, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``pairs`` narrowed by the test's ``servers`` and ``direct`` markers."""
    if (only := item.get_closest_marker("servers")) is not None:
        pairs = [(m, s) for m, s in pairs if m in only.args or f"{m}/{s}" in only.args]
    if item.get_closest_marker("direct") is not None:
        pairs = [p for p in pairs if p not in DIRECT_EXCLUSIONS]
    return pairs


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mode" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("every_server") is None:
        metafunc.parametrize("mode", metafunc.config.getoption("mode") or MODES)
        return
    # Module scope: pytest runs a module's tests grouped by pair and tears the
    # pair down (back to the default server) before the next pair and at the
    # module's end, so every other module sees the default servers.
    marker = metafunc.definition.get_closest_marker("every_server")
    pairs = server_pairs(metafunc.config)
    targets = marker.kwargs.get("targets") if marker is not None else None
    if targets is not None and os.environ.get("LAB_TARGET", "native") not in targets:
        pairs = [(m, s) for m, s in pairs if s == default_server(m)]
    pairs = applicable_pairs(metafunc.definition, pairs)
    ids = [f"{m}-{s}" for m, s in pairs]
    metafunc.parametrize("mode", pairs, indirect=True, ids=ids, scope="module")


@pytest.fixture(scope="module")
def mode(request: pytest.FixtureRequest, lab: Lab) -> Iterator[str]:
    """every_server modules: the mode of the pair, with the pair's server behind it."""
    name, server = request.param
    default = default_server(name)
    # What actually runs, not what the suite assumes: `lab up` starts the server
    # the last `lab server` recorded, which need not be the default.
    running = None
    if lab.target != "external":
        running = SERVING.get(name) or (status_since_swap().get("servers") or {}).get(name)
    swap = server != (running or default)
    if swap:
        use_server(name, server)
    try:
        yield name
    finally:
        if swap or server != default:
            use_server(name, default)


@pytest.fixture
def server(mode: str) -> str:
    """The server behind ``mode`` for this test (X-Gateway-Server)."""
    return SERVING.get(mode) or default_server(mode)


@pytest.fixture
def base(mode: str) -> str:
    """The mount point of one mode, e.g. "/wsgi"."""
    return f"/{mode}"


@pytest.fixture(scope="module", autouse=True)
def fresh_status() -> None:
    """Each module reads ``lab status`` anew the first time it asks (status_since_swap)."""
    forget_status()


@pytest.fixture(scope="module")
def lab_gateways(lab: Lab, mode: str) -> dict[str, str]:
    """``gateways`` of ``lab status --json`` (native: each HTTP gateway's address), read
    again for every pair: a new server listens on a new port."""
    if lab.target != "native":
        return {}
    found = status_since_swap().get("gateways") or {}
    assert isinstance(found, dict)
    return found


@pytest.fixture
def endpoints(lab: Lab, mode: str, server: str, lab_gateways: dict[str, str]) -> list[Endpoint]:
    """The mode through nginx, and its gateway where this run reaches it (relayed under Docker)."""
    compose: list[str] = []
    if lab.target == "docker":
        from lab.targets.docker.compose import compose_args

        compose = compose_args()
    return mode_endpoints(lab.url, lab.target, mode, server, lab_gateways, compose)


@pytest.fixture
def gateways(lab: Lab, endpoints: list[Endpoint], mode: str, server: str) -> list[Endpoint]:
    """The mode's gateway alone (tests marked ``direct``)."""
    direct = [e for e in endpoints if e.direct]
    if not direct:
        if lab.target == "external":
            pytest.skip("LAB_URL: only nginx is reachable in a lab this run does not manage")
        pytest.fail(f"no direct endpoint for {mode}/{server} on the {lab.target} target")
    return direct
