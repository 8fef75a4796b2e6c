"""The integration suite through nginx: every test is marked ``integration``; the
``lab`` fixture (tests/conftest.py) gives the stack, ``mode`` each mode in turn, and in
modules marked ``every_server`` each (mode, server) pair in turn (`lab server`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from gateway.servers.registry import SERVERS, default_server
from tests.support.lab import MODES, SERVING, Lab, use_server


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
        "every_server: the module's `mode` tests run once per (mode, server) pair (`lab server`)",
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mode" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("every_server") is None:
        metafunc.parametrize("mode", metafunc.config.getoption("mode") or MODES)
        return
    # Module scope: pytest runs a module's tests grouped by pair and tears the
    # pair down (back to the default server) before the next pair and at the
    # module's end, so every other module sees the default servers.
    pairs = server_pairs(metafunc.config)
    ids = [f"{m}-{s}" for m, s in pairs]
    metafunc.parametrize("mode", pairs, indirect=True, ids=ids, scope="module")


@pytest.fixture(scope="module")
def mode(request: pytest.FixtureRequest, lab: Lab) -> Iterator[str]:
    """every_server modules: the mode of the pair, with the pair's server behind it."""
    name, server = request.param
    default = default_server(name)
    if server != default:
        use_server(name, server)
    try:
        yield name
    finally:
        if server != default:
            use_server(name, default)


@pytest.fixture
def server(mode: str) -> str:
    """The server behind ``mode`` for this test (X-Gateway-Server)."""
    return SERVING.get(mode) or default_server(mode)


@pytest.fixture
def base(mode: str) -> str:
    """The mount point of one mode, e.g. "/wsgi"."""
    return f"/{mode}"
