"""The stack under test, for every suite that needs one (tests/conftest.py's ``lab``).

LAB_URL points the suites at a lab someone else runs (nothing is started or
stopped). Otherwise a lab answering on 127.0.0.1:$LAB_PORT is reused, if it is
a running lab of the target LAB_TARGET asks for (else the run fails, naming
the mix-up); when none answers, `lab up` starts one (LAB_TARGET chooses docker
or native) and `lab down` stops it at the end. A stack that does not come up
fails the run; it never skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import requests

from lab.routing import MODES
from lab.settings import LabSettings
from lab.system import processes
from lab.targets import control_process
from lab.targets.control_process import SERVICE as CONTROL
from lab.targets.state import load_state, recorded_target
from tests.support import ROOT

__all__ = [
    "LAB",
    "MODES",
    "ROOT",
    "SERVING",
    "Lab",
    "forget_status",
    "lab_status",
    "run_lab",
    "session_lab",
    "status_since_swap",
    "stop_control",
    "use_server",
    "workers_in_force",
]

LAB = [sys.executable, "-m", "lab.cli"]


@dataclass(frozen=True)
class Lab:
    url: str
    target: str

    def get(self, path: str, **kwargs: object) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return requests.get(self.url + path, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return requests.post(self.url + path, **kwargs)  # type: ignore[arg-type]


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/nginx-health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def run_lab(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LAB, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def session_lab() -> Iterator[Lab]:
    """The lab a test session runs against: see the module docstring."""
    if external := os.environ.get("LAB_URL"):
        yield Lab(external.rstrip("/"), "external")
        return
    url = f"http://127.0.0.1:{os.environ.get('LAB_PORT', '8080')}"
    started = not _answers(url)
    if started:
        up = run_lab("up", timeout=900)
        if up.returncode != 0:
            pytest.fail(f"`lab up` failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    status = run_lab("status", "--json", timeout=60)
    target = "unknown"
    if status.returncode == 0:
        target = json.loads(status.stdout).get("target", "unknown")
    if not started:
        _refuse_another_target(url, status)
    try:
        deadline = time.monotonic() + 60
        while not _answers(url):
            if time.monotonic() > deadline:
                pytest.fail(f"the lab at {url} never answered /nginx-health")
            time.sleep(0.5)
        yield Lab(url, target)
    finally:
        if started:
            down = run_lab("down", timeout=300)
            if down.returncode != 0:
                print(f"`lab down` failed:\n{down.stdout}\n{down.stderr}", file=sys.stderr)
        # Services a fault test restarted are children of this process; reap them
        # now that they have stopped.
        processes.reap_all()


def workers_in_force(lab: Lab) -> dict[str, int]:
    """Worker processes per mode as ``lab status --json`` reads them from the running
    processes; for an external lab (LAB_URL), the gateway's defaults for this machine."""
    if lab.target != "external":
        status = run_lab("status", "--json", timeout=60)
        if status.returncode == 0 and (workers := json.loads(status.stdout).get("workers")):
            return {m: int(n) for m, n in workers.items()}
    cores = os.cpu_count() or 1
    return {"cgi": 1, "wsgi": 2 * cores + 1, "asgi": cores}


def _refuse_another_target(url: str, status: subprocess.CompletedProcess[str]) -> None:
    """A lab already answers at ``url``: it must be the one LAB_TARGET asks for.

    Otherwise a suite run as "native" would test a Docker lab (or the reverse)
    under the wrong name.
    """
    asked = os.environ.get("LAB_TARGET", "").strip().lower()
    if not asked:
        return
    recorded = recorded_target(LabSettings.from_env())
    running = status.returncode == 0 and json.loads(status.stdout).get("running", False)
    if (recorded is not None and recorded != asked) or not running:
        pytest.fail(
            f"a lab already answers at {url}, but it is not a running {asked} lab "
            f"(`lab up` recorded: {recorded or 'nothing'}; `lab status` for {asked}: "
            f"{status.stdout.strip() or status.stderr.strip()}). Stop it first "
            f"(`LAB_TARGET={recorded or 'docker'} lab down`) or run the suite with "
            f"LAB_TARGET={recorded or 'unset'}"
        )


# mode -> the server the suite last put behind it (every mode starts on its default).
SERVING: dict[str, str] = {}


def use_server(mode: str, server: str) -> None:
    """`lab server MODE SERVER` on the running lab; fails the test when it fails."""
    _STATUS.clear()  # the new server listens elsewhere: read the status again
    done = run_lab("server", mode, server, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"`lab server {mode} {server}` failed:\n{done.stdout}\n{done.stderr}")
    SERVING[mode] = server


# ``lab status --json`` as last read by status_since_swap (it takes seconds to run).
_STATUS: dict[str, Any] = {}


def forget_status() -> None:
    """The next status_since_swap reads the status again (another module may have
    restarted services since)."""
    _STATUS.clear()


def status_since_swap() -> dict[str, Any]:
    """``lab status --json``, read again only after a `lab server` of this run.

    For what only a swap changes (the servers running, their addresses), asked
    once per (mode, server) pair by every_server modules: a status read costs
    about 3 s on a loaded machine, and the pairs of three modules ask 40 times.
    """
    if not _STATUS:
        _STATUS.update(lab_status())
    return dict(_STATUS)


def lab_status() -> dict[str, Any]:
    """``lab status --json`` of the lab under test, or {} when it does not answer."""
    proc = run_lab("status", "--json", timeout=60)
    return cast(dict[str, Any], json.loads(proc.stdout)) if proc.returncode == 0 else {}


def stop_control(target: str) -> None:
    """Stop the dashboard's control process (lab/control.py) of the running lab, as if
    it had died or the lab had been started without `lab up`; `lab up` starts it again."""
    cfg = LabSettings.from_env()
    if target == "native":
        state = load_state(cfg)
        pgid = state.groups.get(CONTROL) if state is not None else None
        if pgid is None:
            pytest.fail("the native lab records no control process")
        processes.stop_groups({CONTROL: pgid})
    else:
        control_process.stop(cfg, target)
