"""The CGI script as fcgiwrap runs it: exec'd by its own shebang, in the
environment gateway/servers/fcgiwrap.py gives fcgiwrap, reporting itself.

Under the lab's runner the gateway adds the trace headers and answers /healthz;
under fcgiwrap nothing wraps the script, so it does both, and only then.
"""

from __future__ import annotations

import os
import subprocess
import time

from gateway.config import Settings
from gateway.servers.fcgiwrap import script_env
from tests.support.contract import Result
from tests.unit.apps.test_cgi_app import SCRIPT, TIMEOUT, meta_variables, parse_cgi_output

TRACE = (
    "x-gateway-mode",
    "x-gateway-server",
    "x-gateway-pid",
    "x-gateway-worker",
    "x-gateway-host",
    "x-request-id",
    "x-gateway-start",
)


def exec_script(env: dict[str, str]) -> Result:
    """Exec the file itself, as fcgiwrap does (no interpreter named by the caller)."""
    done = subprocess.run(
        [str(SCRIPT)],
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,  # fcgiwrap closes stdin at the body's end
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return parse_cgi_output(done.stdout)


def fcgiwrap_env(**meta: str) -> dict[str, str]:
    return script_env(Settings(mode="cgi", server="fcgiwrap")) | meta_variables(**meta)


def test_the_script_reports_itself_under_fcgiwrap() -> None:
    before = time.time()
    env = fcgiwrap_env() | {"HTTP_X_REQUEST_ID": "0123abcd"}
    r = exec_script(env)
    assert r.status == 200
    for name in (*TRACE, "x-gateway-end"):
        assert name in r.headers, name
    assert (r.headers["x-gateway-mode"], r.headers["x-gateway-server"]) == ("cgi", "fcgiwrap")
    # The Worker is the process that started the script: here, this test.
    assert r.headers["x-gateway-worker"] == str(os.getpid())
    assert r.headers["x-gateway-pid"] != str(os.getpid())
    assert r.headers["x-request-id"] == "0123abcd"  # nginx's id, passed as a parameter
    start, end = float(r.headers["x-gateway-start"]), float(r.headers["x-gateway-end"])
    # Start is the kernel's record of the fork, in clock ticks: the middle of its
    # tick, so up to half a tick before the fork itself (and this test's clock).
    half_tick = 0.5 / os.sysconf("SC_CLK_TCK")
    assert before - half_tick <= start <= end <= time.time()
    # The split the timeline draws: start-up, then the app's work, then the exit.
    app_start = float(r.headers["x-gateway-app-start"])
    app_end = float(r.headers["x-gateway-app-end"])
    assert start < app_start <= app_end <= end


def test_a_stream_carries_start_but_no_end() -> None:
    r = exec_script(fcgiwrap_env(path="/stream", query="chunks=1&interval_ms=0"))
    assert r.status == 200 and "x-gateway-start" in r.headers
    assert "x-gateway-end" not in r.headers
    assert "x-gateway-app-start" in r.headers and "x-gateway-app-end" not in r.headers


def test_healthz_is_the_scripts_own_under_fcgiwrap() -> None:
    r = exec_script(fcgiwrap_env(path="/healthz"))
    assert r.status == 200 and b'"ok"' in r.body


def test_under_the_runner_the_gateway_does_both() -> None:
    # The runner's clean environment has no GATEWAY_SERVER: no trace headers
    # from the script (the gateway adds them) and /healthz is the gateway's.
    env = meta_variables() | {"PATH": script_env(Settings(mode="cgi"))["PATH"]}
    r = exec_script(env)
    assert r.status == 200 and not any(name in r.headers for name in TRACE)
    env = meta_variables(path="/healthz") | {"PATH": env["PATH"]}
    assert exec_script(env).status == 404


def test_under_fcgiwrap_the_script_holds_the_header_limits() -> None:
    # What gunicorn refuses under the runner (RFC 6585 §5): 101 fields, a field
    # line over 8190 bytes. Under fcgiwrap nothing else refuses them.
    many = {f"HTTP_X_H{i}": "v" for i in range(101)}
    r = exec_script(fcgiwrap_env() | many)
    assert r.status == 431 and b"more than 100" in r.body
    r = exec_script(fcgiwrap_env() | {"HTTP_X_BIG": "a" * 8190})
    assert r.status == 431 and b"X-Big" in r.body
    assert exec_script(fcgiwrap_env() | {"HTTP_X_BIG": "a" * (8190 - 7)}).status == 200
    assert exec_script(fcgiwrap_env() | dict(list(many.items())[:90])).status == 200


def test_under_fcgiwrap_a_body_the_script_refuses_is_still_read() -> None:
    # A form over the app's 1 MiB limit is refused on its declared length. fcgiwrap
    # writes the body to the script all the same: were the script gone without
    # reading it, that write would fail (here: BrokenPipeError) and fcgiwrap would
    # answer its own plain-text 502 in place of the 413.
    body = b"a=" + b"x" * (2 * 1024 * 1024)
    env = fcgiwrap_env(
        method="POST", path="/form", body=body, content_type="application/x-www-form-urlencoded"
    )
    with subprocess.Popen(
        [str(SCRIPT)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(body)
            proc.stdin.close()
            read_it = True
        except BrokenPipeError:
            read_it = False
        out = proc.stdout.read()
        assert proc.wait(TIMEOUT) == 0
    assert read_it, "the script exited without reading the body"
    assert parse_cgi_output(out).status == 413
