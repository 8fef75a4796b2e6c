"""ASGI mode under uvicorn, the other common ASGI server (``--server uvicorn``).

The same app inside the same gateway layer as under gunicorn's asyncio worker;
what changes is the server around it: uvicorn's own process manager (one
worker runs in this very process; several are spawned children of it) and its
own HTTP parser.

The parser is httptools (llhttp, node.js's parser), not h11: sent the
malformed requests of ``benchmarks/asgi_servers.py`` directly, uvicorn with
httptools rejected 8 of 10 and with h11 6 (h11 took obs-fold and bare LF line
ends), and h11 with several workers loses TCP_NODELAY on accepted sockets
(docs/architecture.md). The loop is uvloop, as under gunicorn.

uvicorn's forwarded-header handling is off: the gateway layer believes
X-Forwarded-* from ``forwarded_allow_ips`` alone, the same rule in every server.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from gateway.config import ENV_PREFIX, Settings
from gateway.servers.error_pages import json_error


class JSONErrorsHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with its one error answer in the lab's JSON shape.

    uvicorn answers a request its parser refuses with a plain-text 400
    (``send_400_response``); every error the lab produces is
    ``{"error", "status"}`` JSON (CONTRACT.md), so that one writer is replaced.
    uvicorn is pinned below its next major version (pyproject.toml).
    """

    def send_400_response(self, msg: str) -> None:
        self.transport.write(json_error(400, msg.rstrip(".").lower()))
        self.transport.close()


def create_app() -> Any:
    """The app each uvicorn worker serves, from the ``GATEWAY_*`` environment.

    A factory (uvicorn's ``factory=True``), so that workers spawned as fresh
    interpreters build their app from the same settings as this process.
    """
    from gateway.servers.gunicorn import build_app

    return build_app(Settings.from_env())


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "factory": True,
        "workers": settings.worker_count,
        "http": JSONErrorsHttpTools,
        "loop": "uvloop",
        "proxy_headers": False,  # the gateway layer does it (see the module docstring)
        "server_header": False,
        # nginx keeps upstream connections open; outlast its idle timeout, as gunicorn does.
        "timeout_keep_alive": 75,
        "timeout_graceful_shutdown": int(settings.timeout_s),
        "log_level": settings.log_level,
        "access_log": False,  # nginx writes the access log
    }


def settings_env(settings: Settings) -> dict[str, str]:
    """``GATEWAY_*`` variables that rebuild ``settings`` in a spawned worker."""
    fields = {
        "mode": settings.mode,
        "server": settings.server_name,
        "host": settings.host,
        "port": str(settings.port),
        "workers": str(settings.worker_count),
        "uds": settings.uds,
    }
    return {ENV_PREFIX + name.upper(): value for name, value in fields.items()}


def unix_listener(path: str, backlog: int = 2048) -> socket.socket:
    """A listening unix socket at ``path``, replacing a stale socket file there."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # Connecting takes write permission on the socket; who may reach it is
        # its directory's business (as gunicorn, whose umask 0 leaves sockets 0777).
        os.chmod(path, 0o666)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def serve(settings: Settings) -> None:
    # Command-line choices reach spawned workers through the environment.
    os.environ.update(settings_env(settings))
    if not settings.uds:
        uvicorn.run("gateway.servers.uvicorn:create_app", **uvicorn_options(settings))
        return
    # Two listening sockets, TCP and unix: uvicorn.run binds one, so this is its
    # body with both sockets handed to the server, or to each worker.
    config = uvicorn.Config("gateway.servers.uvicorn:create_app", **uvicorn_options(settings))
    sockets = [config.bind_socket(), unix_listener(settings.uds)]
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=sockets).run()
        else:
            uvicorn.Server(config).run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(settings.uds)
