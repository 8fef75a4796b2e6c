"""The one /proc reader (Linux): every process's pid, parent, group, state and title,
a process group's CPU time and context switches, a process's resident memory,
the CPU model, and the CPUs a process may use.

Runnable as a script: the docker target runs this file's own source inside a
container (``python3 -c SOURCE rows``), so the host and the containers answer
the same question with the same code. Besides the standard library it needs
``gateway.system`` (the one stat parser and the one CPU count: cgroup v1 and
v2, the process's own cgroup and its ancestors), which every image has on its
path, the nginx image too (nginx/Dockerfile).

    python3 procfs.py rows           # JSON list of [pid, ppid, pgrp, state, title]
    python3 procfs.py cpus [PID]     # CPUs PID (default: this process) may use
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from gateway.system.cpus import cpu_quota
from gateway.system.procstat import stat_fields, status_kib


class Proc(NamedTuple):
    pid: int
    ppid: int
    pgrp: int
    state: str  # "R", "S", "Z", "T", ...
    title: str  # the command line, NULs as spaces (a process may rename itself)


def _stats(root: Path | None) -> Iterator[tuple[Path, list[str]]]:
    """(/proc/PID, its ``stat_fields``) of every process; those that vanish while
    being read, or whose stat has no state, parent and group, are skipped."""
    for stat in (root or Path("/proc")).glob("[0-9]*/stat"):
        try:
            fields = stat_fields(stat.read_text())
        except OSError:
            continue
        if len(fields) >= 3:
            yield stat.parent, fields


def read_proc(root: Path | None = None) -> list[Proc]:
    """Every process /proc lists; processes that vanish while being read are skipped."""
    rows = []
    for proc, fields in _stats(root):
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            rows.append(Proc(int(proc.name), int(fields[1]), int(fields[2]), fields[0], title))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
    return rows


def has_proc(root: Path | None = None) -> bool:
    return ((root or Path("/proc")) / "self" / "stat").exists()


def group_states(rows: Iterable[Proc], pgid: int) -> list[str]:
    """States of the members of process group ``pgid``."""
    return [p.state for p in rows if p.pgrp == pgid]


def children(rows: Iterable[Proc], parent: int, *, live_only: bool = True) -> list[int]:
    """Pids whose parent is ``parent`` (zombies left out unless ``live_only`` is false)."""
    return sorted(p.pid for p in rows if p.ppid == parent and (p.state != "Z" or not live_only))


def parent_of(rows: Iterable[Proc], pid: int) -> int | None:
    return next((p.ppid for p in rows if p.pid == pid), None)


def _group_stats(pgid: int, root: Path | None) -> Iterator[tuple[Path, list[str]]]:
    """(/proc/PID, its ``stat_fields``, through cstime) of each member of group ``pgid``."""
    return (
        (proc, fields)
        for proc, fields in _stats(root)
        if len(fields) > 14 and fields[2] == str(pgid)
    )


def group_cpu_seconds(pgid: int, root: Path | None = None) -> float:
    """CPU time (user + system) process group ``pgid`` has used: its members' own and
    that of the children they waited for (a CGI runner's scripts), from /proc/PID/stat
    (proc(5): fields 14-17, utime stime cutime cstime, in clock ticks)."""
    ticks = sum(sum(int(f) for f in fields[11:15]) for _, fields in _group_stats(pgid, root))
    return ticks / os.sysconf("SC_CLK_TCK")


def group_switches(pgid: int, root: Path | None = None) -> tuple[int, int]:
    """Context switches of process group ``pgid``'s live threads so far: (voluntary,
    involuntary), summed over /proc/PID/task/TID/status (proc(5)). Voluntary: the
    thread waited (for input, a lock, a timer); involuntary: it could have run on
    and the scheduler gave its CPU to another task (a busy server on shared cores
    is switched out when the processes it wakes get the CPU)."""
    voluntary = involuntary = 0
    for member, _ in _group_stats(pgid, root):
        for status in (member / "task").glob("[0-9]*/status"):
            try:
                lines = status.read_text().splitlines()
            except OSError:
                continue  # the thread ended
            for line in lines:
                name, _, value = line.partition(":")
                if name == "voluntary_ctxt_switches":
                    voluntary += int(value)
                elif name == "nonvoluntary_ctxt_switches":
                    involuntary += int(value)
    return voluntary, involuntary


def source() -> str:
    """This module's text, to run with ``python3 -c`` where the lab package is not installed."""
    return Path(__file__).read_text(encoding="utf-8")


def rss_kib(pid: int, root: Path | None = None) -> int | None:
    """Resident memory of ``pid`` in KiB (``VmRSS``); None when it is gone or has none
    (a zombie, a kernel thread)."""
    text = _read((root or Path("/proc")) / str(pid) / "status")
    return status_kib(text, "VmRSS") if text is not None else None


def parse_cpu_model(cpuinfo: str) -> str:
    """``/proc/cpuinfo`` -> the first ``model name`` ("" when it names none, as on arm64)."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name":
            return value.strip()
    return ""


def cpu_model(root: Path | None = None) -> str:
    """This machine's CPU model ("" when /proc does not say)."""
    return parse_cpu_model(_read((root or Path("/proc")) / "cpuinfo") or "")


def limit_of(affinity: int, quota: float | None) -> float:
    """CPUs from an affinity count and a cgroup quota in CPUs (None: none): the smaller."""
    return float(affinity) if quota is None else min(float(affinity), quota)


def cpu_limit(pid: int = 0, root: Path | None = None) -> float:
    """CPUs ``pid`` (0: this process) may use: its affinity mask, capped by the tightest
    CFS quota of its cgroup and their ancestors, v1 or v2 (``gateway.system.cpus``,
    the gateway's own count, which rounds this up)."""
    cgroup = _read((root or Path("/proc")) / (str(pid) if pid else "self") / "cgroup") or ""
    return limit_of(len(os.sched_getaffinity(pid)), cpu_quota(_read, cgroup))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def main(argv: list[str]) -> int:
    if argv[:1] == ["rows"]:
        print(json.dumps([list(p) for p in read_proc()]))
        return 0
    if argv[:1] == ["cpus"] and len(argv) <= 2:
        print(json.dumps(cpu_limit(int(argv[1]) if len(argv) == 2 else 0)))
        return 0
    print("usage: procfs.py rows | cpus [PID]", file=sys.stderr)
    return 2


def rows_from_json(text: str) -> list[Proc]:
    """The output of ``procfs.py rows`` back as Procs."""
    return [Proc(int(a), int(b), int(c), str(d), str(e)) for a, b, c, d, e in json.loads(text)]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
