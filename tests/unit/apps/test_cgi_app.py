"""The CGI script run for real, as the runner runs it: ``python -IS cgi_app.py``.

Each test sets the meta-variables (RFC 3875 §4.1) and stdin, and reads the CGI
response from stdout: header lines, a blank line, the body (§6).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support import ROOT
from tests.support.contract import (
    ADA,
    CONTRACT_CASES,
    FORM,
    Case,
    Result,
    check_breakfast_steps,
    check_contract,
)

SCRIPT = ROOT / "apps" / "breakfast" / "cgi_app.py"
TIMEOUT = 20  # seconds; a run is a Python start-up plus at most a few hundred ms


def meta_variables(
    method: str = "GET",
    path: str = "/",
    query: str = "",
    body: bytes = b"",
    content_type: str = "",
    script_name: str = "",
) -> dict[str, str]:
    """A minimal CGI environment: no PATH, LANG or other process variables."""
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8081",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "gateway-lab-test",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8081",
    }
    if body or method == "POST":
        env["CONTENT_LENGTH"] = str(len(body))
    if content_type:
        env["CONTENT_TYPE"] = content_type
    return env


def parse_cgi_output(output: bytes) -> Result:
    head, separator, body = output.partition(b"\n\n")
    assert separator, f"no blank line after the header block: {output[:200]!r}"
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\n"):
        name, colon, value = line.partition(":")
        assert colon, f"not a header line: {line!r}"
        headers[name.strip().lower()] = value.strip()
    status = headers.pop("status")  # RFC 3875 §6.3.3: "Status: 200 OK"
    return Result(int(status.split()[0]), headers, body)


def run(env: dict[str, str], stdin: bytes = b"") -> Result:
    done = subprocess.run(
        [sys.executable, "-IS", str(SCRIPT)],
        env=env,
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    return parse_cgi_output(done.stdout)


@pytest.mark.parametrize("case", CONTRACT_CASES)
def test_contract(case: Case) -> None:
    env = meta_variables(case.method, case.path, case.query, case.body, case.content_type)
    check_contract(case, "cgi", run(env, case.body))


def test_script_is_executable_with_a_python_shebang() -> None:
    assert os.access(SCRIPT, os.X_OK)
    # -IS: no site-packages, no PYTHON* variables: a start of milliseconds when
    # a server (fcgiwrap) execs the file itself rather than `python -IS` it.
    assert SCRIPT.read_text().startswith("#!/usr/bin/env -S python3 -IS\n")


def test_status_line_comes_first_and_lines_end_in_lf() -> None:
    done = subprocess.run(
        [sys.executable, "-IS", str(SCRIPT)],
        env=meta_variables(path="/coffee", query="ms=0"),
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert done.stdout.startswith(b"Status: 200 OK\nContent-Type: application/json\n")
    assert b"\r" not in done.stdout  # RFC 3875 §7.2: on UNIX the newline is LF


def test_who_is_a_new_process_started_by_the_server() -> None:
    data = json.loads(run(meta_variables()).body)
    assert data["requests_served"] == 1
    assert data["worker"] == os.getpid()  # this test started the script
    assert data["pid"] != os.getpid()
    assert data["server"] == "gateway-lab-test"
    again = json.loads(run(meta_variables()).body)
    assert again["pid"] != data["pid"]


def test_env_shows_meta_variables_only() -> None:
    env = meta_variables(path="/env", query="a=1", script_name="/cgi")
    env["PATH"] = "/usr/bin:/bin"
    env["LANG"] = "C.UTF-8"
    variables = json.loads(run(env).body)["variables"]
    assert variables["SCRIPT_NAME"] == "/cgi"
    assert variables["PATH_INFO"] == "/env"
    assert variables["QUERY_STRING"] == "a=1"
    assert variables["HTTP_HOST"] == "127.0.0.1:8081"
    assert "PATH" not in variables and "LANG" not in variables


@pytest.mark.parametrize(
    ("script_name", "action"),
    [pytest.param("/cgi", "/cgi/form", id="mounted"), pytest.param("", "/form", id="root")],
)
def test_form_action_uses_the_mount_point(script_name: str, action: str) -> None:
    page = run(meta_variables(path="/form", script_name=script_name))
    assert f'action="{action}"' in page.body.decode()
    env = meta_variables("POST", "/form", body=ADA, content_type=FORM, script_name=script_name)
    thanks = run(env, ADA)
    assert f'href="{action}"' in thanks.body.decode()


def test_upload_reads_no_more_than_content_length() -> None:
    env = meta_variables("POST", "/upload", body=b"abc")
    result = run(env, b"abc" + b"more on stdin than declared")
    assert json.loads(result.body)["bytes"] == 3


def test_upload_short_body_is_a_400() -> None:
    env = meta_variables("POST", "/upload", body=b"x" * 10)
    assert run(env, b"x" * 4).status == 400


def test_stream_flushes_each_line() -> None:
    # The first line arrives while the script is still sleeping before the second.
    env = meta_variables(path="/stream", query="chunks=2&interval_ms=300")
    with subprocess.Popen(
        [sys.executable, "-IS", str(SCRIPT)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as script:
        try:
            assert script.stdout is not None
            head = b""
            while not head.endswith(b"\n\n"):
                head += script.stdout.read(1)
            first = script.stdout.readline()
            still_running = script.poll() is None
            assert json.loads(first)["chunk"] == 0
            assert still_running
        finally:
            script.kill()
            script.wait(TIMEOUT)


def test_head_writes_no_body() -> None:
    # RFC 3875 §4.3.3: the script MUST NOT provide a message-body for HEAD.
    started = time.perf_counter()
    result = run(meta_variables("HEAD", "/stream", "chunks=2&interval_ms=10000"))
    assert (result.status, result.body) == (200, b"")
    assert time.perf_counter() - started < TIMEOUT


def test_the_script_says_when_its_own_work_began_and_ended() -> None:
    # Under the lab's runner too (no GATEWAY_SERVER): the server knows the spawn,
    # only the script knows when its interpreter start-up and imports were over.
    before = time.time()
    r = run(meta_variables(path="/coffee", query="ms=30"))
    app_start = float(r.headers["x-gateway-app-start"])
    app_end = float(r.headers["x-gateway-app-end"])
    assert before < app_start and app_end - app_start >= 0.030
    assert app_end <= time.time()
    assert "x-gateway-start" not in r.headers  # the runner's to say


def test_breakfast_steps_lie_inside_the_scripts_own_work() -> None:
    r = run(meta_variables(path="/breakfast", query="coffee_ms=30&omelette_ms=20"))
    app_start = float(r.headers["x-gateway-app-start"])
    app_end = float(r.headers["x-gateway-app-end"])
    check_breakfast_steps("cgi", r.body, app_start, app_end, coffee_ms=30)
