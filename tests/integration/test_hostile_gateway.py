"""Hostile and careless clients, round two: what each gateway answers by itself.

For every (mode, server) pair: through nginx on the mode's mount point where
nginx lets the request through, and straight at the gateway
(tests.support.endpoints: natively its own port, under Docker a relay in the
nginx container; tests marked ``direct`` are not run for a server that speaks
no HTTP). The CGI limits
that need small numbers (deadline, script cap, queue) run against a CGI gateway
of the test's own on a spare port.

Each class names the item of the hostile-client list it covers and the RFC
section it holds the gateway to.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from gateway.errors import status_line
from tests.support.endpoints import Endpoint
from tests.support.lab import ROOT, Lab, lab_status
from tests.support.rawhttp import RawResult, exchange

# The server matrix of hostile input runs natively; under Docker each swap
# recreates a container and each raw case at a gateway is relayed through
# `docker compose exec` (about a second each), so there the default servers
# carry the suite, and the contract suite (test_contract.py) covers every server.
pytestmark = pytest.mark.every_server(targets=("native",))


@pytest.fixture(scope="module")
def status(lab: Lab) -> dict[str, object]:
    return lab_status() if lab.target != "external" else {}


FIXTURE_SCRIPT = ROOT / "tests" / "unit" / "gateway" / "cgi_scripts" / "fixture_app.py"


def each(endpoints: list[Endpoint], check: object) -> None:
    """Run ``check(endpoint)`` on every endpoint at once; report every failure together."""
    failures: list[str] = []

    def run(endpoint: Endpoint) -> None:
        try:
            check(endpoint)  # type: ignore[operator]
        except AssertionError as exc:
            failures.append(f"{endpoint.name}: {exc}")

    with ThreadPoolExecutor(len(endpoints)) as pool:
        list(pool.map(run, endpoints))
    assert not failures, "\n".join(sorted(failures))


def assert_json_error(result: RawResult, status: int) -> None:
    assert result.statuses[:1] == [status], result.outcome()
    resp = result.responses[0]
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    assert resp.json()["status"] == status, resp.body[:200]


# -- HTTP/1.0 and 0.9 without Host ----------------------------------------------------


class TestHostOptionalBeforeHTTP11:
    """RFC 9112 §3.2: Host is required of HTTP/1.1 requests only; an empty one is valid."""

    def test_http10_without_host_is_answered(self, endpoints: list[Endpoint]) -> None:
        def check(ep: Endpoint) -> None:
            result = ep.send("GET {p}/ HTTP/1.0\r\n\r\n")
            assert result.statuses == [200], (result.outcome(), result.responses[:1])
            assert result.responses[0].json()["mode"] == ep.mode

        each(endpoints, check)

    def test_http09_through_nginx_is_answered_by_the_app(self, lab: Lab, mode: str) -> None:
        # HTTP/0.9: a request line without a version, a response without a
        # status line or headers (the body only), which nginx still speaks.
        url = urlsplit(lab.url)
        assert url.hostname and url.port
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            sock.sendall(f"GET /{mode}/\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert json.loads(data)["mode"] == mode, data[:200]

    @pytest.mark.direct
    def test_an_empty_host_is_answered_alike_at_every_gateway(
        self, gateways: list[Endpoint]
    ) -> None:
        def check(ep: Endpoint) -> None:
            result = ep.send("GET {p}/ HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n")
            assert result.statuses == [200], result.outcome()

        each(gateways, check)

    @pytest.mark.direct
    def test_a_direct_http11_request_without_host_is_still_400(
        self, gateways: list[Endpoint]
    ) -> None:
        def check(ep: Endpoint) -> None:
            result = ep.send("GET {p}/ HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert_json_error(result, 400)
            assert "Host" in result.responses[0].json()["error"]

        each(gateways, check)


# -- one ASCII-only number check --------------------------------------------------------


class TestUnicodeDigits:
    # Superscript digits are ISO-8859-1 bytes (0xB9, 0xB2, 0xB3), which is how
    # a server decodes header bytes into native strings (PEP 3333).
    @pytest.mark.parametrize(
        "port", ["\u00b2", "8\u00b9"], ids=["superscript-2", "8-superscript-1"]
    )
    def test_a_host_port_in_unicode_digits_is_no_server_error(
        self, endpoints: list[Endpoint], port: str
    ) -> None:
        # str.isdigit() is true for both; int() raised on "²": a 500 in CGI mode.
        raw = f"GET {{p}}/env HTTP/1.1\r\nHost: lab.test:{port}\r\nConnection: close\r\n\r\n"

        def check(ep: Endpoint) -> None:
            result = ep.exchange(raw.replace("{p}", ep.prefix).encode("latin-1"))
            assert len(result.statuses) == 1, result.outcome()
            assert result.statuses[0] < 500, (result.outcome(), result.responses[0].body[:200])

        each(endpoints, check)


# -- after a body framing error, close ----------------------------------------------------

PIPELINED = "GET {p}/healthz HTTP/1.1\r\nHost: {h}\r\n\r\n"
BAD_BODIES = {
    "chunk-size-not-hex": "zz\r\nabc\r\n0\r\n\r\n",
    "junk-after-chunk-data": "3\r\nabcXX\r\n0\r\n\r\n",
}
BAD_CHUNK_EXTENSION = "3;\x01\r\nabc\r\n0\r\n\r\n"


class TestCloseAfterAFramingError:
    """RFC 9112 §6.3 and §11.2: after a body it cannot frame, a server cannot know
    where the next request starts: one answer (or none), then the close."""

    @staticmethod
    def pipelined_after(path: str, body: str) -> str:
        return (
            f"POST {{p}}{path} HTTP/1.1\r\nHost: {{h}}\r\nTransfer-Encoding: chunked\r\n\r\n"
            + body
            + PIPELINED
        )

    @staticmethod
    def check_one_answer_then_close(raw: str) -> Callable[[Endpoint], None]:
        def check(ep: Endpoint) -> None:
            result = ep.send(raw, expect_answers=2, deadline_s=6, patience_s=2)
            assert len(result.responses) <= 1, result.outcome()
            assert result.closed, result.outcome()

        return check

    @pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
    @pytest.mark.parametrize("path", ["/healthz", "/", "/upload"])
    def test_pipelined_data_after_a_bad_chunked_body_is_never_served(
        self, endpoints: list[Endpoint], path: str, body: str
    ) -> None:
        each(endpoints, self.check_one_answer_then_close(self.pipelined_after(path, body)))

    # nginx skips chunk extensions without checking them, so for nginx this body
    # is well framed and the next request a real one; the gateways behind it get
    # nginx's re-framed body. So this one goes to each gateway directly.
    @pytest.mark.direct
    @pytest.mark.parametrize("path", ["/healthz", "/", "/upload"])
    def test_a_control_character_in_a_chunk_extension_is_a_framing_error(
        self, gateways: list[Endpoint], path: str
    ) -> None:
        body = BAD_CHUNK_EXTENSION  # RFC 9112 §7.1.1: chunk-ext is tokens and quoted strings
        each(gateways, self.check_one_answer_then_close(self.pipelined_after(path, body)))

    @pytest.mark.direct
    def test_a_declared_body_over_the_limit_is_413_and_the_end(
        self, gateways: list[Endpoint], status: dict[str, object]
    ) -> None:
        # The gateway refuses on the declared length; it never reads the body,
        # so it must close rather than wait to drain gigabytes (RFC 9110 §15.5.14).
        raw = "POST {p}/upload HTTP/1.1\r\nHost: {h}\r\nContent-Length: 99999999999\r\n\r\nabc"

        def check(ep: Endpoint) -> None:
            result = ep.send(raw + PIPELINED, expect_answers=2, deadline_s=6)
            assert_json_error(result, 413)
            assert len(result.responses) == 1 and result.closed, result.outcome()

        each(gateways, check)


# -- chunked bodies count against the limit -----------------------------------------------


class TestChunkedBodyLimit:
    @pytest.mark.direct
    def test_a_chunked_body_past_the_limit_is_413(
        self, gateways: list[Endpoint], status: dict[str, object]
    ) -> None:
        limits = status.get("limits") or {}
        assert isinstance(limits, dict)
        limit = int(limits.get("client_max_body_bytes", 16 * 1024 * 1024))
        block = 1024 * 1024
        chunk = f"{block:x}\r\n".encode() + b"z" * block + b"\r\n"
        count = limit // block + 2
        head = "POST /upload HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n"

        def check(ep: Endpoint) -> None:
            data = head.replace("{h}", ep.hostport).encode() + chunk * count + b"0\r\n\r\n"
            result = ep.exchange(data, deadline_s=30)
            assert_json_error(result, 413)

        each(gateways, check)


# -- a header too large for the script's environment ----------------------------------------


@pytest.mark.servers("cgi")
class TestHeaderTooLargeForCGI:
    @pytest.mark.direct
    def test_one_header_repeated_past_an_environment_string_is_431(
        self, gateways: list[Endpoint]
    ) -> None:
        # gunicorn takes up to 100 fields of 8190 bytes; 20 copies of one name
        # are joined into one HTTP_X_REPEATED of 160 KiB, more than the 128 KiB
        # Linux allows one environment string (execve(2): MAX_ARG_STRLEN).
        lines = "".join(f"X-Repeated: {'r' * 8000}\r\n" for _ in range(20))
        for ep in gateways:
            result = ep.send(
                f"GET /env HTTP/1.1\r\nHost: {{h}}\r\n{lines}Connection: close\r\n\r\n"
            )
            assert_json_error(result, 431)


# -- no forwarder headers -------------------------------------------------------------------


class TestForwarderHeaders:
    @pytest.mark.direct
    def test_a_script_name_request_header_changes_nothing(self, gateways: list[Endpoint]) -> None:
        # gunicorn's default forwarder_headers believe SCRIPT_NAME from a trusted
        # peer, and natively every local process is one (127.0.0.1): a path not
        # under that "mount point" was a "500 Bad Request".
        def check(ep: Endpoint) -> None:
            result = ep.send(
                "GET /env HTTP/1.1\r\nHost: {h}\r\nSCRIPT_NAME: /elsewhere\r\n"
                "Connection: close\r\n\r\n"
            )
            assert result.statuses == [200], (result.outcome(), result.responses[:1])
            assert "/elsewhere" not in result.responses[0].body.decode("latin-1")

        each(gateways, check)


# -- CGI admission, through nginx -----------------------------------------------------------


# The queue (and its X-Gateway-Queue-Ms) is the runner's: fcgiwrap forks a script per request.
@pytest.mark.servers("cgi/runner")
class TestCGIQueueThroughNginx:
    def test_a_burst_past_the_script_cap_queues_instead_of_failing(
        self, lab: Lab, status: dict[str, object], mode: str
    ) -> None:
        limits = status.get("limits") or {}
        assert isinstance(limits, dict)
        cap = int(limits.get("cgi_max_scripts", 16))
        n = cap + 8  # more than can run at once, fewer than the default queue holds
        url = f"{lab.url}/cgi/coffee?ms=2000"
        with ThreadPoolExecutor(n) as pool:
            answers = list(pool.map(lambda _: requests.get(url, timeout=60), range(n)))
        statuses = [r.status_code for r in answers]
        assert statuses == [200] * n, statuses
        waits = [float(r.headers["X-Gateway-Queue-Ms"]) for r in answers]
        # Some waited for a slot: the burst was over the cap, not refused.
        assert sum(w > 0 for w in waits) >= n - cap, waits


# -- a CGI gateway of the test's own, with small limits ----------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def own_cgi_gateway(log_dir: Path, **settings: str) -> Iterator[tuple[str, int]]:
    """``gateway serve --mode cgi`` on a spare port running the fixture script:
    yields its URL and the gunicorn master's pid."""
    port = free_port()
    env = os.environ | {"GATEWAY_CGI_SCRIPT": str(FIXTURE_SCRIPT)}
    env |= {f"GATEWAY_{k.upper()}": v for k, v in settings.items()}
    cmd = [sys.executable, "-m", "gateway", "serve", "--mode", "cgi", "--port", str(port)]
    log = log_dir / f"gateway-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"own cgi gateway did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def scripts_running(master: int, n: int) -> list[int]:
    """Wait until the gateway's one worker has ``n`` scripts running; their pids."""
    (worker,) = children(master)
    assert wait_until(lambda: len(children(worker)) >= n, 20), f"{n} scripts never started"
    return children(worker)


def wait_until(condition: object, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(condition())  # type: ignore[operator]


class TestCGIAdmission:
    """Past the cap a request waits its turn (FIFO, bounded), then 503."""

    def test_queue_then_503_with_retry_after(self, tmp_path: Path) -> None:
        with own_cgi_gateway(
            tmp_path, cgi_max_scripts="2", cgi_queue_max="1", cgi_queue_wait_s="1"
        ) as (url, master):
            slow = f"{url}/slow?ms=3000"
            with ThreadPoolExecutor(4) as pool:
                holders = [pool.submit(requests.get, slow, timeout=30) for _ in range(2)]
                scripts_running(master, 2)
                waiter = pool.submit(requests.get, f"{url}/env", timeout=30)
                time.sleep(0.5)  # the third is in line (its wait is 1 s)
                refused = requests.get(f"{url}/env", timeout=30)  # the line is full
                waited = waiter.result()
                assert [h.result().status_code for h in holders] == [200, 200]
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert "waiting" in refused.json()["error"]
        # The one in line waited its whole second, then was refused, saying so.
        assert waited.status_code == 503 and waited.headers["Retry-After"] == "1"
        assert float(waited.headers["X-Gateway-Queue-Ms"]) >= 1000
        assert "waited 1 s" in waited.json()["error"]

    def test_a_queued_request_is_served_when_a_slot_frees(self, tmp_path: Path) -> None:
        with own_cgi_gateway(
            tmp_path, cgi_max_scripts="1", cgi_queue_max="4", cgi_queue_wait_s="20"
        ) as (url, master):
            with ThreadPoolExecutor(4) as pool:
                holder = pool.submit(requests.get, f"{url}/slow?ms=2000", timeout=30)
                scripts_running(master, 1)
                queued = [pool.submit(requests.get, f"{url}/env", timeout=30) for _ in range(3)]
                answers = [q.result() for q in queued]
                assert holder.result().status_code == 200
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert all(float(a.headers["X-Gateway-Queue-Ms"]) > 0 for a in answers)

    def test_a_stalled_body_releases_its_slot_at_the_deadline(self, tmp_path: Path) -> None:
        # Item 10: two clients announce a body, send a little and stall; each
        # holds one of the two script slots. At the 3 s deadline both get a 408
        # and the slots are free again, whatever the clients do.
        with own_cgi_gateway(tmp_path, timeout_s="3", cgi_max_scripts="2", cgi_queue_max="0") as (
            url,
            master,
        ):
            parts = urlsplit(url)
            assert parts.hostname and parts.port
            raw = (
                f"POST /read-to-eof HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                "Content-Length: 1000\r\n\r\nonly a little"
            ).encode()
            with ThreadPoolExecutor(2) as pool:
                stalled = [
                    pool.submit(exchange, parts.hostname, parts.port, raw, deadline_s=15)
                    for _ in range(2)
                ]
                scripts_running(master, 2)
                during = requests.get(f"{url}/env", timeout=10)
                results = [s.result() for s in stalled]
            after = requests.get(f"{url}/env", timeout=10)
        assert during.status_code == 503  # both slots held by the stalled bodies
        for result in results:
            assert_json_error(result, 408)
            assert result.closed, result.outcome()  # at the deadline: the client never left
        assert after.status_code == 200

    def test_scripts_die_with_their_worker(self, tmp_path: Path) -> None:
        # Item 14: a worker killed while its script runs leaves no script behind.
        with own_cgi_gateway(tmp_path, timeout_s="60") as (url, master):
            with ThreadPoolExecutor(2) as pool:
                pool.submit(requests.get, f"{url}/sleep", timeout=90)
                scripts = scripts_running(master, 1)
                (worker,) = children(master)
                os.kill(worker, signal.SIGKILL)
                gone = wait_until(lambda: not any(alive(p) for p in scripts), 10)
                assert gone, f"scripts {scripts} outlived their worker {worker}"
                # A new worker serves the next request.
                assert requests.get(f"{url}/env", timeout=30).status_code == 200


# -- one reason phrase per status, whoever answers ---------------------------------------


def first_line(ep: Endpoint, raw: bytes) -> str:
    """The status line of the answer to ``raw`` (read by hand: h11 drops nothing but
    does not keep the reason phrase in RawResponse)."""
    with ep.connect(10) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        data = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in data and (chunk := sock.recv(65536)):
                data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


class TestReasonPhrases:
    def test_a_413_reads_the_same_from_every_mode_and_layer(
        self, endpoints: list[Endpoint]
    ) -> None:
        # Per pair, against the one phrase table (gateway.errors): so every mode,
        # server and layer reads alike.
        form = b"a=" + b"x" * (1024 * 1024 + 1)  # over the app's form limit
        lines: dict[str, str] = {}
        for ep in endpoints:
            app = (
                f"POST {ep.prefix}/form HTTP/1.1\r\nHost: {ep.hostport}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(form)}\r\nConnection: close\r\n\r\n"
            ).encode() + form
            lines[f"{ep.name} app"] = first_line(ep, app)
            if ep.direct:  # through nginx, nginx answers this one itself
                gateway = f"POST /upload HTTP/1.1\r\nHost: {ep.hostport}\r\n"
                gateway += "Content-Length: 99999999999\r\n\r\n"
                lines[f"{ep.name} gateway"] = first_line(ep, gateway.encode())
        assert set(lines.values()) == {f"HTTP/1.1 {status_line(413)}"}, lines
