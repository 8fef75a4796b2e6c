"""Service processes: each in a session (process group) of its own.

A service is a process group whose id is its leader's pid: ``spawn`` starts
one (output appended to a log after a start marker), ``wait_healthy`` waits
for its health URL, and ``stop_groups``, ``kill_group``, ``freeze`` and
``thaw`` act on the whole group, so a gunicorn master goes with its workers.
A group whose members are all zombies counts as gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from lab.system.http import is_healthy, wait_until
from lab.system.procfs import group_states, has_proc, read_proc

START_MARKER: Final = "--- lab up: "
# Every process this one started, kept so Python does not warn that a Popen was
# dropped while its process ran; ``reap`` and ``reap_all`` collect the exited ones.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
STOP_DEADLINE_S: Final = 10.0
LOG_TAIL_LINES: Final = 30


class StartFailed(Exception):
    """A service exited during start-up or did not answer its health URL in time."""

    def __init__(self, service: str, what: str) -> None:
        super().__init__(f"{service} {what}")
        self.service = service
        self.what = what


def spawn(
    cmd: list[str], log: Path | None, env: Mapping[str, str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a session (process group) of its own, output appended to ``log``
    (None: discarded).

    A START_MARKER line with the time and the command goes first, so ``tail``
    shows only what the latest start wrote. The group id is the returned pid.
    """
    with contextlib.ExitStack() as stack:
        out: Any = subprocess.DEVNULL
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(log.open("ab"))
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"{START_MARKER}{stamp} {' '.join(cmd)}\n".encode())
            out.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc


@contextlib.contextmanager
def running(
    service: str,
    cmd: list[str],
    *,
    health_url: str,
    env: Mapping[str, str],
    log: Path | None = None,
    cwd: Path | None = None,
    deadline_s: float = 30.0,
) -> Iterator[int]:
    """A service for the length of a ``with`` block: started in its own group, healthy
    when the block starts (else StartFailed), stopped with its whole group after."""
    pgid = spawn(cmd, log, env, cwd).pid
    try:
        wait_healthy({service: (pgid, health_url)}, deadline_s)
        yield pgid
    finally:
        stop_groups({service: pgid}, say=lambda _: None)
        reap(pgid)


def group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` runs (zombies waiting to be reaped do not count).

    A leader this process started and that has exited is reaped on the way.
    """
    reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process group: not ours to manage
    if not has_proc():
        return True
    alive = any(state != "Z" for state in group_states(read_proc(), pgid))
    if not alive:
        reap(pgid)  # it became a zombie since the first look
    return alive


def leader_matches(pgid: int, marker: str) -> bool:
    """Guard against a recycled pid: the group leader's command line must contain ``marker``."""
    leader = next((p for p in read_proc() if p.pid == pgid), None)
    # Leader gone, or a zombie not yet reaped (its command line reads empty; an
    # init that reaps late, as some VMs have, leaves a killed nginx master a
    # zombie for seconds): the group id cannot be reused while members remain.
    return leader is None or leader.state == "Z" or marker in leader.title


def reap(pid: int) -> None:
    """Collect our own exited child, if it is one, so it does not linger as a zombie."""
    if (proc := _CHILDREN.get(pid)) is not None:
        if proc.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def reap_all() -> None:
    """Collect every child this process started that has exited since."""
    for pid in list(_CHILDREN):
        reap(pid)


def wait_gone(pgids: Iterable[int], deadline_s: float) -> bool:
    pending = set(pgids)
    end = time.monotonic() + deadline_s
    while pending and time.monotonic() < end:
        for pgid in list(pending):
            reap(pgid)
            if not group_alive(pgid):
                pending.discard(pgid)
        if pending:
            time.sleep(0.05)
    return not pending


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


# What a service's group leader has in its command line (else "gateway"): the
# guard against signalling a recycled pid (leader_matches).
LEADER_MARKERS: Final = {"nginx": "nginx", "control": "lab.control"}


def stop_groups(
    groups: Mapping[str, int],
    deadline_s: float = STOP_DEADLINE_S,
    say: Callable[[str], None] = print,
) -> None:
    """SIGTERM each process group (service -> pgid), wait up to ``deadline_s``, then SIGKILL.

    A group whose leader is no longer what the service name says (a recycled
    pid) is left alone.
    """
    ours = {
        s: g
        for s, g in groups.items()
        if group_alive(g) and leader_matches(g, LEADER_MARKERS.get(s, "gateway"))
    }
    for pgid in ours.values():
        signal_group(pgid, signal.SIGTERM)
    if wait_gone(ours.values(), deadline_s):
        return
    for service, pgid in ours.items():
        if group_alive(pgid):
            say(f"{service} did not stop within {deadline_s:.0f}s: killing it")
            signal_group(pgid, signal.SIGKILL)
    wait_gone(ours.values(), 5.0)


def kill_group(pgid: int, deadline_s: float = 10.0) -> bool:
    """SIGKILL every process of the group, even a stopped one; True once all are gone."""
    signal_group(pgid, signal.SIGKILL)
    return wait_until(lambda: not group_alive(pgid), deadline_s, interval_s=0.05)


def freeze(pgid: int) -> None:
    """Stop every process of the group where it stands (SIGSTOP)."""
    os.killpg(pgid, signal.SIGSTOP)


def thaw(pgid: int) -> None:
    os.killpg(pgid, signal.SIGCONT)


HealthCheck = str | Callable[[], bool]


def wait_healthy(services: Mapping[str, tuple[int, HealthCheck]], deadline_s: float) -> None:
    """Return once each service (name -> (pgid, check)) is healthy.

    A check is a health URL (healthy when it answers 200) or a function (a
    gateway whose server speaks no HTTP is asked in its own protocol).
    Raises StartFailed as soon as one exits, or once ``deadline_s`` has passed.
    """
    pending = dict(services)
    end = time.monotonic() + deadline_s
    while pending:
        for service, (pgid, check) in list(pending.items()):
            reap(pgid)
            if not group_alive(pgid):
                raise StartFailed(service, "exited during start-up")
            if check() if callable(check) else is_healthy(check, timeout=1.0):
                del pending[service]
        if pending and time.monotonic() > end:
            service, (_, check) = next(iter(pending.items()))
            what = check if isinstance(check, str) else "its /healthz"
            raise StartFailed(service, f"did not answer {what} within {deadline_s:.0f}s")
        if pending:
            time.sleep(0.1)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` written since the last start marker."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    all_lines = text.splitlines()
    starts = [i for i, line in enumerate(all_lines) if line.startswith(START_MARKER)]
    recent = all_lines[starts[-1] + 1 :] if starts else all_lines
    return "\n".join(recent[-lines:]) or f"({path} has nothing since the last start)"
