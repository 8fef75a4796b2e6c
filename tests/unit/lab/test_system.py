"""lab.system: the /proc reader, service process groups, the port probe, on this host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gateway.system.cpus
from lab.system import processes, procfs
from lab.system.ports import first_free, port_free
from lab.system.procfs import (
    Proc,
    children,
    cpu_limit,
    parent_of,
    parse_cpu_model,
    read_proc,
    rows_from_json,
    rss_kib,
)
from lab.targets.switching import worker_counts

ROWS = [
    Proc(1, 0, 1, "S", "tini -- python -m gateway"),
    Proc(10, 1, 10, "S", "python -m gateway serve --mode wsgi"),
    Proc(11, 10, 10, "S", "python -m gateway serve --mode wsgi"),
    Proc(12, 10, 10, "Z", "python -m gateway serve --mode wsgi"),
    Proc(13, 10, 10, "R", "python -m gateway serve --mode wsgi"),
]


def test_family_helpers() -> None:
    assert children(ROWS, 10) == [11, 13]  # the zombie is not a live worker
    assert children(ROWS, 10, live_only=False) == [11, 12, 13]
    assert parent_of(ROWS, 11) == 10 and parent_of(ROWS, 99) is None
    assert worker_counts(ROWS, {"wsgi": [10], "asgi": []}) == {"wsgi": 2, "asgi": 0}


def test_rows_round_trip_through_json() -> None:
    assert rows_from_json(json.dumps([list(p) for p in ROWS])) == ROWS


def test_read_proc_sees_this_process_and_its_group() -> None:
    me = next(p for p in read_proc() if p.pid == __import__("os").getpid())
    assert me.state in "RS" and "python" in me.title


def test_the_module_source_runs_where_lab_is_not_installed(tmp_path: Path) -> None:
    """What the docker target does in a container: ``python3 -c SOURCE rows``."""
    run = subprocess.run(
        [sys.executable, "-I", "-c", procfs.source(), "rows"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert any(p.pid == 1 for p in rows_from_json(run.stdout))
    cpus = subprocess.run(
        [sys.executable, "-I", "-c", procfs.source(), "cpus"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert float(cpus.stdout) >= 0.01


@pytest.mark.parametrize(
    ("cgroup", "files", "cap"),
    [
        ("0::/lab/gw\n", {"lab/cpu.max": "max 100000"}, None),
        # v2: a quota on an ancestor of the process's own cgroup holds too.
        ("0::/lab/gw\n", {"lab/cpu.max": "50000 100000", "lab/gw/cpu.max": "max 100000"}, 0.5),
        # v1 (with the v2 line of a hybrid host): the cpu controller's hierarchy.
        (
            "4:cpu,cpuacct:/lab/gw\n0::/\n",
            {"cpu,cpuacct/lab/gw/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "1"}
            | {"cpu,cpuacct/lab/gw/cpu.cfs_period_us": "100000"},
            0.5,
        ),
        (
            "4:cpu:/lab\n",
            {"cpu/lab/cpu.cfs_quota_us": "-1", "cpu/lab/cpu.cfs_period_us": "1"},
            None,
        ),
    ],
)
def test_cpu_limit_takes_the_quota_of_the_process_cgroup(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cgroup: str,
    files: dict[str, str],
    cap: float | None,
) -> None:
    proc, sys_cgroup = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    for name, text in files.items():
        (sys_cgroup / name).parent.mkdir(parents=True, exist_ok=True)
        (sys_cgroup / name).write_text(text + "\n")
    monkeypatch.setattr(gateway.system.cpus, "CGROUP_ROOT", sys_cgroup)
    affinity = float(len(os.sched_getaffinity(0)))
    assert cpu_limit(0, proc) == (affinity if cap is None else min(affinity, cap))


def test_cpuinfo_parser_and_resident_memory() -> None:
    assert parse_cpu_model("processor\t: 0\nmodel name\t: Some CPU @ 2GHz\n") == "Some CPU @ 2GHz"
    assert parse_cpu_model("processor\t: 0\n") == ""
    assert rss_kib(os.getpid()) and rss_kib(os.getpid()) > 1000  # type: ignore[operator]


def test_group_cpu_seconds_counts_the_children_a_member_waited_for() -> None:
    """A group whose leader ran a CPU-burning child and waited for it: once the child
    is gone its CPU still counts (cutime); an idle group's does not grow."""
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    then = "import time; time.sleep(60)"
    program = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}]); {then}"
    busy, idle = (
        subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        for code in (program, then)
    )
    try:
        members = lambda: [p for p in read_proc() if p.pgrp == busy.pid]  # noqa: E731
        deadline = time.monotonic() + 30
        while (len(members()) > 1 or procfs.group_cpu_seconds(busy.pid) < 0.3) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert [p.pid for p in members()] == [busy.pid]  # the child has exited
        assert procfs.group_cpu_seconds(busy.pid) >= 0.3
        assert procfs.group_cpu_seconds(idle.pid) < 0.3
    finally:
        for proc in (busy, idle):
            proc.kill()
            proc.wait()


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_free(port)
        assert first_free([port], 1) is None
    assert port_free(port)


@pytest.fixture
def sleeper(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A service process group (the 'gateway' in its command line marks it as ours)."""
    proc = processes.spawn(
        [sys.executable, "-c", "import time; time.sleep(60)", "gateway-test"],
        tmp_path / "logs" / "sleeper.log",
        {},
    )
    yield proc.pid
    processes.signal_group(proc.pid, __import__("signal").SIGKILL)
    processes.wait_gone([proc.pid], 5)


def test_a_service_runs_in_its_own_group_and_stops_with_it(sleeper: int, tmp_path: Path) -> None:
    assert processes.group_alive(sleeper)
    assert any(p.pid == sleeper and p.pgrp == sleeper for p in read_proc())
    log = (tmp_path / "logs" / "sleeper.log").read_text()
    assert log.startswith(processes.START_MARKER)
    processes.stop_groups({"gateway-test": sleeper}, deadline_s=5, say=lambda _: None)
    assert not processes.group_alive(sleeper)


# A parent that never reaps: it starts a group leader (in a session of its own)
# that leaves one member behind and exits, then sleeps. The leader stays a
# zombie, as a killed nginx master does under an init that reaps late.
UNREAPED_LEADER = """
import subprocess, sys, time
leader = subprocess.Popen(["sh", "-c", "sleep 60 & exit 0"], start_new_session=True)
print(leader.pid, flush=True)
time.sleep(60)
"""


def test_a_group_whose_leader_is_an_unreaped_zombie_is_still_stopped() -> None:
    parent = subprocess.Popen([sys.executable, "-c", UNREAPED_LEADER], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        pgid = int(parent.stdout.readline())
        deadline = time.monotonic() + 5
        while next((p.state for p in read_proc() if p.pid == pgid), "Z") != "Z":
            assert time.monotonic() < deadline, "the leader never exited"
            time.sleep(0.02)
        leader = next(p for p in read_proc() if p.pid == pgid)
        assert leader.title == "" and processes.group_alive(pgid)  # the member lives on
        processes.stop_groups({"nginx": pgid}, deadline_s=5, say=lambda _: None)
        assert not processes.group_alive(pgid)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()  # type: ignore[union-attr]


def test_freeze_and_thaw(sleeper: int) -> None:
    processes.freeze(sleeper)
    deadline = time.monotonic() + 5
    while next(p.state for p in read_proc() if p.pid == sleeper) != "T":
        assert time.monotonic() < deadline, "never stopped"
        time.sleep(0.02)
    processes.thaw(sleeper)
    while next(p.state for p in read_proc() if p.pid == sleeper) == "T":
        assert time.monotonic() < deadline, "never continued"
        time.sleep(0.02)


def test_kill_group_works_on_a_frozen_group(sleeper: int) -> None:
    processes.freeze(sleeper)
    assert processes.kill_group(sleeper, 5)
    processes.reap(sleeper)
    assert not processes.group_alive(sleeper)


def test_wait_healthy_names_a_service_that_exits(tmp_path: Path) -> None:
    proc = processes.spawn([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "x.log", {})
    with pytest.raises(processes.StartFailed, match="gateway-x exited during start-up"):
        processes.wait_healthy({"gateway-x": (proc.pid, "http://127.0.0.1:1/healthz")}, 10)


def test_wait_healthy_gives_up_after_its_deadline(sleeper: int) -> None:
    with pytest.raises(processes.StartFailed, match="did not answer"):
        processes.wait_healthy({"gateway-test": (sleeper, "http://127.0.0.1:1/healthz")}, 0.3)


def test_group_switches_counts_the_waits_of_every_thread_in_the_group() -> None:
    """A group whose two threads (both still alive) slept 100 times each has switched
    voluntarily at least 200 times; another group, asleep in one wait, has not."""
    naps = (
        "import threading, time\n"
        "naps = lambda: [time.sleep(0.001) for _ in range(100)]\n"
        "done = threading.Event()\n"
        "def other(): naps(); done.set(); time.sleep(60)\n"
        "threading.Thread(target=other, daemon=True).start(); naps(); done.wait()\n"
        "print('done', flush=True); time.sleep(60)"
    )
    napping, idle = (
        subprocess.Popen(
            [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True
        )
        for code in (naps, "import time; time.sleep(60)")
    )
    try:
        assert napping.stdout is not None and napping.stdout.readline() == "done\n"
        voluntary, involuntary = procfs.group_switches(napping.pid)
        assert voluntary >= 200 and involuntary >= 0
        assert procfs.group_switches(idle.pid)[0] < 50
        assert procfs.group_switches(-1) == (0, 0)  # no such group
    finally:
        for proc in (napping, idle):
            proc.kill()
            proc.communicate()
