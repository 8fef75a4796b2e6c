"""Which server runs ASGI mode: gunicorn's asyncio worker or uvicorn (httptools, h11)?

Starts each candidate with one worker on a loopback port, serving the same app
(the breakfast ASGI app inside the gateway layer), and measures in one run:

- speed: wrk on ``/`` (hello) at 50 connections and on ``/coffee?ms=100`` at 100;
- strictness: how each answers malformed requests sent to it directly (CONTRACT:
  every gateway rejects malformed HTTP by itself, nginx is not the only defence).

    .venv/bin/python benchmarks/asgi_servers.py [--seconds 5]

Figures are machine- and load-dependent: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import h11

PORT = 18791
SERVE = (
    "import uvicorn; from gateway.config import Settings; "
    "from gateway.servers.gunicorn import build_app; "
    "uvicorn.run(build_app(Settings(mode='asgi')), host='127.0.0.1', port={port}, "
    "http='{http}', loop='{loop}', log_level='warning', access_log=False)"
)
CANDIDATES: dict[str, list[str]] = {
    "gunicorn asgi worker": [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--mode",
        "asgi",
        "--workers",
        "1",
        "--port",
        str(PORT),
    ],
    "uvicorn httptools+uvloop": [
        sys.executable,
        "-c",
        SERVE.format(port=PORT, http="httptools", loop="uvloop"),
    ],
    "uvicorn h11+asyncio": [
        sys.executable,
        "-c",
        SERVE.format(port=PORT, http="h11", loop="asyncio"),
    ],
}

# Each should get a 4xx or a close, never a 2xx, a 5xx or a hang.
MALFORMED: dict[str, bytes] = {
    "CL and TE both": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two different CLs": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n\r\nab",
    "space before colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "bad chunk size": b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"\r\nzz\r\nabc\r\n0\r\n\r\n",
    "NUL in header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "bad method token": b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "HTTP/1.1 without Host": b"GET / HTTP/1.1\r\n\r\n",
    "TE: chunked, HTTP/1.0": b"POST /upload HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    "bare LF line ends": b"GET / HTTP/1.1\nHost: x\n\n",
}


@contextmanager
def running(cmd: list[str]) -> Iterator[None]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"{cmd} did not start")
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def wrk(path: str, connections: int, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{PORT}{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(match.group(1)) if match else 0.0


def answer(raw: bytes) -> str:
    """The first response's status, parsed by h11, or how the connection ended."""
    client = h11.Connection(h11.CLIENT)
    with socket.create_connection(("127.0.0.1", PORT), timeout=3) as sock:
        sock.sendall(raw)
        try:
            while True:
                data = sock.recv(65536)
                client.receive_data(data)
                event = client.next_event()
                while event is h11.NEED_DATA and data:
                    data = sock.recv(65536)
                    client.receive_data(data)
                    event = client.next_event()
                if isinstance(event, h11.Response):
                    return str(event.status_code)
                if not data or isinstance(event, h11.ConnectionClosed):
                    return "close"
        except TimeoutError:
            return "HANG"
        except h11.RemoteProtocolError:
            return "garbled"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    os.environ.setdefault("GATEWAY_LOG_LEVEL", "warning")
    rows = {}
    for name, cmd in CANDIDATES.items():
        with running(cmd):
            hello = wrk("/", 50, args.seconds)
            io = wrk("/coffee?ms=100", 100, args.seconds)
            strict = {case: answer(raw) for case, raw in MALFORMED.items()}
        rows[name] = (hello, io, strict)
        print(f"{name:28} hello {hello:9.0f} req/s   io(100 ms, c100) {io:7.0f} req/s", flush=True)
    base = rows["gunicorn asgi worker"][0]
    print("\nhello throughput relative to gunicorn's asgi worker:")
    for name, (hello, _, _) in rows.items():
        print(f"  {name:28} {hello / base:5.2f}x")
    print("\nmalformed requests sent directly (4xx or close is right; 2xx, 5xx, HANG are not):")
    print(f"  {'case':24}" + "".join(f"{n[:24]:>26}" for n in rows))
    for case in MALFORMED:
        print(f"  {case:24}" + "".join(f"{rows[n][2][case]:>26}" for n in rows))


if __name__ == "__main__":
    main()
