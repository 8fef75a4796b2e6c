"""gunicorn runs every mode; only the worker model and the app differ.

gunicorn parses HTTP (and rejects malformed requests itself, so nginx is not
the only line of defence), pre-forks workers, replaces dead ones and reloads
gracefully on HUP. What each mode asks of it (``MODE_SPECS`` in
gateway/config.py, ``MODE_OPTIONS`` here):

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

import importlib
import queue
import signal
from collections.abc import Callable, Mapping
from typing import Any, Final

from gunicorn.app.base import BaseApplication

from gateway.cgi import orphans
from gateway.config import MODE_SPECS, Mode, Settings
from gateway.middleware.asgi import GatewayASGI
from gateway.middleware.wsgi import GatewayWSGI
from gateway.proxy import AllowList, ip_entries
from gateway.servers.asgi_addresses import install_unix_server_address
from gateway.servers.error_pages import install_json_error_pages
from gateway.servers.uwsgi_limits import install_uwsgi_header_limits
from gateway.servers.websocket_denial import install_websocket_denial_response

LAYERS: Final[Mapping[str, type[GatewayWSGI] | type[GatewayASGI]]] = {
    "wsgi": GatewayWSGI,
    "asgi": GatewayASGI,
}


def build_app(settings: Settings) -> Callable[..., Any]:
    """The app a worker serves: the demo app (or the CGI bridge) inside the gateway layer."""
    spec = MODE_SPECS[settings.mode]
    module, _, name = spec.app.partition(":")
    target = getattr(importlib.import_module(module), name)
    app = target(settings) if spec.app_factory else target
    layer = LAYERS[spec.layer]
    allow = AllowList.parse(settings.forwarded_allow_ips)
    return layer(
        app,
        mode=settings.mode,
        allow=allow,
        max_body_bytes=settings.max_body_bytes,
        server=settings.server_name,
    )


# gthread threads beyond the running and the queued scripts: /healthz and the
# bridge's own quick answers (a 503 when the queue is full) never wait behind them.
CGI_SPARE_THREADS = 8


def _cgi_options(settings: Settings) -> dict[str, Any]:
    # A thread for every running script and every queued request, so past the
    # cap the bridge's queue (FIFO, bounded, reported) decides who waits, not
    # requests piling up unseen in gunicorn's accept backlog.
    threads = settings.cgi_max_scripts + settings.cgi_queue_max + CGI_SPARE_THREADS
    return {
        "threads": threads,
        # Scripts die with their worker: the arbiter adopts and kills the
        # scripts of a worker that died (gateway/cgi/orphans.py).
        "on_starting": orphans.adopt_orphans,
        "child_exit": orphans.kill_orphans_of,
    }


def _asgi_options(settings: Settings) -> dict[str, Any]:
    from apps.breakfast.kitchen import WS_MAX_MESSAGE_BYTES

    return {
        "worker_connections": 1000,  # requests in flight per event loop
        # The /ws limit the app documents (gunicorn's default is 16 MiB). A bigger
        # message closes with 1009 before it is read. With gunicorn's own
        # backpressure (it stops reading a connection while 32 messages wait for
        # the app), one peer that sends and never reads pins about 32 x 64 KiB.
        # It also bounds the event loop's time per message: gunicorn unmasks
        # frames in pure Python (11 ms for 64 KiB here; 16 MiB took 3.6 s).
        "websocket_max_message_size": WS_MAX_MESSAGE_BYTES,
    }


# What gunicorn needs per mode beyond its worker class and count (MODE_SPECS).
MODE_OPTIONS: Final[Mapping[Mode, Callable[[Settings], dict[str, Any]]]] = {
    "cgi": _cgi_options,
    "wsgi": lambda settings: {},
    "asgi": _asgi_options,
}


def worker_options(settings: Settings) -> dict[str, Any]:
    spec = MODE_SPECS[settings.mode]
    options = {"worker_class": spec.worker_class, "workers": settings.worker_count}
    return options | MODE_OPTIONS[settings.mode](settings)


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
    entries = ip_entries(settings.forwarded_allow_ips)
    return "*" if "/" in entries else entries


def binds(settings: Settings) -> list[str]:
    """The TCP port, and natively a unix socket for nginx (``Settings.uds``)."""
    return [f"{settings.host}:{settings.port}"] + ([f"unix:{settings.uds}"] if settings.uds else [])


STOP_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})


def hold_stop_signals(server: Any, worker: Any) -> None:
    """gunicorn's ``post_fork`` hook: a worker told to stop while it boots does stop.

    From fork until it runs, a worker has no handler that can act on a stop:
    first the arbiter's, inherited across fork, which queue the signal for an
    arbiter that is not in this process; then, in the asyncio worker, uvloop's,
    which drops a signal that arrives before its loop runs (the app is imported
    in between). A SIGTERM from ``lab down`` or a server swap that lands then
    is lost: the worker boots and serves, and the arbiter waits out
    ``graceful_timeout`` before it kills it. So the stop signals are blocked
    here, which keeps them pending (signal(7): "a blocked signal ... remains
    pending until it is unblocked"), and ``release_stop_signals`` unblocks
    them once the worker can act. One that reached this process's copy of
    the arbiter's queue before this hook (gunicorn 27: a SimpleQueue nobody
    reads here) stops the worker too.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    while True:
        try:
            if server.SIG_QUEUE.get_nowait() in STOP_SIGNALS:
                worker.alive = False
        except queue.Empty:
            break


def release_stop_signals(worker: Any) -> None:
    """gunicorn's ``post_worker_init`` hook: unblock what ``hold_stop_signals`` held.

    The sync and gthread workers' handlers act at once; the asyncio worker's
    act only while its loop runs, so there the signals are unblocked by the
    loop's first callback (a pending one is then delivered and handled).
    """
    loop = getattr(worker, "loop", None)
    if loop is None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    else:
        loop.call_soon(signal.pthread_sigmask, signal.SIG_UNBLOCK, STOP_SIGNALS)


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        # The TCP port, and natively a unix socket for nginx (Settings.uds).
        "bind": binds(settings),
        "post_fork": hold_stop_signals,
        "post_worker_init": release_stop_signals,
        # A worker silent for longer than this is killed and replaced. A sync
        # worker with two listeners (the TCP port and nginx's unix socket) last
        # reports in before it waits for a connection, up to half this long
        # (gunicorn's select timeout), so a request is sure of only half: twice
        # the lab's timeout keeps its slowest legitimate request (a 20 s /stream,
        # /coffee?ms=10000) alive. nginx's proxy_read_timeout still cuts at 30 s.
        "timeout": 2 * int(settings.timeout_s) + 5,
        "graceful_timeout": int(settings.timeout_s),
        # nginx keeps upstream connections open (upstreams.conf); stay ready for them
        # a little longer than nginx's idle timeout so nginx closes first. The
        # sync worker ignores it: it closes after every response (gunicorn's
        # design docs), so only gthread and the asgi worker keep connections.
        "keepalive": 75,
        "forwarded_allow_ips": ip_entries(settings.forwarded_allow_ips),
        # gunicorn's own HTTP/1 parser, in Python, whatever else is installed: with
        # "auto" (the default) gunicorn takes gunicorn_h1c, its C parser, when it
        # is importable, and the one version at hand (0.6.10, below gunicorn's own
        # floor of 0.6.14) takes a control character in a chunk extension, which
        # RFC 9112 §7.1.1 does not allow, and serves the request pipelined behind
        # that body (docs/results/proxied-path.md). What the lab refuses must not
        # depend on what happens to be installed.
        "http_parser": "python",
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
        # gunicorn's forwarder_headers (default "SCRIPT_NAME,PATH_INFO") lets a
        # trusted peer set those environ keys with request headers of the same
        # names; nginx never sends them and the lab moves the mount point with
        # X-Forwarded-Prefix (gateway/proxy.py), so none is believed. Natively
        # every local process is a "trusted peer" (127.0.0.1): see
        # docs/gateway.md, "Whom the gateways trust".
        "forwarder_headers": "",
        **worker_options(settings),
        **server_options(settings),
    }


class GatewayServer(BaseApplication):  # type: ignore[misc]
    """gunicorn's documented way to embed it: options in, app loaded per worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        install_json_error_pages()
        install_websocket_denial_response()  # the app's JSON answer to a refused handshake
        install_uwsgi_header_limits()  # the 431s gunicorn's HTTP parser gives, for uwsgi too
        install_unix_server_address()  # ASGI's (path, None), not the path's first two letters
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)

    def load(self) -> Callable[..., Any]:
        return build_app(self.settings)


def serve(settings: Settings) -> None:
    GatewayServer(settings).run()
