"""Hostile input: malformed HTTP, smuggling attempts and CGI hazards, with real sockets.

Every case in tests/integration/raw/ is replayed, for every (mode, server)
pair, through nginx under the mode's mount point and straight at the gateway
(tests.support.endpoints: natively its own port, under Docker through a relay
in the nginx container; a server that speaks no HTTP to nginx is reached
through nginx only). What must hold, per case and endpoint:

- "reject" cases: a 4xx (or a status the case's RFC allows, e.g. 501 for an
  unknown transfer coding) or a close without an answer; never a 2xx/3xx;
- every case: never a 5xx (beyond those allowed), never a hang, never more
  answers than visible requests: a hidden request to /__smuggled__ must not be
  answered, and nginx must never log it as a request of its own;
- every 4xx/5xx is the lab's JSON error.

A table of outcomes (case x endpoint) is printed at the end of the run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import requests

from lab.settings import LabSettings
from lab.system import processes
from lab.system.ports import first_free
from lab.system.procfs import read_proc
from tests.support import faults
from tests.support.contract import json_error
from tests.support.endpoints import Endpoint
from tests.support.lab import ROOT, Lab, lab_status
from tests.support.rawhttp import MARKER, Case, RawResult, exchange, load_cases

# The server matrix of hostile input runs natively; under Docker each swap
# recreates a container and each raw case at a gateway is relayed through
# `docker compose exec` (about a second each), so there the default servers
# carry the suite, and the contract suite (test_contract.py) covers every server.
pytestmark = pytest.mark.every_server(targets=("native",))

CASES = load_cases()
DEADLINE_S = 6.0
PATIENCE_S = 2.0
# Signs that a response shows a file instead of running the app.
SOURCE_SIGNS = ("#!/usr/bin/env", "import ", "def main", "root:x:0:0")


# -- the table of outcomes ------------------------------------------------------------

OUTCOMES: dict[str, dict[str, str]] = {}


class _Summary:
    """Prints the outcome table in pytest's terminal summary."""

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not OUTCOMES:
            return
        columns = list(dict.fromkeys(ep for row in OUTCOMES.values() for ep in row))
        width = max(len(name) for name in OUTCOMES)
        tr = terminalreporter
        tr.section("hostile input: case x endpoint (! marks a failure)")
        tr.write_line(" " * width + "  " + "".join(f"{c:>16}" for c in columns))
        for name, row in OUTCOMES.items():
            tr.write_line(f"{name:<{width}}  " + "".join(f"{row.get(c, '-'):>16}" for c in columns))
        by_category: dict[str, list[int]] = {}
        for case in CASES:
            outcomes = OUTCOMES.get(case.name, {})
            passed, tried = by_category.setdefault(case.category, [0, 0])
            ok = sum(not v.endswith("!") for v in outcomes.values())
            by_category[case.category] = [passed + ok, tried + len(outcomes)]
        summary = ", ".join(f"{c} {p}/{t}" for c, (p, t) in by_category.items())
        tr.write_line(f"passed (case x endpoint): {summary}")


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> None:
    manager = request.config.pluginmanager
    if not manager.has_plugin("hostile-summary"):
        manager.register(_Summary(), "hostile-summary")


@pytest.fixture(scope="module")
def log_start(lab: Lab) -> int:
    """How many lines nginx's access log had before this module's cases ran."""
    if lab.target not in ("native", "docker"):
        return 0
    return len(faults.access_log(LabSettings.from_env(), lab.target))


# -- judging one exchange -------------------------------------------------------------


def problems(case: Case, endpoint: Endpoint, result: RawResult) -> list[str]:
    """What is wrong with ``result`` for ``case`` (empty: it held)."""
    found = []
    if result.timed_out and not result.responses:
        found.append("hang: no answer and no close, even after the client half-closed")
    elif result.waited and not case.may_wait:
        found.append("silent until the client half-closed")
    if len(result.responses) > case.answers:
        found.append(f"{len(result.responses)} answers: a hidden request was served")
    if result.protocol_error and not result.responses:
        found.append(f"unparseable answer: {result.protocol_error}")
    for resp in result.responses[: case.answers]:
        if resp.status >= 500 and resp.status not in case.allow:
            found.append(f"{resp.status}: a server error for a client's mistake")
        if case.expect == "reject" and resp.status < 400:
            found.append(f"{resp.status}: the malformed message was accepted")
        if resp.status >= 400 and not _is_json_error(resp.status, resp.headers, resp.body):
            found.append(f"{resp.status} without the JSON error body: {resp.body[:60]!r}")
    return found


def _is_json_error(status: int, headers: dict[str, str], body: bytes) -> bool:
    return json_error(status, headers.get("content-type", ""), body) is not None


def replay(case: Case, endpoint: Endpoint) -> RawResult:
    wire = case.wire(endpoint.prefix, endpoint.hostport)
    return endpoint.exchange(
        wire,
        deadline_s=DEADLINE_S,
        expect_answers=case.answers,
        patience_s=PATIENCE_S,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_request(
    case: Case, endpoints: list[Endpoint], server: str, log_start: int
) -> None:
    with ThreadPoolExecutor(len(endpoints)) as pool:
        results = list(pool.map(lambda ep: replay(case, ep), endpoints))
    row = OUTCOMES.setdefault(case.name, {})
    failures = []
    for endpoint, result in zip(endpoints, results, strict=True):
        found = problems(case, endpoint, result)
        row[f"{endpoint.name}.{server}"] = result.outcome() + ("!" if found else "")
        failures += [f"{endpoint.name} ({server}): {p}" for p in found]
    assert not failures, f"{case.name} ({case.rfc}):\n" + "\n".join(failures)


def test_the_harness_sees_a_second_answer(endpoints: list[Endpoint], server: str) -> None:
    """Control: two pipelined requests get two answers, so one extra answer would show.

    gunicorn's sync worker (gw/wsgi under sync) serves one request per
    connection and closes, dropping the second unanswered; every other
    endpoint answers both.
    """
    for endpoint in endpoints:
        one = f"GET {endpoint.prefix}/healthz HTTP/1.1\r\nHost: {endpoint.hostport}\r\n\r\n"
        result = endpoint.exchange((one + one).encode(), expect_answers=2)
        if endpoint.name == "gw/wsgi" and server == "sync":
            assert result.statuses == [200] and result.closed, result.outcome()
        else:
            assert result.statuses == [200, 200], (endpoint.name, result.outcome())


def test_no_hidden_request_reached_nginx_as_a_request(lab: Lab, log_start: int) -> None:
    """After the cases above: nginx never logged the marker path as a request line."""
    if lab.target not in ("native", "docker"):
        pytest.skip("LAB_URL names a lab whose access log this run cannot read")
    entries = faults.access_log(LabSettings.from_env(), lab.target)[log_start:]
    assert len(entries) >= len(CASES), "nginx logged fewer requests than the cases sent"
    smuggled = [e for e in entries if requested_path(e).startswith(MARKER)]
    assert not smuggled, smuggled


def requested_path(entry: dict[str, object]) -> str:
    parts = str(entry.get("request", "")).split(" ")
    return parts[1] if len(parts) > 1 else ""


# -- limits through nginx (test_contract.py has 413 at 16 MiB + 1 and the 16 MiB upload) --


class TestLimitsThroughNginx:
    def test_body_limit_plus_one_is_413_json_before_the_body_is_sent(self, lab: Lab) -> None:
        limits = lab_status().get("limits") or {}
        assert isinstance(limits, dict)
        limit = int(limits.get("client_max_body_bytes", 16 * 1024 * 1024))
        url = urlsplit(lab.url)
        assert url.hostname and url.port
        head = (
            f"POST /wsgi/upload HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Length: {limit + 1}\r\n\r\n"
        )
        # Only the head is sent: nginx refuses on the declared length alone.
        result = exchange(url.hostname, url.port, head.encode(), deadline_s=10)
        assert result.statuses == [413]
        assert result.responses[0].json()["status"] == 413

    def test_uri_over_16k_is_414_json(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/" + "a" * 17000)
        assert r.status_code == 414
        assert r.json()["status"] == 414

    def test_header_line_over_16k_is_400_json(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/", headers={"X-Big": "a" * 17000})
        assert r.status_code in (400, 431, 494)
        assert r.json()["status"] == r.status_code

    def test_header_count_over_the_gateway_limit_is_431_json(self, lab: Lab, mode: str) -> None:
        r = lab.get(f"/{mode}/", headers={f"X-H{i}": "v" for i in range(150)})
        assert r.status_code in (400, 431)
        assert r.json()["status"] == r.status_code

    def test_header_between_the_gateway_and_nginx_limits_is_431_json(
        self, lab: Lab, mode: str
    ) -> None:
        # nginx takes lines up to 16 KiB, gunicorn fields up to 8190 bytes.
        r = lab.get(f"/{mode}/", headers={"X-Big": "a" * 9000})
        assert r.status_code == 431
        assert r.json()["status"] == 431


# -- CGI hazards, through nginx and at the cgi gateway ----------------------------------


@pytest.fixture
def cgi_endpoints(endpoints: list[Endpoint]) -> list[Endpoint]:
    return endpoints


def cgi_variables(endpoint: Endpoint, headers: dict[str, str], query: str = "") -> dict[str, str]:
    target = "/env" + (f"?{query}" if query else "")
    result = endpoint.request(target, headers=headers)
    assert result.statuses == [200], result.outcome()
    data = result.responses[0].json()
    assert data["mode"] == "cgi"
    variables: dict[str, str] = data["variables"]
    return variables


@pytest.mark.servers("cgi")
class TestCGIHazards:
    def test_proxy_header_never_becomes_http_proxy(self, cgi_endpoints: list[Endpoint]) -> None:
        for endpoint in cgi_endpoints:
            variables = cgi_variables(endpoint, {"Proxy": "http://attacker.example:3128"})
            assert "HTTP_PROXY" not in variables, endpoint.name

    def test_underscore_names_are_dropped_not_merged(self, cgi_endpoints: list[Endpoint]) -> None:
        for endpoint in cgi_endpoints:
            variables = cgi_variables(endpoint, {"X-Lab_Test": "sneaky", "X-Lab-Test": "real"})
            assert variables["HTTP_X_LAB_TEST"] == "real", endpoint.name

    def test_shell_metacharacters_reach_the_script_verbatim(
        self, cgi_endpoints: list[Endpoint]
    ) -> None:
        # This module runs natively (every_server targets), where the scripts run
        # on this host: a shell that ran the $(...) would leave this file.
        pwned = Path(tempfile.gettempdir()) / f"lab-pwned-{uuid.uuid4().hex}"
        value = f"$(touch {pwned}); `id`; a && b | c > d < e 'q' \"dq\" \\ * ? ~ #"
        query = "q=$(id)%3B`id`&x=|&y=>"
        for endpoint in cgi_endpoints:
            variables = cgi_variables(endpoint, {"X-Lab-Test": value}, query)
            assert variables["HTTP_X_LAB_TEST"] == value, endpoint.name
            assert variables["QUERY_STRING"] == query, endpoint.name  # §4.1.7: undecoded
        assert not pwned.exists()

    @pytest.mark.parametrize(
        "path",
        [
            "/../etc/passwd",
            "/../../../../etc/passwd",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
            "/..%2fcgi_app.py",
            "//etc/passwd",
            "/cgi_app.py",
            "/kitchen.py",
            "/%2e%2e/apps/breakfast/cgi_app.py",
            "/.%2e/.%2e/gateway/config.py",
            "/%252e%252e/%252e%252e/etc/passwd",
            "/..;/etc/passwd",
            "/..\\..\\etc\\passwd",
        ],
    )
    def test_path_traversal_never_escapes(self, cgi_endpoints: list[Endpoint], path: str) -> None:
        for endpoint in cgi_endpoints:
            result = endpoint.request(path)
            assert len(result.responses) == 1, (endpoint.name, result.outcome())
            resp = result.responses[0]
            text = resp.body.decode("latin-1")
            assert resp.status in (400, 404), (endpoint.name, path, resp.status, text[:200])
            assert not any(sign in text for sign in SOURCE_SIGNS), (endpoint.name, text[:200])
            assert resp.json()["status"] == resp.status
            if resp.status == 404 and "x-gateway-mode" in resp.headers:
                # The app answered: the one CGI script ran, nothing else. Only nginx
                # may route elsewhere, when it resolved a dot-segment out of /cgi/
                # (RFC 3986 §5.2.4): then "/" answered, in the mode it serves.
                mode = resp.headers["x-gateway-mode"]
                if endpoint.via_nginx and ".." in unquote(unquote(path)).replace("\\", "/"):
                    root = endpoint.request("/", raw_target=True).responses[0]
                    assert mode in ("cgi", root.headers["x-gateway-mode"]), (path, mode)
                else:
                    assert mode == "cgi", (endpoint.name, path, mode)

    def test_nul_in_the_path_is_400_not_500(self, cgi_endpoints: list[Endpoint]) -> None:
        for endpoint in cgi_endpoints:
            result = endpoint.request("/env%00x")
            assert result.statuses == [400], (endpoint.name, result.outcome())
            assert result.responses[0].json()["status"] == 400

    def test_nul_in_a_header_is_400_not_500(self, cgi_endpoints: list[Endpoint]) -> None:
        for endpoint in cgi_endpoints:
            raw = (
                f"GET {endpoint.prefix}/env HTTP/1.1\r\nHost: {endpoint.hostport}\r\n"
                "X-Lab-Test: a\0b\r\nConnection: close\r\n\r\n"
            )
            result = endpoint.exchange(raw.encode())
            assert result.statuses == [400], (endpoint.name, result.outcome())


# -- a cgi gateway of our own, running the fixture script with small limits -------------

FIXTURE_SCRIPT = ROOT / "tests" / "unit" / "gateway" / "cgi_scripts" / "fixture_app.py"


@pytest.fixture(scope="module")
def own_cgi_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``gateway serve --mode cgi`` on a spare port: 2 s timeout, 2 scripts, no queue, 1 MiB out."""
    port = first_free(range(20000, 30000), 1)
    assert port is not None, "no free port in 20000..29999"
    log = tmp_path_factory.mktemp("own-cgi") / "gateway.log"
    env = os.environ | {
        "GATEWAY_CGI_SCRIPT": str(FIXTURE_SCRIPT),
        "GATEWAY_TIMEOUT_S": "2",
        "GATEWAY_CGI_MAX_SCRIPTS": "2",
        # No queue: past the cap a request is refused at once (the queue has
        # its own tests in test_hostile_gateway.py).
        "GATEWAY_CGI_QUEUE_MAX": "0",
        "GATEWAY_CGI_MAX_OUTPUT_BYTES": str(1024 * 1024),
    }
    cmd = [sys.executable, "-m", "gateway", "serve", "--mode", "cgi", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    try:
        with processes.running(
            "gateway-cgi-own", cmd, health_url=url + "/healthz", env=env, log=log, cwd=ROOT,
            deadline_s=20,
        ):  # fmt: skip
            yield url
    except processes.StartFailed as failed:
        pytest.fail(f"own cgi gateway {failed}:\n{processes.tail(log)}")


def alive(pid: int) -> bool:
    return any(p.pid == pid and p.state not in ("Z", "X") for p in read_proc())


class TestCGILimits:
    def test_hung_script_is_504_json_and_leaves_no_process(
        self, own_cgi_gateway: str, tmp_path: Path
    ) -> None:
        pidfile = tmp_path / "pids"
        started = time.monotonic()
        r = requests.get(f"{own_cgi_gateway}/sleep-with-child?pidfile={pidfile}", timeout=15)
        assert r.status_code == 504
        assert r.json()["status"] == 504
        assert time.monotonic() - started < 6
        pids = [int(p) for p in pidfile.read_text().split()]
        deadline = time.monotonic() + 3
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in pids), "the script or its child outlived the timeout"

    def test_runaway_output_is_502_json(self, own_cgi_gateway: str) -> None:
        r = requests.get(f"{own_cgi_gateway}/output-flood", timeout=15)
        assert r.status_code == 502
        assert "exceeded" in r.json()["error"]

    def test_over_the_cap_is_503_with_retry_after(self, own_cgi_gateway: str) -> None:
        slow = f"{own_cgi_gateway}/slow?ms=1500"
        holders = [threading.Thread(target=requests.get, args=(slow,)) for _ in range(2)]
        for t in holders:
            t.start()
        time.sleep(0.5)  # both scripts running
        r = requests.get(f"{own_cgi_gateway}/env", timeout=10)
        for t in holders:
            t.join(10)
        assert r.status_code == 503
        assert r.json()["status"] == 503
        assert r.headers["Retry-After"] == "1"
        assert requests.get(f"{own_cgi_gateway}/env", timeout=10).status_code == 200

    def test_stderr_flood_and_an_unread_body_do_not_deadlock(self, own_cgi_gateway: str) -> None:
        started = time.monotonic()
        assert requests.get(f"{own_cgi_gateway}/stderr-flood", timeout=10).status_code == 200
        r = requests.post(f"{own_cgi_gateway}/ignore-stdin", data=b"z" * (4 * 1024**2), timeout=10)
        assert r.json() == {"read": False}
        assert time.monotonic() - started < 8
