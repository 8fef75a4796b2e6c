"""Swapping the server behind a mode at run time (`lab server`), and what each server changes.

The contract itself runs under every server in test_contract.py; here: the
process model each server brings (threads in one gthread worker, a fresh
script under an fcgiwrap process), a steady loop across sync -> gthread ->
uwsgi -> sync that loses nothing, and bad input that changes nothing. Every
test puts the default servers back.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from gateway.servers.registry import default_server
from tests.integration.test_process_model import fire, lanes, max_overlap
from tests.support.lab import LAB, MODES, ROOT, Lab, run_lab, use_server
from tests.support.steady import SteadyClient, finish, header


def status() -> dict[str, object]:
    done = run_lab("status", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


@pytest.fixture
def defaults_after(lab: Lab) -> Iterator[None]:
    """Whatever the test does, every mode is back on its default server after it."""
    if lab.target == "external":
        pytest.fail("swapping servers needs a lab this suite runs (no LAB_URL)")
    yield
    for mode in MODES:
        use_server(mode, default_server(mode))


def proc_name(lab: Lab, pid: str) -> str:
    """The command name of ``pid`` in the cgi gateway's pid namespace."""
    if lab.target == "docker":
        from lab.targets.docker.compose import compose_args

        cmd = compose_args("exec", "-T", "gateway-cgi", "cat", f"/proc/{pid}/comm")
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
        return fh.read().strip()


def test_status_names_the_server_and_workers_of_each_mode(lab: Lab, defaults_after: None) -> None:
    use_server("wsgi", "gthread")
    info = status()
    servers, workers = info["servers"], info["workers"]
    assert servers == {"cgi": "runner", "wsgi": "gthread", "asgi": "gunicorn"}
    assert isinstance(workers, dict) and set(workers) == set(MODES)
    assert workers["cgi"] == 1 and all(n >= 1 for n in workers.values())


def test_gthread_runs_two_requests_at_once_in_one_process(lab: Lab, defaults_after: None) -> None:
    use_server("wsgi", "gthread")
    # More requests at once than worker processes: some process must hold two.
    responses = fire(lab, "/wsgi/coffee?ms=300", 16)
    assert {r.headers["X-Gateway-Server"] for r in responses} == {"gthread"}
    by_pid = lanes(responses)
    assert max(max_overlap(ivs) for ivs in by_pid.values()) >= 2, by_pid
    # ... and that process is the worker itself (threads share its pid).
    assert all(r.headers["X-Gateway-Pid"] == r.headers["X-Gateway-Worker"] for r in responses)


def test_fcgiwrap_forks_a_new_script_per_request_under_fcgiwrap(
    lab: Lab, defaults_after: None
) -> None:
    use_server("cgi", "fcgiwrap")
    responses = [lab.get("/cgi/") for _ in range(6)]
    assert all(r.status_code == 200 for r in responses)
    pids = {r.headers["X-Gateway-Pid"] for r in responses}
    workers = {r.headers["X-Gateway-Worker"] for r in responses}
    assert len(pids) == 6, "a fresh process for every request"
    assert not pids & workers
    for worker in workers:
        assert proc_name(lab, worker) == "fcgiwrap"
    # Side by side: each fcgiwrap process waits on its own script.
    by_pid = lanes(fire(lab, "/cgi/coffee?ms=300", 4))
    assert len(by_pid) == 4
    assert max_overlap([iv for ivs in by_pid.values() for iv in ivs]) > 1


def test_a_steady_loop_across_sync_gthread_uwsgi_sync_loses_nothing(
    lab: Lab, defaults_after: None
) -> None:
    sequence = ["gthread", "uwsgi", "sync"]
    loop = SteadyClient(
        [lab.url + "/wsgi/", lab.url + "/wsgi/coffee?ms=20"],
        key=header("X-Gateway-Server"),
        max_requests=5000,
    ).start()
    try:
        time.sleep(0.3)
        for server in sequence:
            use_server("wsgi", server)
            time.sleep(0.3)  # requests served by the new server
    finally:
        done = finish([loop])
    print(
        f"\nsync -> {' -> '.join(sequence)}: {done.sent} requests sent, {len(done.failed)} "
        f"failed, {done.retried} retried after a closed idle connection; by {dict(done.seen)}"
    )
    assert done.finished
    assert done.sent >= 20, "the loop hardly ran: the swaps were not under load"
    assert done.failed == []
    assert {"sync", "gthread", "uwsgi"} <= set(done.seen), "every server served requests"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("wsgi", "uvicorn"), "unknown server 'uvicorn' for wsgi"),
        (("cgi", "gthread"), "unknown server 'gthread' for cgi"),
        (("soap", "sync"), "unknown mode 'soap'"),
    ],
)
def test_bad_input_exits_nonzero_and_changes_nothing(
    lab: Lab, args: tuple[str, str], says: str
) -> None:
    before = status()["servers"]
    done = run_lab("server", *args, timeout=60)
    assert done.returncode != 0
    assert says in done.stdout + done.stderr
    assert status()["servers"] == before
    assert lab.get("/wsgi/").headers["X-Gateway-Server"] == "sync"


def test_a_server_that_cannot_start_leaves_the_old_one_serving(
    lab: Lab, defaults_after: None
) -> None:
    if lab.target != "native":
        # Under Docker the new server is a container that compose configures, not
        # this process's environment; the docker swap's failure path (a silent
        # server is removed, nginx never moves) is a unit test with a recording
        # stand-in for Docker (tests/unit/lab/test_docker_server.py).
        pytest.skip("the failure is injected through a native gateway's environment")
    # A fcgiwrap whose script is missing refuses to start (gateway/servers/fcgiwrap.py).
    env = {"GATEWAY_CGI_SCRIPT": "/nonexistent/cgi_app.py"}
    done = subprocess.run(
        [*LAB, "server", "cgi", "fcgiwrap"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ | env,
    )
    assert done.returncode != 0
    message = (done.stdout + done.stderr).strip()
    assert "cgi stays on runner" in message and "fcgiwrap did not start" in message, message
    r = lab.get("/cgi/")
    assert (r.status_code, r.headers["X-Gateway-Server"]) == (200, "runner")
    assert status()["servers"] == {m: default_server(m) for m in MODES}


@pytest.mark.parametrize("server", ["runner", "fcgiwrap"])
def test_both_cgi_servers_split_start_up_from_app_work(
    lab: Lab, defaults_after: None, server: str
) -> None:
    """Start (the server started the script) .. App-Start (interpreter and imports
    over, said by the script) .. App-End (its work done) .. End, under each server."""
    use_server("cgi", server)
    r = lab.get("/cgi/coffee?ms=50")
    assert r.status_code == 200 and r.headers["X-Gateway-Server"] == server
    start, end = float(r.headers["X-Gateway-Start"]), float(r.headers["X-Gateway-End"])
    app_start = float(r.headers["X-Gateway-App-Start"])
    app_end = float(r.headers["X-Gateway-App-End"])
    assert start < app_start <= app_end <= end
    assert app_end - app_start >= 0.050  # the 50 ms wait is the app's work ...
    assert app_start - start > 0  # ... and the interpreter's start-up is not
