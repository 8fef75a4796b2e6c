#!/usr/bin/env python3
"""A CGI script for the runner and bridge tests: PATH_INFO picks a behaviour.

Stdlib only; it runs as the gateway runs scripts (python -I -S).
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from urllib.parse import parse_qs

out = sys.stdout.buffer
PARAMS = {k: v[0] for k, v in parse_qs(os.environ.get("QUERY_STRING", "")).items()}


def respond(body: bytes, content_type: str = "application/json", extra: str = "") -> None:
    out.write(f"Content-Type: {content_type}\r\n{extra}\r\n".encode() + body)


def env() -> None:
    length = int(os.environ.get("CONTENT_LENGTH") or 0)
    body = sys.stdin.buffer.read(length) if length else b""
    info = {
        "env": dict(os.environ),
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        "body_bytes": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    respond(json.dumps(info).encode())


def read_to_eof() -> None:
    """Reads stdin until EOF: it only ends if the gateway closes the pipe."""
    body = sys.stdin.buffer.read()
    respond(json.dumps({"body_bytes": len(body)}).encode())


def sleep_with_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    with open(PARAMS["pidfile"], "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    time.sleep(3600)


def background_child() -> None:
    """Leaves `sleep 30` running with its stdio detached, then answers at once."""
    devnull = subprocess.DEVNULL
    child = subprocess.Popen(["sleep", "30"], stdin=devnull, stdout=devnull, stderr=devnull)
    respond(json.dumps({"child": child.pid}).encode())


def slow() -> None:
    time.sleep(int(PARAMS.get("ms", "200")) / 1000)
    respond(b'{"slow": true}')


def stderr_flood() -> None:
    line = b"x" * 99 + b"\n"
    for _ in range(50_000):  # about 5 MB
        sys.stderr.buffer.write(line)
    respond(b'{"flooded": "stderr"}')


def output_flood() -> None:
    respond(b"")
    chunk = b"y" * 65536
    for _ in range(160):  # 10 MiB
        out.write(chunk)


def crash() -> None:
    sys.stderr.write("oops: something broke\n")
    sys.exit(1)


def stream() -> None:
    out.write(b"Content-Type: text/plain\nX-Accel-Buffering: no\n\n")
    for i in range(3):
        out.write(f"line {i}\n".encode())
        out.flush()
        time.sleep(0.1)


def close_and_linger() -> None:
    respond(b"{}")
    out.flush()
    os.close(1)
    os.close(2)
    time.sleep(3600)


def close_then_exit() -> None:
    respond(b"{}")
    out.flush()
    os.close(1)
    os.close(2)
    time.sleep(0.2)
    os._exit(3)


def stream_forever() -> None:
    out.write(b"Content-Type: text/plain\nX-Accel-Buffering: no\n\nfirst\n")
    out.flush()
    time.sleep(3600)


BEHAVIOURS = {
    "/env": env,
    "/read-to-eof": read_to_eof,
    "/ignore-stdin": lambda: respond(b'{"read": false}'),
    "/sleep": lambda: time.sleep(3600),
    "/sleep-with-child": sleep_with_child,
    "/background-child": background_child,
    "/slow": slow,
    "/stderr-flood": stderr_flood,
    "/output-flood": output_flood,
    "/crash": crash,
    "/stream": stream,
    "/bad-output": lambda: out.write(b"this is not a header\n\n"),
    "/not-found": lambda: out.write(b"Status: 404 Not Found\nContent-Type: text/plain\n\nnope"),
    "/redirect-local": lambda: out.write(
        f"Location: {os.environ['SCRIPT_NAME']}/env?from=redirect\n\n".encode()
    ),
    "/redirect-loop": lambda: out.write(
        f"Location: {os.environ['SCRIPT_NAME']}/redirect-loop\n\n".encode()
    ),
    "/redirect-client": lambda: out.write(b"Location: http://example.com/elsewhere\n\n"),
    "/no-content": lambda: out.write(b"Status: 204 No Content\n\n"),
    "/exit-1-after-response": lambda: (respond(b'{"ok": true}'), out.flush(), sys.exit(1)),
    "/close-and-linger": close_and_linger,
    "/close-then-exit": close_then_exit,
    "/stderr-no-newline": lambda: (sys.stderr.write("z" * 5000), respond(b"{}")),
    "/stream-forever": stream_forever,
    "/fake-trace": lambda: respond(b"{}", extra="X-Gateway-Pid: 1\r\nContent-Length: 999\r\n"),
}

BEHAVIOURS[os.environ.get("PATH_INFO") or "/env"]()
