"""The stack under test: reuse a running lab, or start one and stop it after.

LAB_URL points the suite at a lab someone else runs (nothing is started or
stopped). Otherwise the suite looks for a lab on 127.0.0.1:$LAB_PORT and, when
none answers, runs `lab up` (LAB_TARGET chooses docker or native) and `lab down`
at the end. A stack that does not come up fails the run; it never skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from gateway.servers.registry import SERVERS, default_server
from lab.settings import LabSettings
from lab.system import processes
from lab.targets.state import recorded_target

MODES = ("cgi", "wsgi", "asgi")
LAB = [sys.executable, "-m", "lab.cli"]
ROOT = Path(__file__).resolve().parents[2]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--mode", action="append", choices=MODES, help="run only these modes")
    parser.addoption(
        "--server",
        action="append",
        metavar="MODE/SERVER",
        help="modules marked every_server: run only these (mode, server) pairs, e.g. wsgi/gthread",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "every_server: the module's `mode` tests run once per (mode, server) pair (`lab server`)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


def server_pairs(config: pytest.Config) -> list[tuple[str, str]]:
    """(mode, server) pairs for every_server modules: all of them, or --server's.

    A lab someone else runs (LAB_URL) is not ours to swap servers on: its defaults only.
    """
    modes = config.getoption("mode") or MODES
    wanted = config.getoption("server")
    pairs = [(m, s) for m in modes for s in SERVERS[m]]
    if os.environ.get("LAB_URL"):
        return [(m, default_server(m)) for m in modes]
    if wanted:
        unknown = set(wanted) - {f"{m}/{s}" for m, s in pairs}
        if unknown:
            raise pytest.UsageError(f"--server: no such pair {sorted(unknown)}: {pairs}")
        return [(m, s) for m, s in pairs if f"{m}/{s}" in wanted]
    return pairs


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mode" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("every_server") is None:
        metafunc.parametrize("mode", metafunc.config.getoption("mode") or MODES)
        return
    # Module scope: pytest runs a module's tests grouped by pair and tears the
    # pair down (back to the default server) before the next pair and at the
    # module's end, so every other module sees the default servers.
    pairs = server_pairs(metafunc.config)
    ids = [f"{m}-{s}" for m, s in pairs]
    metafunc.parametrize("mode", pairs, indirect=True, ids=ids, scope="module")


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


def _lab(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LAB, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if external := os.environ.get("LAB_URL"):
        yield Lab(external.rstrip("/"), "external")
        return
    url = f"http://127.0.0.1:{os.environ.get('LAB_PORT', '8080')}"
    started = not _answers(url)
    if started:
        up = _lab("up", timeout=900)
        if up.returncode != 0:
            pytest.fail(f"`lab up` failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    status = _lab("status", "--json", timeout=60)
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
            down = _lab("down", timeout=300)
            if down.returncode != 0:
                print(f"`lab down` failed:\n{down.stdout}\n{down.stderr}", file=sys.stderr)
        # Services a fault test restarted are children of this process; reap them
        # now that they have stopped.
        processes.reap_all()


def workers_in_force(lab: Lab) -> dict[str, int]:
    """Worker processes per mode as ``lab status --json`` reads them from the running
    processes; for an external lab (LAB_URL), the gateway's defaults for this machine."""
    if lab.target != "external":
        status = _lab("status", "--json", timeout=60)
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


def use_server(mode: str, server: str) -> None:
    """`lab server MODE SERVER` on the running lab; fails the test when it fails."""
    done = _lab("server", mode, server, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"`lab server {mode} {server}` failed:\n{done.stdout}\n{done.stderr}")
    SERVING[mode] = server


# mode -> the server the suite last put behind it (every mode starts on its default).
SERVING: dict[str, str] = {}


@pytest.fixture(scope="module")
def mode(request: pytest.FixtureRequest, lab: Lab) -> Iterator[str]:
    """every_server modules: the mode of the pair, with the pair's server behind it."""
    name, server = request.param
    default = default_server(name)
    if server != default:
        use_server(name, server)
    try:
        yield name
    finally:
        if server != default:
            use_server(name, default)


@pytest.fixture
def server(mode: str) -> str:
    """The server behind ``mode`` for this test (X-Gateway-Server)."""
    return SERVING.get(mode) or default_server(mode)


@pytest.fixture
def base(mode: str) -> str:
    """The mount point of one mode, e.g. "/wsgi"."""
    return f"/{mode}"
