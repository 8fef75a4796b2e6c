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
from typing import Any, Final

import uvicorn
from gunicorn.config import LimitRequestFields, LimitRequestFieldSize
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from gateway.config import ENV_PREFIX, Settings
from gateway.framing import has_body
from gateway.preflight import HANDSHAKE_BODY
from gateway.proxy import request_host
from gateway.servers.error_pages import json_error

# gunicorn's limits on a request's header fields (its defaults, which the lab keeps).
MAX_FIELDS: Final[int] = LimitRequestFields.default
MAX_FIELD_BYTES: Final[int] = LimitRequestFieldSize.default


class JSONErrorsHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with its one error answer in the lab's JSON shape,
    and the Host of an absolute-form request-target.

    uvicorn answers a request its parser refuses with a plain-text 400
    (``send_400_response``); every error the lab produces is
    ``{"error", "status"}`` JSON (CONTRACT.md), so that one writer is replaced.
    httptools takes what gunicorn refuses (more than 100 header fields, a field
    over 8190 bytes, two Host fields, an HTTP/2.0 request line, Transfer-Encoding
    in HTTP/1.0): the protocol refuses them too, with gunicorn's statuses, and
    drops a header name with "_" as gunicorn does, so a swap of the ASGI server
    changes no answer (tests/integration/test_hostile.py).
    uvicorn builds the scope's path from the target's path alone, so the ASGI
    layer never sees an absolute-form target's authority: the rule of
    gateway.proxy.request_host is applied here, to the headers the scope is made with.
    uvicorn is pinned below its next major version (pyproject.toml).
    """

    _refused: tuple[int, str] | None = None
    _fields = 0

    def send_400_response(self, msg: str) -> None:
        # A check below refused the request (its status and reason), else httptools did.
        status, message = self._refused or (400, msg.rstrip(".").lower())
        self.transport.write(json_error(status, message))
        self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Stop parsing: httptools turns the exception into its parser error, and
        uvicorn's handler of that calls send_400_response, which sends this answer."""
        self._refused = (status, message)
        raise ValueError(message)

    def on_message_begin(self) -> None:
        self._refused = None
        self._fields = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        # What gunicorn refuses and httptools takes, refused alike (the same limits,
        # gunicorn's own defaults), so a server swap changes no answer.
        self._fields += 1
        if self._fields > MAX_FIELDS:
            self._refuse(431, f"more than {MAX_FIELDS} header fields")
        if len(name) + len(value) + 2 > MAX_FIELD_BYTES:
            self._refuse(431, f"a header field over {MAX_FIELD_BYTES} bytes")
        if b"_" in name:
            # gunicorn's header_map "drop": a name with "_" is dropped, never
            # merged with its "-" twin (HTTP_X_A is both X-A and X_A).
            return
        if name.lower() == b"host" and any(k == b"host" for k, _ in self.headers):
            # RFC 9112 §3.2: more than one Host field is a 400.
            self._refuse(400, "more than one Host header")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        version = self.parser.get_http_version()
        if version not in ("1.0", "1.1"):
            # RFC 9110 §15.6.6: 505 for a major version the server does not speak here.
            self._refuse(505, f"HTTP/{version} is not spoken on this connection")
        if version == "1.0" and any(k == b"transfer-encoding" for k, _ in self.headers):
            # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
            # framing; nothing after it can be read as a request.
            self._refuse(400, "Transfer-Encoding in an HTTP/1.0 request")
        if handshake_with_body(self.headers):
            # The layer's rule (gateway/preflight.py, HANDSHAKE_BODY), applied here
            # because httptools would wait for the body before uvicorn upgrades:
            # the handshake hung until the client gave up.
            self._refuse(400, HANDSHAKE_BODY)
        # RFC 9112 §3.2.2: self.url is the request-target as sent; self.headers is
        # the list the scope's "headers" holds, so it is changed in place.
        sent = next((v for k, v in self.headers if k == b"host"), None)
        given = sent.decode("latin-1") if sent is not None else None
        version = self.parser.get_http_version()
        host = request_host(self.url.decode("latin-1"), given, version)
        if host is not None and host != given:
            kept = [(k, v) for k, v in self.headers if k != b"host"]
            self.headers[:] = [(b"host", host.encode("latin-1")), *kept]
        super().on_headers_complete()


def handshake_with_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """A WebSocket upgrade request (``Upgrade: websocket``) that declares a body."""
    fields = {k.lower(): v for k, v in headers}
    if fields.get(b"upgrade", b"").strip().lower() != b"websocket":
        return False
    length, coding = fields.get(b"content-length"), fields.get(b"transfer-encoding")
    return has_body(
        length.decode("latin-1") if length is not None else None,
        coding.decode("latin-1") if coding is not None else None,
    )


def create_app() -> Any:
    """The app each uvicorn worker serves, from the ``GATEWAY_*`` environment.

    A factory (uvicorn's ``factory=True``), so that workers spawned as fresh
    interpreters build their app from the same settings as this process.
    """
    from gateway.servers.gunicorn import build_app

    return build_app(Settings.from_env())


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    from apps.breakfast.kitchen import WS_MAX_MESSAGE_BYTES

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
        # The /ws limit the app documents, as under gunicorn (gateway/servers/
        # gunicorn.py): a bigger message closes with 1009 (uvicorn's default is
        # 16 MiB); with websockets' queue of 32 messages a peer that sends and
        # never reads pins about 32 x 64 KiB.
        "ws_max_size": WS_MAX_MESSAGE_BYTES,
        "ws_max_queue": 32,
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
