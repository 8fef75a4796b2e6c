"""gateway.system.cpus: the CPUs a process may use, from recorded cgroup trees of both
versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import default_workers
from gateway.system import cpus

CASES = Path(__file__).parent / "cgroup_cases"


def recorded_reader(case: str):  # type: ignore[no-untyped-def]
    """A ``read(path)`` that serves /sys/fs/cgroup/... from a recorded tree."""
    root = CASES / case

    def read(path: Path) -> str | None:
        local = root / str(path).lstrip("/")
        return local.read_text() if local.is_file() else None

    return read


def recorded_quota(case: str) -> float | None:
    proc_self_cgroup = (CASES / case / "proc_self_cgroup").read_text()
    return cpus.cpu_quota(recorded_reader(case), proc_self_cgroup)


@pytest.mark.parametrize(
    ("case", "quota"),
    [
        pytest.param("v2-container", 1.0, id="v2-container-cpus-1"),
        pytest.param("v2-nested", 1.5, id="v2-parent-slice-quota-wins"),
        pytest.param("v1-container", 0.5, id="v1-container-cpus-0.5"),
        pytest.param("v1-unlimited", None, id="v1-no-quota"),
    ],
)
def test_quota_from_recorded_cgroups(case: str, quota: float | None) -> None:
    assert recorded_quota(case) == quota


@pytest.mark.parametrize(
    ("affinity", "quota", "expected"),
    [
        (8, 1.0, 1),  # an 8-core laptop, a container with cpus: 1.0
        (8, 1.5, 2),  # rounded up
        (8, 0.5, 1),  # at least one
        (2, None, 2),  # no quota: the affinity mask
        (2, 6.0, 2),  # a quota above the mask does not add CPUs
        (0, None, 1),
    ],
)
def test_usable_cpus(affinity: int, quota: float | None, expected: int) -> None:
    assert cpus.usable_cpus(affinity, quota) == expected

    # The lab counts a container's workers from its limit with the same rounding.
    limit = float(affinity) if quota is None else min(float(affinity), quota)
    assert cpus.whole_cpus(limit) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max 100000", None),
        ("200000 100000\n", 2.0),
        ("50000 100000", 0.5),
        ("garbage", None),
        ("²00000 100000", None),  # str.isdigit() is true for '²'; int() is not
        ("0 100000", None),
    ],
)
def test_parse_cpu_max(text: str, expected: float | None) -> None:
    assert cpus.parse_cpu_max(text) == expected


@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [("-1", "100000", None), ("100000", "100000", 1.0), ("250000\n", "100000\n", 2.5)],
)
def test_parse_cfs(quota: str, period: str, expected: float | None) -> None:
    assert cpus.parse_cfs(quota, period) == expected


def test_cgroup_paths_v1_and_v2_lines() -> None:
    text = (CASES / "v1-container" / "proc_self_cgroup").read_text()
    paths = cpus.cgroup_paths(text)
    assert paths["cpu"] == paths["cpuacct"] == "/docker/3f1c0a"
    assert paths[""] == "/"


def test_worker_defaults_follow_a_one_cpu_container() -> None:
    """The docs' ``2 x cores + 1`` with the container's 1 CPU: 3 sync workers, 1 event loop."""
    cores = cpus.usable_cpus(8, recorded_quota("v2-container"))
    assert default_workers("wsgi", cores) == 3
    assert default_workers("asgi", cores) == 1
    assert default_workers("cgi", cores) == 1


def test_available_cpus_on_this_machine_is_within_the_affinity_mask() -> None:
    import os

    assert 1 <= cpus.available_cpus() <= len(os.sched_getaffinity(0))
