"""Scripts die with their worker: the server's master adopts them and kills them.

Each script runs in a session of its own (runner.py), so that one killpg ends
it and everything it started. The cost: when the worker that spawned it dies
(killed by gunicorn's timeout, the OOM killer or a test), nothing signals the
script, which would run on outside the deadline and the script cap. So the
master process (gunicorn's arbiter) makes itself a "child subreaper"
(prctl(2) PR_SET_CHILD_SUBREAPER): orphans are re-parented to it instead of to
init, and when a worker exits, every session leader among its children that is
not a worker is a script left behind, whose whole group is killed. gunicorn's
arbiter already reaps children it does not know (arbiter.reap_workers).

This costs nothing per request (no preexec_fn, which would also rule out
vfork), and covers the script's own children, which PR_SET_PDEATHSIG would not.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from typing import Any, Final

from gateway.numbers import parse_digits
from gateway.system.processes import kill_group
from gateway.system.procstat import stat_fields

logger = logging.getLogger("gateway.cgi")

PR_SET_CHILD_SUBREAPER: Final = 36  # <linux/prctl.h>
PROC: Final = Path("/proc")


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans (Linux >= 3.4)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def orphaned_scripts(parent: int, keep: set[int]) -> list[int]:
    """Children of ``parent`` that lead a session of their own and are not in ``keep``."""
    found = []
    for entry in PROC.iterdir():
        if (pid := parse_digits(entry.name)) is None:
            continue
        try:
            fields = stat_fields((entry / "stat").read_text())
        except OSError:
            continue  # gone meanwhile
        if len(fields) < 4:
            continue
        # proc(5) fields 4 and 6: the parent and the session.
        ppid, session = parse_digits(fields[1]), parse_digits(fields[3])
        if ppid == parent and session == pid and pid not in keep:
            found.append(pid)
    return found


def adopt_orphans(arbiter: Any) -> None:
    """gunicorn ``on_starting`` hook: the arbiter becomes the subreaper."""
    if not become_subreaper():
        logger.warning("cannot become a child subreaper: scripts may outlive a dead worker")


def kill_orphans_of(arbiter: Any, worker: Any) -> None:
    """gunicorn ``child_exit`` hook: kill the script groups a dead worker left behind."""
    keep = set(getattr(arbiter, "WORKERS", {}))
    for pid in orphaned_scripts(os.getpid(), keep):
        logger.warning("cgi[%d] outlived its worker %s: killed", pid, worker.pid)
        # The leader is our child and not reaped yet, so its group id is
        # still its own (a pid in use as a group id is never reused).
        kill_group(pid)
