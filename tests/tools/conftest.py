"""The workshop tools against a live lab: the integration suite's `lab` fixture.

LAB_URL points at a running lab; otherwise a lab on 127.0.0.1:$LAB_PORT is
reused, or started with `lab up` and stopped after (tests/integration/conftest.py).
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import Lab, lab

__all__ = ["Lab", "lab"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/tools/" in item.nodeid:
            item.add_marker(pytest.mark.tools)
