"""The CGI runner with real processes: tests/unit/cgi_scripts/fixture_app.py.

PATH_INFO picks what the fixture script does (see BEHAVIOURS there).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.cgi.response import parse_cgi_response
from gateway.cgi.runner import (
    BASE_ENVIRONMENT,
    CGIBodyTimeout,
    CGIBusy,
    CGILimits,
    CGIOutputTooLarge,
    CGIProcess,
    CGISpawnError,
    CGITimeout,
    ScriptSlots,
    run_cgi,
)

SCRIPTS = Path(__file__).parent / "cgi_scripts"
APP = SCRIPTS / "fixture_app.py"


def meta(path: str, **extra: str) -> dict[str, str]:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", **extra}


def body_json(stdout: bytes) -> Any:
    return json.loads(parse_cgi_response(stdout).body)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def test_environment_is_the_meta_variables_only() -> None:
    result = run_cgi(APP, meta("/env", HTTP_X_FOO="bar"))
    info = body_json(result.stdout)
    assert info["env"] == {**BASE_ENVIRONMENT, **meta("/env", HTTP_X_FOO="bar")}
    assert info["cwd"] == str(SCRIPTS)  # RFC 3875 §7.2
    assert info["argv"] == [str(APP)]  # RFC 3875 §4.4: no search words
    assert info["pid"] == result.pid
    assert result.exit_code == 0
    assert result.start <= result.end


def test_native_strings_reach_the_script_as_the_original_bytes() -> None:
    info = body_json(run_cgi(APP, meta("/env", HTTP_X_NAME="caf\xc3\xa9")).stdout)
    assert info["env"]["HTTP_X_NAME"] == "café"  # UTF-8 bytes, decoded by the script


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"hello world", id="bytes"),
        pytest.param([b"hello ", b"", b"world"], id="chunks"),
        pytest.param(io.BytesIO(b"hello world"), id="file-like"),
    ],
)
def test_body_on_stdin(body: Any) -> None:
    info = body_json(run_cgi(APP, meta("/env", CONTENT_LENGTH="11"), body).stdout)
    assert info["body_bytes"] == 11


def test_stdin_is_closed_at_the_end_of_the_body() -> None:
    info = body_json(run_cgi(APP, meta("/read-to-eof"), [b"x" * 100_000]).stdout)
    assert info["body_bytes"] == 100_000


def test_script_that_never_reads_a_2mib_body() -> None:
    started = time.monotonic()
    result = run_cgi(APP, meta("/ignore-stdin", CONTENT_LENGTH=str(2 * 1024 * 1024)),
                     io.BytesIO(b"z" * 2 * 1024 * 1024), CGILimits(timeout_s=10))  # fmt: skip
    assert body_json(result.stdout) == {"read": False}
    assert time.monotonic() - started < 5


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(CGITimeout, match="longer than 1 s"):
        run_cgi(APP, meta("/sleep-with-child", QUERY_STRING=f"pidfile={pidfile}"),
                limits=CGILimits(timeout_s=1.0))  # fmt: skip
    assert time.monotonic() - started < 3
    script, child = (int(p) for p in pidfile.read_text().split())
    deadline = time.monotonic() + 2
    while (alive(script) or alive(child)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(script) and not alive(child)


@dataclass
class ExitWait:
    mode: str  # "pidfd" or "polled"
    opened: list[int]  # the pids a pidfd was opened for


@pytest.fixture(params=["pidfd", "polled"])
def exit_wait(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ExitWait:
    """The runner waits for a script's exit on a pidfd, or (a kernel before 5.3) by
    polling waitid: both ways."""
    wait = ExitWait(request.param, [])
    real = os.pidfd_open

    def pidfd_open(pid: int, flags: int = 0) -> int:
        if wait.mode == "polled":
            raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
        wait.opened.append(pid)
        return real(pid, flags)

    monkeypatch.setattr(os, "pidfd_open", pidfd_open)
    return wait


def test_a_background_child_is_killed_when_the_script_exits(exit_wait: ExitWait) -> None:
    # The child detached its stdio, so the response ends without it: it is
    # killed with its group, not left running outside the deadline and the cap.
    slots = ScriptSlots(1)
    result = run_cgi(APP, meta("/background-child"), slots=slots)
    child = body_json(result.stdout)["child"]
    assert result.exit_code == 0
    assert slots.running == 0
    deadline = time.monotonic() + 2
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(child)


def test_stderr_flood_is_drained_and_logged_capped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.cgi")
    limits = CGILimits(timeout_s=10, max_stderr_lines=5, stderr_tail_lines=3)
    result = run_cgi(APP, meta("/stderr-flood"), limits=limits)
    assert body_json(result.stdout) == {"flooded": "stderr"}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6
    assert lines[-1].endswith("49995 more lines not logged")
    assert result.stderr_tail == ("x" * 99,) * 3


def test_output_flood_is_stopped() -> None:
    with pytest.raises(CGIOutputTooLarge, match="1048576 bytes"):
        run_cgi(APP, meta("/output-flood"), limits=CGILimits(max_output_bytes=1024 * 1024))


def test_crash_with_exit_1() -> None:
    result = run_cgi(APP, meta("/crash"))
    assert (result.exit_code, result.stdout) == (1, b"")
    assert result.stderr_tail == ("oops: something broke",)


def test_executable_that_is_not_python() -> None:
    result = run_cgi(SCRIPTS / "hello.sh", {"REQUEST_METHOD": "HEAD"})
    assert parse_cgi_response(result.stdout).body == b"hello from HEAD\n"


def test_spawn_failure_releases_the_slot() -> None:
    slots = ScriptSlots(1)
    with pytest.raises(CGISpawnError, match="No such file"):
        run_cgi(SCRIPTS / "missing.sh", meta("/env"), slots=slots)
    run_cgi(APP, meta("/env"), slots=slots)


def test_concurrency_cap() -> None:
    slots = ScriptSlots(2)  # no queue: the third is refused at once
    with CGIProcess(APP, meta("/slow"), slots=slots), CGIProcess(APP, meta("/slow"), slots=slots):
        with pytest.raises(CGIBusy, match="2 CGI scripts"):
            run_cgi(APP, meta("/env"), slots=slots)
    assert run_cgi(APP, meta("/env"), slots=slots).exit_code == 0


def test_closing_an_unfinished_process_kills_and_reaps_it() -> None:
    proc = CGIProcess(APP, meta("/sleep"))
    proc.close()
    assert proc.exit_code == -9
    assert not alive(proc.pid)
    proc.close()  # idempotent


def test_argv_given_as_a_list() -> None:
    result = run_cgi(["/bin/sh", str(SCRIPTS / "hello.sh")], {"REQUEST_METHOD": "GET"})
    assert result.stdout.endswith(b"hello from GET\n")


def test_script_that_closes_its_output_and_lingers_is_killed(exit_wait: ExitWait) -> None:
    with pytest.raises(CGITimeout, match="longer than 0.5 s"):
        run_cgi(APP, meta("/close-and-linger"), limits=CGILimits(timeout_s=0.5))
    # Its output ended while it ran on: the runner waited for its exit until
    # the deadline, on a pidfd unless the kernel has none.
    assert len(exit_wait.opened) == (1 if exit_wait.mode == "pidfd" else 0)


def test_a_script_that_exits_after_its_output_gives_its_exit_code(exit_wait: ExitWait) -> None:
    # The fixture closes stdout, then exits 3 a moment later.
    with CGIProcess(APP, meta("/close-then-exit")) as proc:
        assert b"".join(proc.stdout()).endswith(b"{}")
        assert proc.wait() == 3
    assert exit_wait.opened == ([proc.pid] if exit_wait.mode == "pidfd" else [])
    assert not alive(proc.pid)


def test_long_stderr_line_without_newline(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.cgi")
    limits = CGILimits(max_stderr_line_bytes=2048)
    result = run_cgi(APP, meta("/stderr-no-newline"), limits=limits)
    assert [len(line) for line in result.stderr_tail] == [2048, 2048, 904]


def test_isindex_query_adds_no_arguments() -> None:
    # RFC 3875 §4.4: a server MAY pass the words of a query without "=" as
    # arguments; this one never does, so they cannot turn into options.
    query = "--help+-c+import%20os"
    info = body_json(run_cgi(APP, meta("/env", QUERY_STRING=query)).stdout)
    assert info["argv"] == [str(APP)]
    assert info["env"]["QUERY_STRING"] == query


class TestAdmissionQueue:
    """ScriptSlots: past the cap, first come first served, bounded in length and time."""

    def test_a_freed_slot_goes_to_the_longest_waiter(self) -> None:
        slots = ScriptSlots(1, queue_max=3, wait_s=10)
        slots.acquire()
        order: list[int] = []

        def wait(i: int) -> None:
            slots.acquire()
            order.append(i)
            slots.release()

        threads = []
        for i in range(3):
            threads.append(threading.Thread(target=wait, args=(i,)))
            threads[-1].start()
            while slots.waiting < i + 1:  # each joins the line before the next
                time.sleep(0.005)
        slots.release()
        for t in threads:
            t.join(10)
        assert order == [0, 1, 2]
        assert (slots.running, slots.waiting) == (0, 0)

    def test_a_full_queue_refuses_at_once(self) -> None:
        slots = ScriptSlots(1, queue_max=0, wait_s=10)
        slots.acquire()
        with pytest.raises(CGIBusy, match="0 requests are waiting") as info:
            slots.acquire()
        assert info.value.queued_s == 0.0  # refused without joining the line

    def test_a_waiter_gives_up_after_its_time_and_leaves_the_line(self) -> None:
        slots = ScriptSlots(1, queue_max=1, wait_s=0.1)
        slots.acquire()
        with pytest.raises(CGIBusy, match="waited 0.1 s") as info:
            slots.acquire()
        assert info.value.queued_s >= 0.1
        assert slots.waiting == 0
        slots.release()
        assert slots.acquire() == 0.0  # the slot was not handed to the one who left


def test_a_stalled_body_ends_at_the_deadline() -> None:
    # A body source that never yields (a client that stopped sending) must not
    # hold the script past its deadline: the body iterator is given the
    # script's deadline and gives up there (bridge.ClientBody does it on the socket).
    class Stalled:
        deadline = 0.0

        def __iter__(self) -> Any:
            while time.monotonic() < self.deadline:
                time.sleep(0.01)
            raise CGIBodyTimeout("the request body did not arrive in time")

    body = Stalled()
    proc = CGIProcess(APP, meta("/read-to-eof"), body, CGILimits(timeout_s=0.5))
    body.deadline = proc.deadline
    with proc, pytest.raises(CGIBodyTimeout):
        b"".join(proc.stdout())
    assert not alive(proc.pid)
