"""Run one CGI script: the I/O edge of the CGI core.

A fresh process per request (RFC 3875 §7.2, UNIX): the meta-variables as its
whole environment, the request body on stdin, the response read from stdout,
stderr sent to the ``gateway.cgi`` logger. One selector loop moves all three
pipes at once, as ``subprocess.communicate`` does, so a script that never
reads its body or floods stderr cannot deadlock the gateway.

Limits: a deadline (the script and every process it started are killed with
SIGKILL to their process group: ``CGITimeout``), an output cap
(``CGIOutputTooLarge``) and a cap on scripts running at once (``CGIBusy``).
When a script exits, what is left in its group is killed too (a background
child may not outlive the request). A script is always waited for, so no
zombie is left behind; the group is only signalled while its leader is not yet
reaped, so its id cannot have been reused.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, Protocol, runtime_checkable

from gateway.system.processes import exits_within, kill_group

logger = logging.getLogger("gateway.cgi")

MIB: Final = 1024 * 1024
READ_SIZE: Final = 64 * 1024
# What a script finds in its environment besides the meta-variables: a fixed,
# safe PATH (never the gateway's own) and a UTF-8 locale.
BASE_ENVIRONMENT: Final = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
# Python scripts run with this interpreter: -I isolates it from PYTHON* variables
# and user site-packages, -S skips site (stdlib only, a faster start).
PYTHON_FLAGS: Final = ("-I", "-S")


class CGIError(Exception):
    """A script could not produce a response; ``status`` is the HTTP answer."""

    status = 502


class CGIBusy(CGIError):
    status = 503
    queued_s = 0.0  # how long the request waited in line before it was refused


class CGITimeout(CGIError):
    status = 504


class CGIOutputTooLarge(CGIError):
    status = 502


class CGISpawnError(CGIError):
    status = 502


@runtime_checkable
class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


# The request body: bytes, chunks, or a file-like object read to its end.
Body = bytes | Iterable[bytes] | _Readable


@dataclass(frozen=True)
class CGILimits:
    timeout_s: float = 30.0
    max_output_bytes: int = 64 * MIB
    max_stderr_lines: int = 200  # logged per script; the rest are counted
    max_stderr_line_bytes: int = 2048
    stderr_tail_lines: int = 20


@dataclass(frozen=True)
class CGIResult:
    pid: int
    start: float  # time.time() right before the spawn
    end: float  # time.time() once the process had exited
    exit_code: int  # negative: killed by that signal
    stdout: bytes
    stderr_tail: tuple[str, ...] = field(default=())


class CGIBodyTimeout(CGIError):
    """The client did not send the request body within the script's deadline.

    RFC 9110 §15.5.9: 408 (Request Timeout) "indicates that the server did not
    receive a complete request message within the time that it was prepared to
    wait"; the connection cannot be reused (the body's end was never seen).
    """

    status = 408


class CGIEnvironmentTooLarge(CGIError):
    """The kernel refused the script's environment (E2BIG): a header too large for it.

    RFC 6585 §5: 431 (Request Header Fields Too Large) "indicates that the
    server is unwilling to process the request because its header fields are
    too large"; bridge.py checks one string's size before a spawn, this is the
    kernel's word on the total.
    """

    status = 431


class ScriptSlots:
    """At most ``n`` scripts at once; past that, requests wait their turn, first come first served.

    At most ``queue_max`` wait at once, each at most ``wait_s`` seconds; a
    request that finds the queue full, or waits out its time, gets CGIBusy
    (503 with Retry-After). So a burst queues and gets slow, the way a CGI
    server does, instead of failing at once, and cannot pile up processes the
    machine cannot run. A freed slot is handed straight to the longest waiter
    (a semaphore would let any thread, even a newcomer, take it).
    """

    def __init__(self, n: int, queue_max: int = 0, wait_s: float = 0.0) -> None:
        self.n = n
        self.queue_max = queue_max
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._running = 0
        self._waiting: deque[threading.Event] = deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def acquire(self) -> float:
        """Take a slot, waiting in line if need be; the seconds waited."""
        with self._lock:
            if self._running < self.n and not self._waiting:
                self._running += 1
                return 0.0
            if len(self._waiting) >= self.queue_max:
                raise CGIBusy(
                    f"{self.n} CGI scripts are running and {len(self._waiting)} requests "
                    "are waiting for one"
                )
            turn = threading.Event()
            self._waiting.append(turn)
        started = time.monotonic()
        handed = turn.wait(self.wait_s)
        waited = time.monotonic() - started
        if not handed:
            with self._lock:
                handed = turn.is_set()  # handed over between the timeout and the lock
                if not handed:
                    self._waiting.remove(turn)
        if not handed:
            busy = CGIBusy(f"waited {self.wait_s:g} s for one of {self.n} CGI scripts")
            busy.queued_s = waited
            raise busy
        return waited

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()  # the slot passes on, still counted
            else:
                self._running -= 1


def script_argv(script: str | os.PathLike[str] | Sequence[str]) -> list[str]:
    """The command line for a script: ``.py`` files run with this interpreter.

    RFC 3875 §4.4 lets a server pass the words of an ISINDEX-style query (one
    with no "=") as arguments. This gateway never does: every query reaches the
    script in QUERY_STRING alone, which is simpler and cannot be mistaken for
    options by the interpreter.
    """
    if isinstance(script, str | os.PathLike):
        path = os.fspath(script)
        if path.endswith(".py"):
            return [sys.executable, *PYTHON_FLAGS, path]
        return [path]
    return list(script)


def _chunks(body: Body) -> Iterator[bytes]:
    if isinstance(body, bytes | bytearray):
        yield bytes(body)
    elif isinstance(body, _Readable):
        while chunk := body.read(READ_SIZE):
            yield chunk
    else:
        yield from body


class _StderrLog:
    """Script stderr, line by line, to the log (capped) and a short tail."""

    def __init__(self, pid: int, limits: CGILimits) -> None:
        self.pid = pid
        self.limits = limits
        self.partial = b""
        self.logged = 0
        self.dropped = 0
        self.tail: deque[str] = deque(maxlen=limits.stderr_tail_lines)

    def feed(self, data: bytes) -> None:
        self.partial += data
        *lines, self.partial = self.partial.split(b"\n")
        size = self.limits.max_stderr_line_bytes
        while len(self.partial) > size:  # an endless line is logged in pieces
            lines.append(self.partial[:size])
            self.partial = self.partial[size:]
        for line in lines:
            self._line(line)

    def _line(self, raw: bytes) -> None:
        text = raw[: self.limits.max_stderr_line_bytes].rstrip(b"\r").decode("utf-8", "replace")
        self.tail.append(text)
        if self.logged < self.limits.max_stderr_lines:
            self.logged += 1
            logger.warning("cgi[%d] stderr: %s", self.pid, text)
        else:
            self.dropped += 1

    def close(self) -> None:
        if self.partial:
            self._line(self.partial)
            self.partial = b""
        if self.dropped:
            logger.warning("cgi[%d] stderr: %d more lines not logged", self.pid, self.dropped)


class CGIProcess:
    """One running script. Read ``stdout()`` once, then ``wait()``; ``close()`` always.

    Used directly by a caller that streams the response; ``run_cgi`` wraps it
    for one that wants the whole output.
    """

    def __init__(
        self,
        script: str | os.PathLike[str] | Sequence[str],
        meta: Mapping[str, str],
        body: Body = (),
        limits: CGILimits | None = None,
        *,
        slots: ScriptSlots | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.limits = limits or CGILimits()
        if isinstance(script, str | os.PathLike):
            script = Path(script).resolve()  # absolute: the script runs in its own directory
            # RFC 3875 §7.2: "the current working directory for the script
            # SHOULD be set to the directory containing the script".
            cwd = script.parent if cwd is None else cwd
        self.argv = script_argv(script)
        self._body = _chunks(body)
        self._slots = slots
        self.end: float | None = None
        self.exit_code: int | None = None
        self.queued_s = 0.0  # time spent waiting for a script slot
        self.output_bytes = 0
        # Native strings (PEP 3333) back to the bytes the client sent.
        env = {
            k.encode("latin-1"): v.encode("latin-1")
            for k, v in {**BASE_ENVIRONMENT, **meta}.items()
        }
        if slots is not None:
            self.queued_s = slots.acquire()
        try:
            self._deadline = time.monotonic() + self.limits.timeout_s
            self.start = time.time()
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                close_fds=True,
                # A session of its own: the script leads a new process group,
                # so a timeout kills everything it started with one killpg.
                start_new_session=True,
            )
        except OSError as exc:
            if slots is not None:
                slots.release()
            if exc.errno == errno.E2BIG:
                raise CGIEnvironmentTooLarge(
                    "the request's header fields are too large for a CGI environment"
                ) from None
            raise CGISpawnError(f"cannot start the CGI script: {exc.strerror or exc}") from None
        self.pid = self._proc.pid
        self._stderr = _StderrLog(self.pid, self.limits)
        self._released = False

    @property
    def deadline(self) -> float:
        """When the script is killed, on the ``time.monotonic()`` clock."""
        return self._deadline

    @property
    def stderr_tail(self) -> tuple[str, ...]:
        return tuple(self._stderr.tail)

    def _remaining(self) -> float:
        return self._deadline - time.monotonic()

    def stdout(self) -> Iterator[bytes]:
        """The script's stdout as it arrives, while its stdin and stderr are served.

        Raises CGITimeout or CGIOutputTooLarge (the script is killed first).
        """
        proc = self._proc
        assert proc.stdin and proc.stdout and proc.stderr
        sel = selectors.DefaultSelector()
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        pending = memoryview(b"")
        try:
            while sel.get_map():
                remaining = self._remaining()
                if remaining <= 0:
                    self._timed_out()
                for key, _ in sel.select(remaining):
                    stream: IO[bytes] = key.fileobj  # type: ignore[assignment]
                    if stream is proc.stdin:
                        while not pending and (chunk := next(self._body, None)) is not None:
                            pending = memoryview(chunk)
                        if not pending:
                            self._drop(sel, stream)  # end of body: EOF for the script
                            continue
                        try:
                            pending = pending[os.write(stream.fileno(), pending) :]
                        except BlockingIOError:
                            pass  # the pipe filled up between select and write
                        except BrokenPipeError:
                            # The script closed stdin or exited: the rest of the
                            # body is not wanted.
                            self._drop(sel, stream)
                        continue
                    data = os.read(stream.fileno(), READ_SIZE)
                    if not data:
                        self._drop(sel, stream)
                    elif stream is proc.stderr:
                        self._stderr.feed(data)
                    else:
                        self.output_bytes += len(data)
                        if self.output_bytes > self.limits.max_output_bytes:
                            self.kill()
                            raise CGIOutputTooLarge(
                                f"script output exceeded {self.limits.max_output_bytes} bytes"
                            )
                        yield data
        finally:
            for key in list(sel.get_map().values()):
                self._drop(sel, key.fileobj)  # type: ignore[arg-type]
            sel.close()

    @staticmethod
    def _drop(sel: selectors.BaseSelector, stream: IO[bytes]) -> None:
        sel.unregister(stream)
        try:
            stream.close()
        except BrokenPipeError:
            pass  # closing stdin flushes nothing (non-blocking, unbuffered writes)

    def _timed_out(self) -> None:
        self.kill()
        raise CGITimeout(f"script ran longer than {self.limits.timeout_s:g} s and was killed")

    def wait(self) -> int:
        """Wait (within the deadline) for the script to exit; its exit code.

        What the script leaves running in its group (a child that detached its
        stdio, say) is killed when it exits: nothing outlives the request, its
        deadline or its slot.
        """
        if self._proc.returncode is None:
            if not exits_within(self.pid, max(self._remaining(), 0)):
                self._timed_out()
            self.kill()  # exited but not reaped: the group id is still ours
        self._finish()
        assert self.exit_code is not None
        return self.exit_code

    def kill(self) -> None:
        """SIGKILL the script's whole process group, then reap the script."""
        if self._proc.returncode is None:
            # The leader is not reaped yet, so the group id is still ours.
            kill_group(self.pid)
            self.exit_code = self._proc.wait()
        self._finish()

    def _finish(self) -> None:
        if self.end is None:
            self.end = time.time()
        if not self._released:
            self._released = True
            self._stderr.close()
            if self._slots is not None:
                self._slots.release()

    def close(self) -> None:
        """Kill the script if it still runs; release its slot. Idempotent."""
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
        self.kill()

    def __enter__(self) -> CGIProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_cgi(
    script: str | os.PathLike[str] | Sequence[str],
    meta: Mapping[str, str],
    body: Body = (),
    limits: CGILimits | None = None,
    *,
    slots: ScriptSlots | None = None,
) -> CGIResult:
    """Run ``script`` to completion and return its whole output.

    Raises CGIBusy, CGISpawnError, CGITimeout or CGIOutputTooLarge.
    """
    with CGIProcess(script, meta, body, limits, slots=slots) as proc:
        stdout = b"".join(proc.stdout())
        exit_code = proc.wait()
        assert proc.end is not None
        if exit_code != 0:
            logger.warning("cgi[%d] exited with status %d", proc.pid, exit_code)
        return CGIResult(proc.pid, proc.start, proc.end, exit_code, stdout, proc.stderr_tail)
