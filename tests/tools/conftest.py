"""The workshop tools against a live lab: the session ``lab`` fixture (tests/conftest.py).

LAB_URL points at a running lab; otherwise a lab on 127.0.0.1:$LAB_PORT is
reused, or started with `lab up` and stopped after (tests/support/lab.py).
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/tools/" in item.nodeid:
            item.add_marker(pytest.mark.tools)
