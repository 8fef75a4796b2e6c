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

Those are the default servers (``runner``, ``sync``, ``gunicorn``); the wsgi
mode's ``gthread`` and ``uwsgi`` servers are gunicorn too, with the changes in
``server_options``. fcgiwrap and uvicorn have launchers of their own
(gateway/servers/fcgiwrap.py, uvicorn.py); gateway/servers/registry.py lists them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from gateway.config import Mode, Settings
from gateway.middleware.asgi import GatewayASGI
from gateway.middleware.wsgi import GatewayWSGI
from gateway.proxy import AllowList
from gateway.servers.error_pages import install_json_error_pages


def build_app(settings: Settings) -> Callable[..., Any]:
    """The app a worker serves: the demo app (or the CGI bridge) inside the gateway layer."""
    allow = AllowList.parse(settings.forwarded_allow_ips)
    limit = settings.max_body_bytes
    server = settings.server_name
    if settings.mode == "cgi":
        from gateway.cgi.bridge import make_cgi_app

        return GatewayWSGI(
            make_cgi_app(settings), mode="cgi", allow=allow, max_body_bytes=limit, server=server
        )
    if settings.mode == "wsgi":
        from apps.breakfast.wsgi_app import application as wsgi_app

        return GatewayWSGI(wsgi_app, mode="wsgi", allow=allow, max_body_bytes=limit, server=server)
    from apps.breakfast.asgi_app import application as asgi_app

    return GatewayASGI(asgi_app, mode="asgi", allow=allow, max_body_bytes=limit, server=server)


def worker_options(mode: Mode, settings: Settings) -> dict[str, Any]:
    if mode == "cgi":
        # More threads than the script cap, so past the cap the bridge answers
        # 503 itself instead of requests queueing unseen in the server.
        return {"worker_class": "gthread", "workers": 1, "threads": 2 * settings.cgi_max_scripts}
    if mode == "wsgi":
        return {"worker_class": "sync", "workers": settings.worker_count}
    return {"worker_class": "asgi", "workers": settings.worker_count, "worker_connections": 1000}


def server_options(settings: Settings) -> dict[str, Any]:
    """What the wsgi servers other than ``sync`` change (CONTRACT.md, "Servers behind each route").

    - gthread: the sync server's worker count, each worker with
      ``settings.threads`` threads: several requests at once in one process.
    - uwsgi: sync workers that read the uwsgi packet nginx's ``uwsgi_pass``
      sends instead of an HTTP request (gunicorn 27's ``--protocol uwsgi``).
    """
    server = settings.server_name
    if server == "gthread":
        return {"worker_class": "gthread", "threads": settings.threads}
    if server == "uwsgi":
        return {"protocol": "uwsgi", "uwsgi_allow_ips": uwsgi_allow_ips(settings)}
    return {}


def uwsgi_allow_ips(settings: Settings) -> str:
    """The peers that may send uwsgi packets: nginx's, as for forwarded headers.

    gunicorn 27.0 compares the peer's address with each entry as a string
    (gunicorn/uwsgi/message.py ``_check_allowed_ip``), so a network such as the
    compose subnet would match nobody: there "*" stands in, which is safe only
    where nginx alone can reach the gateway (compose's internal network).
    """
    entries = [e.strip() for e in settings.forwarded_allow_ips.split(",") if e.strip()]
    return "*" if any("/" in e for e in entries) else ",".join(entries)


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
        **server_options(settings),
    }


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
