"""Where a lab runs: the interface every target implements, and the registry of targets.

A target owns the processes or containers of one lab. The CLI only talks to
``Target``, so ``lab up`` means the same on every target:

- ``up(cfg)`` is idempotent: it starts what is missing and returns once every
  service answers its health check, or raises ``LabError`` saying what failed.
- ``down(cfg)`` stops exactly what ``up`` started, nothing else.
- ``status(cfg)`` returns the ``lab status --json`` shape (CONTRACT.md):
  ``running`` is true only when every service answers; ``services`` gives each
  one; ``workers`` counts the worker processes in force per mode.
- ``switch``/``split`` re-render ``active_mode.conf`` and reload nginx
  gracefully (``lab.targets.switching``); ``scale`` (``ScalableTarget``) runs
  replicas of one gateway behind nginx.
- ``services(cfg)`` gives the fault controls the tests use (``Services``).

A new target is a module here with a class that has a no-argument
constructor, and one line in ``TARGETS``.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, NotRequired, Protocol, TypedDict, runtime_checkable

from lab.errors import LabError

if TYPE_CHECKING:
    from lab.settings import LabSettings

# name -> "module:Class", imported only when that target is used (uvicorn's registry style).
TARGETS: Final = {
    "docker": "lab.targets.docker.target:DockerTarget",
    "native": "lab.targets.native:NativeTarget",
    "swarm": "lab.targets.docker.swarm:SwarmTarget",
}


class LimitsDict(TypedDict):
    proxy_read_timeout_s: int
    client_max_body_bytes: int
    cgi_max_scripts: int


class StatusDict(TypedDict):
    """``lab status --json`` (CONTRACT.md), plus ``running``, ``services`` and ``replicas``."""

    target: str
    url: str
    tls_url: str  # nginx's TLS + HTTP/2 listener
    ca_file: str  # the lab's CA certificate, a path on this host
    running: bool  # every service answers its health check
    active_mode: str | None
    gateways: dict[str, str]
    limits: LimitsDict
    # Service name (nginx, gateway-cgi, ...) -> answers its health check.
    services: NotRequired[dict[str, bool]]
    # Worker processes in force per mode, counted from the running processes.
    workers: NotRequired[dict[str, int]]
    # Gateways per mode (``lab scale``), from targets that can scale.
    replicas: NotRequired[dict[str, int]]
    # The server behind each mode (``lab server``; lab/servers.py).
    servers: NotRequired[dict[str, str]]
    # Swarm: per service, each running replica's slot, node and state.
    tasks: NotRequired[dict[str, list[dict[str, object]]]]
    # Swarm: where the published ports are open (every interface of a node).
    published: NotRequired[str]


class Services(Protocol):
    """What the fault tests do to one service of a running lab (``gateway-wsgi``, ``nginx``)."""

    def start(self, service: str) -> None:
        """Start a stopped service; return once it is healthy (and routed, for a gateway)."""

    def stop(self, service: str) -> None: ...

    def kill(self, service: str) -> None:
        """SIGKILL every process of the service, even a frozen one."""

    def freeze(self, service: str) -> None: ...

    def thaw(self, service: str) -> None: ...

    def restart(self, service: str) -> None:
        """Stop and start again (what a crash and a restart policy would do)."""

    def reload(self, service: str) -> None:
        """SIGHUP to the service's master (gunicorn: new workers, old ones finish)."""

    def processes(self, service: str) -> str:
        """JSON of ``lab.system.procfs`` rows as the service's host or container sees them."""

    def kill_pid(self, service: str, pid: int) -> None:
        """SIGKILL one process of the service (a pid it named in a trace header)."""

    def access_log(self) -> str:
        """nginx's access log text."""

    def cpus(self, service: str) -> float:
        """CPUs the service may use (affinity mask, capped by a cgroup quota)."""


def cpus_known(services: Services, service: str) -> float | None:
    """``services.cpus(service)``, or None when the service cannot be asked."""
    try:
        return services.cpus(service)
    except (LabError, ValueError):
        return None


@runtime_checkable
class Target(Protocol):
    name: str

    def up(self, cfg: LabSettings) -> None: ...

    def down(self, cfg: LabSettings) -> None: ...

    def status(self, cfg: LabSettings) -> StatusDict: ...

    def switch(self, cfg: LabSettings, mode: str) -> None: ...

    def split(self, cfg: LabSettings, weights: Mapping[str, int] | None) -> None: ...

    def logs(self, cfg: LabSettings, follow: bool) -> None: ...

    def is_running(self, cfg: LabSettings) -> bool: ...


@runtime_checkable
class ScalableTarget(Target, Protocol):
    """A target that can run several replicas of one gateway (both real targets can)."""

    def scale(self, cfg: LabSettings, mode: str, replicas: int) -> None: ...


@runtime_checkable
class ServerTarget(Target, Protocol):
    """A target that can swap the server behind a mode (``lab server``; lab/servers.py)."""

    def server(self, cfg: LabSettings, mode: str, server: str) -> None: ...


@runtime_checkable
class FaultTarget(Target, Protocol):
    """A target whose services the fault tests can stop, kill, freeze (both real ones)."""

    def services(self, cfg: LabSettings) -> Services: ...


def docker_answers(timeout_s: float = 3.0) -> bool:
    """True when a Docker engine answers ``docker info`` within ``timeout_s``."""
    if shutil.which("docker") is None:
        return False
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{json .ServerVersion}}"],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and bool(json.loads(proc.stdout or b"null"))


def target_name(asked: str = "") -> str:
    """``asked`` (docker|swarm|native) if given, else docker when an engine answers, else native."""
    name = asked.strip().lower()
    if name and name not in TARGETS:
        raise LabError(f"LAB_TARGET={name!r} is not a target: use one of {', '.join(TARGETS)}")
    if name:
        return name
    return "docker" if docker_answers() else "native"


def get_target(name: str) -> Target:
    """The target called ``name``; its module is imported only when asked for."""
    if name not in TARGETS:
        raise LabError(f"unknown target {name!r}: use one of {', '.join(TARGETS)}")
    module, _, cls = TARGETS[name].partition(":")
    target: Target = getattr(importlib.import_module(module), cls)()
    return target
