"""Which target ran ``lab up`` here, so later commands talk to the same one; the
lock that keeps two ``lab up`` (or switch, split, scale, down) from running at once;
and the native target's run state (``RunState``: what it started, as JSON).

``lab up`` records the target name in ``<state_dir>/target``; ``down``,
``status``, ``switch`` and ``logs`` use it unless ``LAB_TARGET`` says otherwise,
and ``down`` removes it. Without a record the usual choice applies
(``lab.targets.target_name``: docker when an engine answers, else native).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lab.errors import LabError
from lab.settings import TARGET_NAMES, LabSettings, Limits
from lab.targets import target_name
from lab.targets.native_nginx import Paths

TARGET_FILE = "target"
LOCK_FILE = "lab.lock"


def _path(cfg: LabSettings) -> Path:
    return cfg.state_dir / TARGET_FILE


def record_target(cfg: LabSettings, name: str) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    _path(cfg).write_text(name + "\n", encoding="utf-8")


def recorded_target(cfg: LabSettings) -> str | None:
    try:
        name = _path(cfg).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return name if name in TARGET_NAMES else None


def clear_target(cfg: LabSettings) -> None:
    _path(cfg).unlink(missing_ok=True)


def current_target_name(cfg: LabSettings) -> str:
    """LAB_TARGET if set, else the target ``lab up`` recorded, else the usual choice."""
    if cfg.target:
        return target_name(cfg.target)
    return recorded_target(cfg) or target_name()


@contextlib.contextmanager
def exclusive(cfg: LabSettings, what: str) -> Iterator[None]:
    """Hold the lab's lock (``<state_dir>/lab.lock``) while a command changes the lab.

    A second ``lab up`` (or switch, split, scale, down) on the same state
    directory fails at once with a LabError instead of racing the first; the
    kernel drops the lock when its holder exits, however it exits.
    """
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cfg.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another lab command"
            raise LabError(
                f"cannot {what} now: {holder} is changing the lab "
                f"({cfg.state_dir / LOCK_FILE}); wait for it to finish and try again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"`lab {what}` (pid {os.getpid()})".encode())
        yield
    finally:
        os.close(fd)


# -- the native target's record of what `lab up` started --------------------------------


@dataclass
class RunState:
    """What ``up`` started: service name -> process group id, and how nginx runs."""

    groups: dict[str, int] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)  # mode -> N when N > 1
    nginx: str = ""
    port: int = 0
    tls_port: int = 0
    limits: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    servers: dict[str, str] = field(default_factory=dict)  # mode -> server (`lab server`)
    slots: dict[str, int] = field(default_factory=dict)  # mode -> 1 when on its other port
    gateway_workers: int = 0  # LAB_GATEWAY_WORKERS the gateways were started with

    def settings(self, cfg: LabSettings) -> LabSettings:
        """``cfg`` with the limits and workers the running lab was started with."""
        if not self.limits:
            return cfg
        return replace(cfg, limits=Limits(**self.limits), gateway_workers=self.gateway_workers)


def replica_service(mode: str, index: int) -> str:
    """The service name of replica ``index`` (0-based): gateway-wsgi, gateway-wsgi-2, ..."""
    return f"gateway-{mode}" if index == 0 else f"gateway-{mode}-{index + 1}"


def load_state(cfg: LabSettings) -> RunState | None:
    try:
        data = json.loads(Paths(cfg.state_dir).state.read_text(encoding="utf-8"))
        return RunState(**data)
    except (OSError, ValueError, TypeError):
        return None


def save_state(cfg: LabSettings, state: RunState) -> None:
    path = Paths(cfg.state_dir).state
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
