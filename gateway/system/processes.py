"""The one process helper of the gateway: a child's process group killed, and its exit
awaited without reaping it, so that its pid (and so its group id) stays ours until
then. The CGI runner (gateway/cgi/runner.py) and the orphan reaper
(gateway/cgi/orphans.py) use it. Linux; standard library only.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from typing import Final

# waitid(2): report an exit without reaping the child (WNOWAIT) or blocking (WNOHANG).
_EXITED_FLAGS: Final = os.WEXITED | os.WNOHANG | os.WNOWAIT


def kill_group(leader: int) -> None:
    """SIGKILL the process group that ``leader`` leads; one already gone is no error.

    Call it only while the leader is an unreaped child of this process: then its
    pid, and so the group id, cannot have been reused.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, signal.SIGKILL)


def has_exited(pid: int) -> bool:
    """Has child ``pid`` exited? It stays unreaped either way."""
    return os.waitid(os.P_PID, pid, _EXITED_FLAGS) is not None


def exits_within(pid: int, timeout: float) -> bool:
    """True once child ``pid`` has exited within ``timeout`` seconds; it stays unreaped.

    waitid has no timeout, so the wait is on a pidfd: pidfd_open(2), "When the
    process that it refers to terminates, these interfaces [poll(2), select(2),
    epoll(7)] indicate the file descriptor as readable" (Linux 5.3+). It wakes
    at the exit: a script's stdout often ends a moment before it has exited,
    and polling waitid with doubling sleeps wakes up to 1 ms late at first and
    up to 50 ms late in a longer wait. Without pidfds, that polling is the way
    (as ``Popen.wait(timeout)`` polls).
    """
    if has_exited(pid):
        return True
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
        return _poll_exit(pid, timeout)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(timeout, 0) * 1000))
    finally:
        os.close(pidfd)


def _poll_exit(pid: int, timeout: float) -> bool:
    """``has_exited`` within ``timeout`` seconds, polled with growing sleeps (at most 50 ms)."""
    end = time.monotonic() + timeout
    delay = 0.0005
    while not has_exited(pid):
        remaining = end - time.monotonic()
        if remaining <= 0:
            return False
        delay = min(delay * 2, remaining, 0.05)
        time.sleep(delay)
    return True
