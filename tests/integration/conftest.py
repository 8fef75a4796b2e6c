"""The integration suite through nginx: every test is marked ``integration``; the
``lab`` fixture (tests/conftest.py) gives the stack, ``mode`` each mode in turn."""

from __future__ import annotations

import pytest

from tests.support.lab import MODES


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mode" in metafunc.fixturenames:
        modes = metafunc.config.getoption("mode") or MODES
        metafunc.parametrize("mode", modes)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture
def base(mode: str) -> str:
    """The mount point of one mode, e.g. "/wsgi"."""
    return f"/{mode}"
