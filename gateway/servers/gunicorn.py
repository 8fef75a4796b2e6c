"""gunicorn runs every mode; only the worker model and the app differ.

gunicorn parses HTTP (and rejects malformed requests itself, so nginx is not
the only line of defence), pre-forks workers, replaces dead ones and reloads
gracefully on HUP. What each mode asks of it:

- cgi: ``gthread``, one process whose threads wait on scripts; the app is the
  CGI bridge, which forks a fresh script per request.
- wsgi: ``sync``, pre-forked processes serving one request at a time each;
  the app is ``apps.breakfast.wsgi_app``.
- asgi: ``asgi``, gunicorn's asyncio worker with many requests in flight per
  process; the app is ``apps.breakfast.asgi_app``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.asgi.protocol import ASGIProtocol

from gateway.config import Mode, Settings
from gateway.middleware.asgi import GatewayASGI
from gateway.middleware.wsgi import GatewayWSGI
from gateway.proxy import AllowList


def build_app(settings: Settings) -> Callable[..., Any]:
    """The app a worker serves: the demo app (or the CGI bridge) inside the gateway layer."""
    allow = AllowList.parse(settings.forwarded_allow_ips)
    limit = settings.max_body_bytes
    if settings.mode == "cgi":
        from gateway.cgi.bridge import make_cgi_app

        return GatewayWSGI(make_cgi_app(settings), mode="cgi", allow=allow, max_body_bytes=limit)
    if settings.mode == "wsgi":
        from apps.breakfast.wsgi_app import application as wsgi_app

        return GatewayWSGI(wsgi_app, mode="wsgi", allow=allow, max_body_bytes=limit)
    from apps.breakfast.asgi_app import application as asgi_app

    return GatewayASGI(asgi_app, mode="asgi", allow=allow, max_body_bytes=limit)


def worker_options(mode: Mode, settings: Settings) -> dict[str, Any]:
    if mode == "cgi":
        # More threads than the script cap, so past the cap the bridge answers
        # 503 itself instead of requests queueing unseen in the server.
        return {"worker_class": "gthread", "workers": 1, "threads": 2 * settings.cgi_max_scripts}
    if mode == "wsgi":
        return {"worker_class": "sync", "workers": settings.worker_count}
    return {"worker_class": "asgi", "workers": settings.worker_count, "worker_connections": 1000}


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "bind": [f"{settings.host}:{settings.port}"],
        # A worker silent for longer than this is killed and replaced; the app's
        # slowest legitimate request (/coffee?ms=10000) stays well inside it.
        "timeout": int(settings.timeout_s) + 5,
        "graceful_timeout": int(settings.timeout_s),
        # nginx keeps upstream connections open (keepalive 16); stay ready for them
        # a little longer than nginx's idle timeout so nginx closes first.
        "keepalive": 75,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        # The scheme comes from X-Forwarded-Proto alone, the one header nginx sets
        # (gunicorn's default also believes X-Forwarded-Ssl and -Protocol).
        "secure_scheme_headers": {"X-FORWARDED-PROTO": "https"},
        "errorlog": "-",
        "accesslog": None,  # nginx writes the access log, with upstream timings
        "loglevel": settings.log_level,
        "proc_name": f"gateway-{settings.mode}",
        # gunicorn's control socket would be one path shared by every gateway on
        # the host (and unwritable in a read-only container); the lab has no use for it.
        "control_socket_disable": True,
        **worker_options(settings.mode, settings),
    }


def json_error(status: int, reason: str, message: str) -> bytes:
    """gunicorn's own answer to a request it cannot parse, as a whole HTTP/1.1 response.

    The lab's error shape (``{"error", "status"}``) instead of gunicorn's HTML or
    plain text, so a malformed request sent straight to a gateway, or one nginx
    passes on and the gateway refuses (a 9 KiB header, 101 headers), is answered
    like every other error. ``Connection: close``: after a request it could not
    parse, the server cannot know where the next one starts (RFC 9112 §2.2).
    """
    text = f"{reason.lower()}: {message}" if message and message != reason else reason.lower()
    body = json.dumps({"error": text, "status": status}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    # Replaces gunicorn.util.write_error, which the sync and gthread workers call
    # (Worker.handle_error) for requests their parser refuses.
    gunicorn_util.write_nonblock(sock, json_error(status_int, reason, mesg))


def _send_json_error(
    self: ASGIProtocol, status: int, message: str, extra_headers: Iterable[tuple[str, str]] = ()
) -> None:
    # Replaces ASGIProtocol._send_error_response (the asgi worker's parser errors);
    # extra headers (e.g. Allow) go in before Connection, as gunicorn does.
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    response = json_error(status, reason, message)
    head, _, body = response.partition(b"\r\n\r\n")
    extra = "".join(f"{name}: {value}\r\n" for name, value in extra_headers).encode("latin-1")
    status_line, _, rest = head.partition(b"\r\n")
    self._safe_write(status_line + b"\r\n" + extra + rest + b"\r\n\r\n" + body)


def install_json_error_pages() -> None:
    """Make gunicorn's own error answers JSON in every worker class (idempotent).

    gunicorn has no setting for its error pages, so its two writers are
    replaced; gunicorn is pinned below the next major version (pyproject.toml)
    and tests/integration/test_hostile.py checks the result on every gateway.
    """
    gunicorn_util.write_error = _write_json_error
    ASGIProtocol._send_error_response = _send_json_error


class GatewayServer(BaseApplication):  # type: ignore[misc]
    """gunicorn's documented way to embed it: options in, app loaded per worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        install_json_error_pages()
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)

    def load(self) -> Callable[..., Any]:
        return build_app(self.settings)


def serve(settings: Settings) -> None:
    GatewayServer(settings).run()
