"""What every suite shares: the one session ``lab`` fixture (tests/support/lab.py) and
the ``--mode`` option (the integration suite narrows its ``mode`` parameter to it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.lab import MODES, Lab, session_lab


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--mode", action="append", choices=MODES, help="run only these modes")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    yield from session_lab()
