"""Scripts left behind by a dead worker are found among the master's children."""

from __future__ import annotations

import os
import subprocess
import sys

from gateway.cgi.orphans import orphaned_scripts


def test_a_session_leading_child_is_an_orphaned_script_unless_kept() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    leader = subprocess.Popen(sleeper, start_new_session=True)  # as the runner starts scripts
    member = subprocess.Popen(sleeper)  # in our own session: a worker, say
    try:
        found = orphaned_scripts(os.getpid(), keep=set())
        assert leader.pid in found
        assert member.pid not in found
        assert leader.pid not in orphaned_scripts(os.getpid(), keep={leader.pid})
    finally:
        for proc in (leader, member):
            proc.kill()
            proc.wait()


def test_this_kernel_lets_a_process_become_a_subreaper() -> None:
    # Run in a child, so the test process itself stays as it was.
    code = (
        "from gateway.cgi.orphans import become_subreaper as b; raise SystemExit(0 if b() else 1)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
