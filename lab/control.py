"""The dashboard's server picker, on the host: ``/lab/api/servers`` behind nginx.

The page at ``/lab/`` cannot start or stop processes; this small WSGI app can,
because it runs on the host beside the lab: ``lab up`` starts it on every target,
on a unix socket in a directory of the state dir (``lab.nginx.render.control_socket``),
and nginx proxies ``/lab/api/`` to it; under Docker that directory is bind-mounted
into nginx's container. It does exactly what ``lab server MODE SERVER`` does,
on the target it is told (LAB_TARGET), under the same lock:

- ``GET /lab/api/servers``: ``{"servers": {mode: server}, "choices": {mode: [...]}}``,
  the servers in force (``lab status``) and the names each mode may take.
- ``POST /lab/api/servers`` with the JSON body ``{"mode": "wsgi", "server": "gthread"}``:
  the swap (start the new server, wait for its health, reload nginx, stop the
  old one) starts on its own thread: 202 at once, and ``"swap"`` in every
  answer says how the last one went (``swapping``, ``done`` or ``failed`` with
  its ``error``). Asking for the server in force is a 200 that changes nothing.

Bad input changes nothing and gets a 4xx JSON ``{"error", "status"}``: a body
that is not a JSON object naming a known mode and one of its servers (400),
a body that is not ``application/json`` (415: a plain HTML form from another
site cannot send one without the browser asking first), a request from
another site's page (``Origin`` not this host: 403), a swap already in
progress (409). A server that fails to start leaves the old one serving and
its one-line reason in ``swap.error``. Anything else that goes wrong is a JSON
500 (its traceback in the control log). Status lines and error bodies are
``gateway.errors``' own. HTTP itself is parsed by wsgiref's server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from gateway._types import Environ, StartResponse
from gateway.errors import error_data, status_line
from gateway.servers.registry import SERVERS, ServerError, check_server
from lab.errors import LabError
from lab.routing import MODES
from lab.settings import LabSettings
from lab.targets import ServerTarget, get_target, state
from lab.targets.control_process import HEALTH_PATH, prepare_dir

PATH: Final = "/lab/api/servers"
MAX_BODY: Final = 4096  # {"mode": ..., "server": ...} is a few dozen bytes


class BadRequest(Exception):
    """A request this endpoint refuses; ``status`` is its 4xx."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Choice:
    mode: str
    server: str


def parse_choice(body: bytes) -> Choice:
    """The mode and server a POST body asks for, checked against the registry (pure)."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest('the body must be JSON: {"mode": "wsgi", "server": "gthread"}') from None
    if not isinstance(data, dict) or set(data) != {"mode", "server"}:
        raise BadRequest('the body must be a JSON object with exactly "mode" and "server"')
    mode, server = data["mode"], data["server"]
    if not isinstance(mode, str) or mode not in MODES:
        raise BadRequest(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if not isinstance(server, str):
        raise BadRequest(f"the server must be a string, not {server!r}")
    try:
        return Choice(mode, check_server(mode, server))
    except ServerError as exc:
        raise BadRequest(str(exc)) from None


def check_origin(origin: str | None, host: str | None) -> None:
    """403 unless the request comes from a page of this host (or names no origin).

    Browsers send ``Origin`` with every POST (the Fetch standard, "Origin
    header"); a page of another site that posts here names its own origin.
    """
    if origin is None:
        return  # not from a browser page: curl, the tests
    if origin == "null" or not host or urlsplit(origin).netloc.lower() != host.lower():
        raise BadRequest(f"requests from {origin} may not swap the lab's servers", 403)


def media_type(content_type: str) -> str:
    """``application/json`` of ``application/json; charset=utf-8`` (RFC 9110 §8.3.1)."""
    return content_type.split(";", 1)[0].strip().lower()


Swap = Callable[[str, str], None]
InForce = Callable[[], Mapping[str, str]]


class Swaps:
    """One swap at a time, run on its own thread; the last one's outcome for GET.

    The POST that asks for a swap is answered at once (202): the swap reloads
    nginx, and nginx's old worker carrying that very POST would otherwise hold
    the swap's drain until its deadline.
    """

    def __init__(self, swap: Swap) -> None:
        self._swap = swap
        self._lock = threading.Lock()
        self.last: dict[str, Any] | None = None  # {"mode", "server", "was", "state"[, "error"]}

    def start(self, mode: str, server: str, was: str | None) -> dict[str, Any]:
        with self._lock:
            if self.last is not None and self.last["state"] == "swapping":
                busy = self.last
                raise BadRequest(f"{busy['mode']} is being swapped to {busy['server']}: wait", 409)
            record: dict[str, Any] = {"mode": mode, "server": server, "was": was}
            self.last = record | {"state": "swapping"}
        threading.Thread(target=self._run, args=(record,), daemon=True).start()
        return self.last

    def _run(self, record: dict[str, Any]) -> None:
        try:
            self._swap(record["mode"], record["server"])
            outcome = record | {"state": "done"}
        except Exception as exc:  # reported to the page, whatever it was
            outcome = record | {"state": "failed", "error": str(exc).splitlines()[0]}
        with self._lock:
            self.last = outcome


class ControlApp:
    """The WSGI app: ``in_force()`` reads the servers, ``swaps`` changes one."""

    def __init__(self, in_force: InForce, swaps: Swaps) -> None:
        self.in_force = in_force
        self.swaps = swaps

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            status, body = self.handle(environ)
        except BadRequest as exc:
            status, body = exc.status, error_data(exc.status, str(exc))
        except LabError as exc:  # the lab cannot say what runs (not running, half dead)
            status, body = 503, error_data(503, str(exc).splitlines()[0])
        except Exception as exc:  # a bug: still the lab's JSON error, the traceback in the log
            traceback.print_exc(file=sys.stderr)
            status, body = 500, error_data(500, f"the server picker failed: {type(exc).__name__}")
        data = json.dumps(body).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ]
        if status == 405:
            headers.append(("Allow", "GET, POST"))
        start_response(status_line(status), headers)
        return [data]

    def handle(self, environ: Environ) -> tuple[int, dict[str, Any]]:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            return 200, {"ok": True}
        if path != PATH:
            raise BadRequest(f"no such endpoint: {path}", 404)
        if method in ("GET", "HEAD"):
            return 200, self.listing()
        if method != "POST":
            raise BadRequest(f"{method} is not allowed here: use GET or POST", 405)
        check_origin(environ.get("HTTP_ORIGIN"), environ.get("HTTP_HOST"))
        if media_type(environ.get("CONTENT_TYPE", "")) != "application/json":
            raise BadRequest("the body must be sent as application/json", 415)
        choice = parse_choice(read_body(environ))
        was = self.in_force().get(choice.mode)
        if was == choice.server:
            return 200, self.listing()
        started = self.swaps.start(choice.mode, choice.server, was)
        return 202, self.listing() | {"swap": started}

    def listing(self) -> dict[str, Any]:
        return {
            "servers": dict(self.in_force()),
            "choices": {m: list(SERVERS[m]) for m in MODES},
            "swap": self.swaps.last,
        }


def read_body(environ: Environ) -> bytes:
    """The request body, at most MAX_BODY bytes (PEP 3333: read CONTENT_LENGTH bytes, no more)."""
    raw = environ.get("CONTENT_LENGTH") or "0"
    if not raw.isascii() or not raw.isdigit():
        raise BadRequest(f"bad Content-Length {raw!r}")
    length = int(raw)
    if length > MAX_BODY:
        raise BadRequest(f"the body is larger than {MAX_BODY} bytes", 413)
    body: bytes = environ["wsgi.input"].read(length)
    return body


# -- the process: wsgiref's server on a unix socket, one thread per request ----------


class ThreadingUnixServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server on a unix socket; a GET answers while a swap (seconds) runs.

    Only nginx reaches it (through the socket's directory, ``prepare_dir``):
    nothing listens on a network address, on any target.
    """

    address_family = socket.AF_UNIX
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind reads a (host, port) pair: a unix socket has neither.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", 0
        self.setup_environ()

    def get_request(self) -> tuple[socket.socket, Any]:
        # A unix peer's address is "": give wsgiref the (host, port) pair it logs and
        # puts in REMOTE_ADDR.
        conn, _ = self.socket.accept()
        return conn, ("unix", 0)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        sys.stderr.write(f"lab control: {format % args}\n")


def lab_app() -> ControlApp:
    """The app wired to the running lab: the target's status and ``lab server``'s swap."""

    def target() -> ServerTarget:
        cfg = LabSettings.from_env()
        found = get_target(state.current_target_name(cfg))
        if not isinstance(found, ServerTarget):
            raise LabError(f"the {found.name} target cannot swap servers")
        return found

    def in_force() -> Mapping[str, str]:
        cfg = LabSettings.from_env()
        return dict(dict[str, Any](target().status(cfg)).get("servers") or {})

    def swap(mode: str, server: str) -> None:
        cfg = LabSettings.from_env()
        with state.exclusive(cfg, "server"):
            target().server(cfg, mode, server)

    return ControlApp(in_force, Swaps(swap))


def serve(socket_path: Path, group: int | None) -> None:
    """Listen on ``socket_path`` (a stale one from a killed run is replaced) until killed."""
    _, socket_mode = prepare_dir(socket_path.parent, group)
    socket_path.unlink(missing_ok=True)
    address: Any = str(socket_path)  # typeshed knows TCPServer's (host, port) only
    with ThreadingUnixServer(address, QuietHandler) as server:
        server.set_app(lab_app())
        if group is not None:
            with contextlib.suppress(PermissionError):
                os.chown(socket_path, -1, group)
        os.chmod(socket_path, socket_mode)
        print(f"lab control: serving {PATH} on unix:{socket_path}", flush=True)
        try:
            server.serve_forever()
        finally:
            socket_path.unlink(missing_ok=True)


def main(argv: list[str]) -> None:
    if not 1 <= len(argv) <= 2:
        sys.exit("usage: python -m lab.control SOCKET_PATH [GROUP_ID]")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unlink the socket on the way out
    serve(Path(argv[0]), int(argv[1]) if len(argv) == 2 else None)


if __name__ == "__main__":
    main(sys.argv[1:])
