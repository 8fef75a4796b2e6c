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

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from gunicorn.app.base import BaseApplication

from gateway.config import Mode, Settings
from gateway.middleware.asgi import GatewayASGI
from gateway.middleware.wsgi import GatewayWSGI
from gateway.proxy import AllowList
from gateway.servers.error_pages import install_json_error_pages
from gateway.servers.websocket_denial import install_websocket_denial_response


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
    from apps.breakfast.kitchen import WS_MAX_MESSAGE_BYTES

    return {
        "worker_class": "asgi",
        "workers": settings.worker_count,
        "worker_connections": 1000,
        # The /ws limit the app documents (gunicorn's default is 16 MiB). A bigger
        # message closes with 1009 before it is read. With gunicorn's own
        # backpressure (it stops reading a connection while 32 messages wait for
        # the app), one peer that sends and never reads pins about 32 x 64 KiB.
        # It also bounds the event loop's time per message: gunicorn unmasks
        # frames in pure Python (11 ms for 64 KiB here; 16 MiB took 3.6 s).
        "websocket_max_message_size": WS_MAX_MESSAGE_BYTES,
    }


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


def use_standard_reason_phrases() -> None:
    """The asgi worker's status lines use Python's reason phrases, as the other modes do.

    An ASGI app gives a status code only; gunicorn's asyncio worker names it from
    a short table of its own and says "426 Unknown" for the rest. CGI and WSGI
    status lines come from the app (http.HTTPStatus), so the asgi table is filled
    from the same source (idempotent; the table is read when a status is first sent).
    """
    from gunicorn.asgi import protocol

    protocol._REASON_PHRASES.update({status.value: status.phrase for status in HTTPStatus})


class GatewayServer(BaseApplication):  # type: ignore[misc]
    """gunicorn's documented way to embed it: options in, app loaded per worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        install_json_error_pages()
        use_standard_reason_phrases()
        install_websocket_denial_response()  # the app's JSON answer to a refused handshake
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)

    def load(self) -> Callable[..., Any]:
        return build_app(self.settings)


def serve(settings: Settings) -> None:
    GatewayServer(settings).run()
