"""The servers behind each mode (gateway/servers/): options, probes, and each one run for real.

Every server is started as the lab starts it (``python -m gateway serve --mode M
--server S`` on a free loopback port), asked /healthz in its own protocol
(``python -m gateway health``), asked ``/`` the way nginx would ask it, and
stopped with SIGTERM to its process group, which must leave nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from apps.breakfast.kitchen import WS_MAX_MESSAGE_BYTES
from gateway.config import APPS_DIR, Settings, SettingsError, default_workers
from gateway.servers import fcgiwrap, probe
from gateway.servers.gunicorn import (
    STOP_SIGNALS,
    gunicorn_options,
    hold_stop_signals,
    release_stop_signals,
)
from gateway.servers.registry import (
    SERVERS,
    ServerError,
    check_server,
    default_server,
    listens_on_unix,
    speaks_http,
    wire,
)
from gateway.servers.uvicorn import JSONErrorsHttpTools, unix_listener, uvicorn_options

ROOT = Path(__file__).resolve().parents[3]
PAIRS = [(m, s) for m, names in SERVERS.items() for s in names]
START_S = 30.0


# -- the registry and the settings ----------------------------------------------------


def test_the_first_server_of_each_mode_is_todays_default() -> None:
    assert {m: default_server(m) for m in SERVERS} == {
        "cgi": "runner",
        "wsgi": "sync",
        "asgi": "gunicorn",
    }


@pytest.mark.parametrize(
    ("mode", "server", "message"),
    [
        ("wsgi", "uvicorn", "unknown server 'uvicorn' for wsgi"),
        ("cgi", "gthread", "unknown server 'gthread' for cgi"),
        ("fastcgi", "fcgiwrap", "unknown mode 'fastcgi'"),
    ],
)
def test_a_server_of_another_mode_is_refused(mode: str, server: str, message: str) -> None:
    with pytest.raises(ServerError, match=message):
        check_server(mode, server)


def test_settings_refuse_a_server_the_mode_does_not_have() -> None:
    with pytest.raises(SettingsError, match="unknown server 'uwsgi' for asgi"):
        Settings.from_env({"GATEWAY_MODE": "asgi", "GATEWAY_SERVER": "uwsgi"})
    with pytest.raises(SettingsError, match="threads must be positive"):
        Settings(mode="wsgi", threads=0)


def test_wires() -> None:
    assert {(m, s): wire(m, s) for m, s in PAIRS if not speaks_http(m, s)} == {
        ("cgi", "fcgiwrap"): "fastcgi",
        ("wsgi", "uwsgi"): "uwsgi",
    }


# -- what each server is asked to do --------------------------------------------------


def test_gthread_adds_threads_to_the_sync_servers_workers() -> None:
    sync = gunicorn_options(Settings(mode="wsgi"))
    gthread = gunicorn_options(Settings(mode="wsgi", server="gthread", threads=6))
    assert (sync["worker_class"], gthread["worker_class"]) == ("sync", "gthread")
    assert gthread["workers"] == sync["workers"] == default_workers("wsgi")
    assert gthread["threads"] == 6 and "threads" not in sync


def test_uwsgi_is_sync_workers_speaking_the_uwsgi_protocol() -> None:
    options = gunicorn_options(Settings(mode="wsgi", server="uwsgi"))
    assert (options["worker_class"], options["protocol"]) == ("sync", "uwsgi")
    assert options["uwsgi_allow_ips"] == "127.0.0.1,::1"
    # gunicorn 27.0 matches uwsgi peers as strings: a network matches nobody.
    compose = Settings(mode="wsgi", server="uwsgi", forwarded_allow_ips="172.28.0.0/24")
    assert gunicorn_options(compose)["uwsgi_allow_ips"] == "*"
    assert "protocol" not in gunicorn_options(Settings(mode="wsgi"))


@pytest.mark.parametrize(
    ("mode", "server"),
    [
        ("cgi", "runner"),
        ("wsgi", "sync"),
        ("wsgi", "gthread"),
        ("wsgi", "uwsgi"),
        ("asgi", "gunicorn"),
    ],
)
def test_every_gunicorn_server_parses_with_gunicorns_python_parser(mode: str, server: str) -> None:
    """Not gunicorn_h1c, even where it is installed (gunicorn's default takes it then)."""
    from gunicorn.config import Config

    options = gunicorn_options(Settings(mode=mode, server=server))
    assert options["http_parser"] == "python"
    config = Config()
    config.set("http_parser", options["http_parser"])  # a value gunicorn 27 knows
    assert config.http_parser == "python"


def test_uvicorn_uses_httptools_with_json_errors_and_leaves_forwarding_to_the_layer() -> None:
    options = uvicorn_options(Settings(mode="asgi", server="uvicorn", workers=3))
    # The app's /ws message limit, as under gunicorn (a bigger message closes with 1009).
    assert options["ws_max_size"] == WS_MAX_MESSAGE_BYTES
    assert issubclass(options["http"], HttpToolsProtocol)
    assert options["http"] is JSONErrorsHttpTools
    assert (options["loop"], options["proxy_headers"], options["workers"]) == ("uvloop", False, 3)


def test_fcgiwrap_runs_one_process_per_script_allowed_at_once() -> None:
    settings = Settings(mode="cgi", server="fcgiwrap", cgi_max_scripts=7, port=9001)
    assert fcgiwrap.fcgiwrap_command(settings, "/usr/sbin/fcgiwrap") == [
        "/usr/sbin/fcgiwrap", "-c", "7",
    ]  # fmt: skip


def test_fcgiwrap_listens_again_at_once_on_a_port_it_just_served() -> None:
    # Connections leave the port in TIME_WAIT; the launcher's socket reuses it.
    port = free_port()
    first = fcgiwrap.listen_socket("127.0.0.1", port)
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = first.accept()
    accepted.close()  # the server closes first: its side waits in TIME_WAIT
    client.close()
    first.close()
    fcgiwrap.listen_socket("127.0.0.1", port).close()


def test_fcgiwrap_starts_from_a_clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_SECRET", "x")
    env = fcgiwrap.script_env(Settings(mode="cgi", server="fcgiwrap"), "/opt/venv/bin/python")
    assert set(env) == {"PATH", "LANG", "GATEWAY_SERVER"}
    assert env["PATH"].split(os.pathsep)[0] == "/opt/venv/bin"
    assert env["GATEWAY_SERVER"] == "fcgiwrap"


# -- the probes: requests as nginx would build them -----------------------------------


def test_fastcgi_request_is_begin_params_and_empty_stdin() -> None:
    raw = probe.fastcgi_request({"A": "1", "LONG": "x" * 200})
    kinds = []
    pos = 0
    while pos < len(raw):
        kinds.append(raw[pos + 1])
        pos += 8 + int.from_bytes(raw[pos + 4 : pos + 6], "big")
    assert kinds == [probe.FCGI_BEGIN_REQUEST, probe.FCGI_PARAMS, probe.FCGI_PARAMS, 5]
    # §3.4: a value of 128 bytes or more has a 4-byte length with the top bit set.
    assert b"\x04\x80\x00\x00\xc8LONG" in raw


def test_uwsgi_packet_header_counts_the_variables() -> None:
    raw = probe.uwsgi_request({"A": "bc"})
    assert raw == b"\x00\x07\x00\x00" + b"\x01\x00A\x02\x00bc"


@pytest.mark.parametrize(
    ("wire_name", "answer", "status"),
    [
        ("http", b"HTTP/1.1 200 OK\r\n\r\n", 200),
        ("uwsgi", b"HTTP/1.1 503 Service Unavailable\r\n\r\n", 503),
        ("http", b"garbage", None),
        ("fastcgi", probe.fcgi_record(6, b"Status: 404 Not Found\nA: b\n\nbody"), 404),
        ("fastcgi", probe.fcgi_record(6, b"Content-Type: text/plain\r\n\r\nhi"), 200),
        ("fastcgi", probe.fcgi_record(6, b"Status: 200 OK"), None),  # no header block yet
    ],
)
def test_answer_status(wire_name: str, answer: bytes, status: int | None) -> None:
    assert probe.answer_status(wire_name, answer) == status


# -- each server, run for real ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def group_members(pgid: int) -> list[int]:
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(stat_file.parent.name))
    return members


@contextmanager
def running(mode: str, server: str, **extra_env: str) -> Iterator[int]:
    """The gateway on a free port, healthy; on exit SIGTERM its group, which must empty."""
    port = free_port()
    cmd = [sys.executable, "-m", "gateway", "serve", "--mode", mode, "--server", server]
    env = os.environ | {"GATEWAY_WORKERS": "2", "GATEWAY_CGI_MAX_SCRIPTS": "2"} | extra_env
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    health = [sys.executable, "-m", "gateway", "health", "--mode", mode, "--server", server]
    try:
        deadline = time.monotonic() + START_S
        while subprocess.run([*health, "--port", str(port)], cwd=ROOT, check=False).returncode:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"{mode}/{server} exited: {log.read().decode(errors='replace')}")
            assert time.monotonic() < deadline, f"{mode}/{server} never became healthy"
            time.sleep(0.2)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log.seek(0)
            told = log.read().decode(errors="replace")[-4000:]
            pytest.fail(f"{mode}/{server} still running 20 s after SIGTERM:\n{told}")
        deadline = time.monotonic() + 10
        while group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        log.close()
        assert group_members(proc.pid) == [], f"{mode}/{server} left processes behind"


def ask(port: int | Path, request: bytes) -> bytes:
    """``request`` sent to 127.0.0.1:``port``, or to the unix socket at ``port``."""
    if isinstance(port, Path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(str(port))
    else:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    with sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def head_of(text: bytes) -> dict[str, str]:
    head = text.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("latin-1")
    lines = head.split("\n")
    return {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}


def who_request(mode: str, server: str) -> bytes:
    params = probe.health_params("/", str(APPS_DIR / "cgi_app.py"))
    if wire(mode, server) == "fastcgi":
        return probe.fastcgi_request(params)
    if wire(mode, server) == "uwsgi":
        return probe.uwsgi_request(params)
    return b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(("mode", "server"), PAIRS, ids=[f"{m}-{s}" for m, s in PAIRS])
def test_each_server_serves_the_app_and_names_itself(mode: str, server: str) -> None:
    with running(mode, server) as port:
        answer = ask(port, who_request(mode, server))
        if wire(mode, server) == "fastcgi":
            answer = b"Status-Line: x\n" + probe.fastcgi_stdout(answer)
        headers = head_of(answer)
        assert headers["x-gateway-server"] == server
        assert headers["x-gateway-mode"] == mode


def test_fcgiwrap_forks_a_new_script_under_an_fcgiwrap_process() -> None:
    with running("cgi", "fcgiwrap") as port:
        seen = []
        for _ in range(3):
            out = probe.fastcgi_stdout(ask(port, who_request("cgi", "fcgiwrap")))
            seen.append(head_of(b"Status-Line: x\n" + out))
        pids = {h["x-gateway-pid"] for h in seen}
        assert len(pids) == 3  # a fresh process for every request
        for worker in {h["x-gateway-worker"] for h in seen}:
            assert Path(f"/proc/{worker}/comm").read_text().strip() == "fcgiwrap"


def test_uwsgi_server_refuses_http_and_uvicorn_answers_bad_http_in_json() -> None:
    bad = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"
    with running("asgi", "uvicorn") as port:
        answer = ask(port, bad)
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b'"status": 400' in answer and b"application/json" in answer
    with running("wsgi", "uwsgi") as port:
        # An HTTP request is not a uwsgi packet ("G" is no modifier1 gunicorn knows):
        # refused before any app code runs, in the lab's JSON. gunicorn 27.0.1 says
        # 500, not 4xx: its handle_error does not count uwsgi parse errors as the
        # client's (gunicorn/workers/base.py); nginx never sends such a packet.
        answer = ask(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not answer.startswith(b"HTTP/1.1 2") and b'"status"' in answer
        assert b"X-Gateway-Mode" not in answer


UNIX_PAIRS = [(m, s) for m, s in PAIRS if listens_on_unix(m, s)]


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(("mode", "server"), UNIX_PAIRS, ids=[f"{m}-{s}" for m, s in UNIX_PAIRS])
def test_the_unix_socket_is_trusted_and_the_tcp_port_is_not(
    tmp_path: Path, mode: str, server: str
) -> None:
    # Natively nginx reaches the gateways on unix sockets (lab.nginx.render.native_socket).
    # With "unix" alone in the allow list, X-Forwarded-Prefix mounts the app at
    # /mounted over the socket (the app's "/" answers) and changes nothing on the
    # TCP port (/mounted/ is not found): the socket is really served, and trust
    # follows the connection, not the headers.
    uds = tmp_path / "gw.sock"
    # (The uwsgi server takes packets from the allowed peers alone: the health
    # probe on the TCP port needs 127.0.0.1 there.)
    allow = "unix,127.0.0.1" if wire(mode, server) == "uwsgi" else "unix"
    env = {"GATEWAY_UDS": str(uds), "GATEWAY_FORWARDED_ALLOW_IPS": allow}
    with running(mode, server, **env) as port:
        if wire(mode, server) == "uwsgi":
            params = probe.health_params("/mounted/", str(APPS_DIR / "cgi_app.py"))
            packet = probe.uwsgi_request(params | {"HTTP_X_FORWARDED_PREFIX": "/mounted"})
            # uwsgi carries nginx's packets, not HTTP: over the socket they are served.
            assert status_of(ask(uds, packet)) == 200
            return
        request = (
            b"GET /mounted/ HTTP/1.1\r\nHost: x\r\nX-Forwarded-Prefix: /mounted\r\n"
            b"Connection: close\r\n\r\n"
        )
        assert status_of(ask(uds, request)) == 200
        assert status_of(ask(port, request)) == 404


def test_a_server_with_one_socket_refuses_a_unix_socket(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot listen on a unix socket"):
        Settings(mode="cgi", server="fcgiwrap", uds=str(tmp_path / "s.sock"))
    with pytest.raises(SettingsError, match="longer than a unix socket path"):
        Settings(mode="wsgi", uds="/" + "x" * 200)


class _Arbiter:
    """gunicorn 27's arbiter as the hook sees it: the queue its handlers fill."""

    def __init__(self, *queued: int) -> None:
        self.SIG_QUEUE: queue.SimpleQueue[int] = queue.SimpleQueue()
        for signum in queued:
            self.SIG_QUEUE.put_nowait(signum)


class _Worker:
    alive = True
    loop: asyncio.AbstractEventLoop | None = None


@pytest.fixture
def restored_signals() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    for signum in STOP_SIGNALS:  # stands in for the arbiter's: takes a stop, acts on none
        signal.signal(signum, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@pytest.mark.usefixtures("restored_signals")
@pytest.mark.parametrize("with_loop", [False, True], ids=["sync", "asyncio"])
def test_a_stop_signal_sent_while_a_worker_boots_is_held_until_it_can_act(
    with_loop: bool,
) -> None:
    """gunicorn's post_fork and post_worker_init hooks: a SIGTERM that arrives
    before the worker's own handler can act stays pending, and reaches it after."""
    options = gunicorn_options(Settings(mode="asgi"))
    assert options["post_fork"] is hold_stop_signals
    assert options["post_worker_init"] is release_stop_signals
    worker, got = _Worker(), []
    hold_stop_signals(_Arbiter(), worker)
    # Lands while the worker boots: held. (To this thread: a booting worker has
    # no other, but this test process may, and one of those would take it.)
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
    assert signal.SIGTERM in signal.sigpending()
    if with_loop:
        # As the asyncio worker: uvloop's handler, which drops a signal that
        # arrives before the loop runs (the reason for holding it).
        loop = worker.loop = uvloop.new_event_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, lambda: got.append("term"))
            release_stop_signals(worker)
            loop.run_until_complete(asyncio.sleep(0.2))
            loop.remove_signal_handler(signal.SIGTERM)
        finally:
            loop.close()
    else:
        signal.signal(signal.SIGTERM, lambda signum, frame: got.append("term"))
        release_stop_signals(worker)
    assert got == ["term"]
    assert signal.SIGTERM not in signal.sigpending()


@pytest.mark.usefixtures("restored_signals")
def test_a_stop_signal_the_arbiters_handler_took_after_the_fork_stops_the_worker() -> None:
    worker = _Worker()
    hold_stop_signals(_Arbiter(signal.SIGCHLD, signal.SIGTERM), worker)
    assert not worker.alive
    worker = _Worker()
    hold_stop_signals(_Arbiter(signal.SIGCHLD, signal.SIGHUP), worker)
    assert worker.alive


def test_gunicorn_binds_the_socket_beside_the_port_and_keeps_unix_from_its_ip_list() -> None:
    options = gunicorn_options(Settings(mode="wsgi", port=9000, uds="/run/lab/gw.sock"))
    assert options["bind"] == ["127.0.0.1:9000", "unix:/run/lab/gw.sock"]
    assert options["forwarded_allow_ips"] == "127.0.0.1,::1"  # gunicorn: unix always trusted
    assert gunicorn_options(Settings(mode="wsgi"))["bind"] == ["127.0.0.1:8000"]


def test_uvicorns_unix_socket_lets_nginx_workers_connect(tmp_path: Path) -> None:
    # Started by root, nginx's workers are nobody: connecting takes write
    # permission on the socket file (its directory says who may reach it).
    path = tmp_path / "gw.sock"
    path.write_text("")  # not a socket: left alone, so bind fails
    with pytest.raises(OSError):
        unix_listener(str(path))
    path.unlink()
    with unix_listener(str(path)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666
    with unix_listener(str(path)):  # a stale socket file is replaced
        assert path.is_socket()


def test_a_sync_worker_outlives_the_slowest_legitimate_request() -> None:
    # gunicorn's sync worker with two listeners reports in before it waits for a
    # connection (up to half the timeout), not when it takes one: a request is
    # sure of only half the worker timeout, which must cover the lab's timeout.
    settings = Settings(mode="wsgi", uds="/run/lab/gw.sock")
    assert gunicorn_options(settings)["timeout"] / 2 > settings.timeout_s
