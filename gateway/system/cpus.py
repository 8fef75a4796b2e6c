"""How many CPUs this process may really use.

``os.cpu_count()`` is the machine's count. Inside a container limited with
``cpus: 1.0`` it still says 8 on an 8-core laptop, and ``2 x cores + 1`` would
start 17 sync workers that share one CPU. The count that matters is the
smaller of:

* the scheduler affinity mask (``sched_getaffinity``: taskset, cpusets,
  ``docker run --cpuset-cpus``), and
* the CFS bandwidth quota of the process's cgroup, ``quota / period``
  rounded up: ``cpu.max`` in cgroup v2 ("max 100000" or "150000 100000"),
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in cgroup v1 (quota -1 means
  none). Every ancestor cgroup may carry a quota; the tightest one wins.

The parsers are pure (they take file contents); :func:`available_cpus` reads
the files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from gateway.numbers import parse_digits

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max``: "$MAX $PERIOD" -> CPUs, or None for "max" (no quota)."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    quota, period = parse_digits(fields[0]), parse_digits(fields[1])
    return quota / period if quota and period else None  # 0: no quota either


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` -> CPUs, or None (-1: no quota)."""
    quota, period = parse_digits(quota_text.strip()), parse_digits(period_text.strip())
    return quota / period if quota and period else None  # 0: no quota either


def cgroup_paths(proc_self_cgroup: str) -> dict[str, str]:
    """``/proc/self/cgroup`` -> {controller: path}; the v2 unified line has the key ""."""
    paths: dict[str, str] = {}
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def cpu_quota(read: Callable[[Path], str | None], proc_self_cgroup: str) -> float | None:
    """The tightest CFS quota, in CPUs, along the process's cgroup and its ancestors.

    ``read(path)`` returns a file's text or None when it does not exist.
    Inside a container the cgroup namespace makes the own cgroup appear as
    "/" and its files sit at the mount root, so "/" is always looked at too.
    """
    paths = cgroup_paths(proc_self_cgroup)
    found: list[float] = []
    v1 = paths.get("cpu")
    v2 = paths.get("")
    if v1 is not None:
        roots = (CGROUP_ROOT / "cpu", CGROUP_ROOT / "cpu,cpuacct")
        for directory in [d for root in roots for d in _ancestors(root, v1)]:
            quota = read(directory / "cpu.cfs_quota_us")
            period = read(directory / "cpu.cfs_period_us")
            if quota is not None and period is not None:
                cpus = parse_cfs(quota, period)
                if cpus is not None:
                    found.append(cpus)
    elif v2 is not None:
        for directory in _ancestors(CGROUP_ROOT, v2):
            text = read(directory / "cpu.max")
            if text is not None:
                cpus = parse_cpu_max(text)
                if cpus is not None:
                    found.append(cpus)
    return min(found) if found else None


def whole_cpus(limit: float) -> int:
    """A CPU limit (1.5 CPUs of quota) as whole cores for a worker count: rounded up,
    at least 1 (a fraction of a core still runs a worker)."""
    return max(1, math.ceil(limit))


def usable_cpus(affinity: int, quota: float | None) -> int:
    """min(affinity, ceil(quota)), at least 1: the count ``2 x cores + 1`` is about."""
    return whole_cpus(float(affinity) if quota is None else min(float(affinity), quota))


def available_cpus() -> int:
    """The CPUs this process may use (affinity mask and cgroup quota); at least 1."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: no affinity call
        affinity = os.cpu_count() or 1
    proc_self_cgroup = _read(Path("/proc/self/cgroup")) or ""
    return usable_cpus(affinity, cpu_quota(_read, proc_self_cgroup))


def _ancestors(root: Path, cgroup: str) -> list[Path]:
    """``root/a/b``, ``root/a``, ``root``: a quota set on any ancestor applies too."""
    parts = [p for p in cgroup.split("/") if p]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
