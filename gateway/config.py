"""Gateway settings: one frozen dataclass, defaults in one place, ``GATEWAY_*`` overrides.

Every knob the gateway has is here. ``Settings.from_env()`` reads the
``GATEWAY_`` namespace and names the key and the bad value when a cast fails,
so a typo in compose.yaml or a shell is reported at start-up, not at the first
request.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, get_args

from gateway.numbers import parse_digits
from gateway.servers.registry import (
    MAX_UNIX_PATH_BYTES,
    ServerError,
    check_server,
    default_server,
    listens_on_unix,
)
from gateway.system.cpus import available_cpus

Mode = Literal["cgi", "wsgi", "asgi"]
MODES: Final[tuple[Mode, ...]] = get_args(Mode)

ENV_PREFIX: Final = "GATEWAY_"
APPS_DIR: Final = Path(__file__).resolve().parent.parent / "apps" / "breakfast"
MIB: Final = 1024 * 1024


@dataclass(frozen=True)
class ModeSpec:
    """What one mode asks of the server: which layer, which app, which workers.

    A registry entry (as uvicorn's ``HTTP_PROTOCOLS``), so per-mode choices
    live here once instead of in if-chains wherever a mode matters.
    """

    layer: Literal["wsgi", "asgi"]  # the gateway layer around the app (gateway/middleware/)
    app: str  # "module:name" of the app a worker serves
    app_factory: bool  # the name is called with the Settings to build the app
    worker_class: str  # gunicorn's worker model
    workers_per_cores: Callable[[int], int]  # the default worker count for N usable cores
    fixed_workers: bool = False  # the count is not settable (the concurrency lives elsewhere)


MODE_SPECS: Final[Mapping[Mode, ModeSpec]] = {
    # One front process whose threads wait on scripts: the concurrency lives
    # in the scripts it spawns (a fresh process per request, RFC 3875).
    "cgi": ModeSpec("wsgi", "gateway.cgi.bridge:make_cgi_app", True, "gthread", lambda n: 1, True),
    # The ``2 x cores + 1`` rule of thumb (gunicorn's docs): a starting point
    # the lab examines, not a maximum.
    "wsgi": ModeSpec(
        "wsgi", "apps.breakfast.wsgi_app:application", False, "sync", lambda n: 2 * n + 1
    ),
    # One event loop per core, many requests in flight in each.
    "asgi": ModeSpec("asgi", "apps.breakfast.asgi_app:application", False, "asgi", lambda n: n),
}


def default_workers(mode: Mode, cores: int | None = None) -> int:
    """Worker processes per mode when none are asked for (MODE_SPECS).

    "cores" are the CPUs this process may use (its affinity and its cgroup's
    CPU quota: :mod:`gateway.system.cpus`), not the machine's count.
    """
    n = cores if cores is not None else available_cpus()
    return MODE_SPECS[mode].workers_per_cores(n)


class SettingsError(ValueError):
    """A ``GATEWAY_*`` variable that cannot be used, named with its value."""


@dataclass(frozen=True)
class Settings:
    mode: Mode
    host: str = "127.0.0.1"
    port: int = 8000
    # A unix socket to listen on besides host:port ("": none), for nginx alone:
    # natively nginx reaches the gateways through these (lab.nginx.render), while
    # the TCP port stays for direct access. fcgiwrap serves one socket: not it.
    uds: str = ""
    workers: int = 0  # 0: default_workers(mode)
    # Peers whose X-Forwarded-* and X-Forwarded-Prefix headers are believed:
    # nginx's. Comma-separated IPs or CIDRs; "unix" for connections on a unix
    # socket (reachable only by whom its directory lets in); or "*" (only where
    # the gateway is reachable by nginx alone, as on a compose network with no
    # published port).
    forwarded_allow_ips: str = "unix,127.0.0.1,::1"
    max_body_bytes: int = 16 * MIB
    # The CGI runner's deadline, in seconds, for a script (and a chunked body
    # read before it): past it the script's group is killed (504). gunicorn's
    # worker timeout is derived from it (2 * timeout_s + 5: a sync worker busy
    # that long is killed), and both servers' graceful shutdown time. gthread,
    # asyncio and uvicorn workers put no time limit on a request.
    timeout_s: float = 30.0
    cgi_script: Path = field(default=APPS_DIR / "cgi_app.py")
    cgi_max_scripts: int = 16
    # Past the script cap a request waits its turn (first come, first served):
    # at most this many wait at once, each at most this long; then 503 with
    # Retry-After. 0 and 0 refuse at once, as a bare semaphore would. 128: the
    # lab's own load runs go to 100 clients (lab bench, benchmarks/), and past
    # script cap + queue every extra client is refused at once and asks again,
    # a storm of 503s that also takes CPU from the scripts.
    cgi_queue_max: int = 128
    cgi_queue_wait_s: float = 10.0
    cgi_max_output_bytes: int = 64 * MIB
    log_level: str = "info"
    # The server behind the mode (gateway/servers/registry.py); "" is the mode's default.
    server: str = ""
    # Threads per worker under the wsgi "gthread" server. Four: enough for a
    # worker to hold several waiting requests at once (the lesson), few enough
    # that CPU-bound requests, which share one GIL per process, do not queue
    # many deep inside one worker. Workers stay as many as the sync server's,
    # so threads are the one thing that differs between the two.
    threads: int = 4

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SettingsError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        for name in ("port", "max_body_bytes", "cgi_max_scripts", "cgi_max_output_bytes"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive, not {getattr(self, name)!r}")
        for name in ("workers", "cgi_queue_max", "cgi_queue_wait_s"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must be >= 0, not {getattr(self, name)!r}")
        if self.timeout_s <= 0:
            raise SettingsError(f"timeout_s must be positive, not {self.timeout_s!r}")
        if self.threads <= 0:
            raise SettingsError(f"threads must be positive, not {self.threads!r}")
        if self.server:
            try:
                check_server(self.mode, self.server)
            except ServerError as exc:
                raise SettingsError(str(exc)) from None
        if self.uds and not listens_on_unix(self.mode, self.server_name):
            raise SettingsError(f"the {self.server_name} server cannot listen on a unix socket")
        if len(os.fsencode(self.uds)) > MAX_UNIX_PATH_BYTES:
            raise SettingsError(
                f"uds: {self.uds!r} is longer than a unix socket path may be "
                f"({MAX_UNIX_PATH_BYTES} bytes)"
            )

    @property
    def server_name(self) -> str:
        """The server in force: the one asked for, else the mode's default."""
        return self.server or default_server(self.mode)

    @property
    def worker_count(self) -> int:
        if MODE_SPECS[self.mode].fixed_workers:
            return default_workers(self.mode)
        return self.workers or default_workers(self.mode)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``GATEWAY_<FIELD>`` variables, then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            key = ENV_PREFIX + f.name.upper()
            if key in env:
                values[f.name] = _cast(key, env[key], f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "mode" not in values:
            raise SettingsError(f"{ENV_PREFIX}MODE is not set (one of {', '.join(MODES)})")
        try:
            return cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise SettingsError(str(exc)) from exc


# Numbers in settings are ASCII (gateway/numbers.py): int() and float() would
# also take "١٢" or "1_000", which nobody means to write in an environment file.
_FLOAT_RE: Final = re.compile(r"[0-9]+(\.[0-9]+)?")


def _cast(key: str, raw: str, type_name: object) -> object:
    kind = str(type_name)
    if kind == "Path":
        return Path(raw)
    if kind == "int" and (number := parse_digits(raw.strip())) is not None:
        return number
    if kind == "float" and _FLOAT_RE.fullmatch(raw.strip()):
        return float(raw)
    if kind not in ("int", "float"):
        return raw
    raise SettingsError(f"{key}={raw!r} is not a valid {type_name}")
