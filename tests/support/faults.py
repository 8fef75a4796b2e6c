"""Fault controls for a running lab: stop, freeze, reload a gateway, kill one of its workers.

The fault tests (tests/integration/test_faults.py, test_reload.py, ...) use
these to make the failures nginx and gunicorn are meant to survive, on either
target (``target`` is the name ``lab status --json`` reports). Each one is a
call on the target's ``Services`` (``lab.targets.Services``): the native
target acts on the process groups in ``native.json``, the docker target on
the compose project. Nothing here branches on the target's name.

Two ways for a gateway to fail, because nginx answers them differently:

- ``stop_gateway`` / ``start_gateway``: the gateway is gone. Nothing listens on
  its port, a connection is refused, nginx answers 502 at once. ``start``
  brings it back with the command and settings ``lab up`` uses and returns
  once it answers through nginx.
- ``kill_gateway``: gone at once, whatever it was doing (SIGKILL; works on a
  frozen gateway too); ``start_gateway`` brings it back.
- ``freeze_gateway`` / ``thaw_gateway``: the gateway hangs. Its processes are
  stopped where they stand, the kernel still accepts connections on its
  listening socket, nobody answers: nginx waits ``proxy_read_timeout`` and
  answers 504. Nothing is restarted, so no state changes.

``restart_nginx`` stops nginx and starts it again (what a crash and a restart
policy, or a host reboot, would do): the active mode of "/" must survive it.

``reload_gateway`` sends SIGHUP to the gunicorn master (gracefully replaces
its workers); ``worker_family`` and ``kill_worker`` find and SIGKILL one worker
by the pid a response named in X-Gateway-Worker, reading /proc where the
gateway runs (``lab.system.procfs``, the same code on the host and in a container).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lab.errors import LabError
from lab.settings import LabSettings
from lab.system.procfs import children, parent_of, rows_from_json
from lab.targets import FaultTarget, Services, get_target


@dataclass(frozen=True)
class Family:
    """A gunicorn master and its live workers."""

    master: int
    workers: tuple[int, ...]


def services(cfg: LabSettings, target: str) -> Services:
    """The fault controls of the running lab on ``target``."""
    chosen = get_target(target)
    if not isinstance(chosen, FaultTarget):
        raise LabError(f"the {target} target has no fault controls")
    return chosen.services(cfg)


def _gateway(mode: str) -> str:
    return f"gateway-{mode}"


def stop_gateway(cfg: LabSettings, target: str, mode: str) -> None:
    """Stop one gateway: its port refuses connections until ``start_gateway``."""
    services(cfg, target).stop(_gateway(mode))


def kill_gateway(cfg: LabSettings, target: str, mode: str) -> None:
    """SIGKILL every process of one gateway, even a frozen one: gone, nothing finished."""
    services(cfg, target).kill(_gateway(mode))


def start_gateway(cfg: LabSettings, target: str, mode: str) -> None:
    """Start a stopped gateway again; return once it (and nginx's route to it) is healthy."""
    services(cfg, target).start(_gateway(mode))


def restart_nginx(cfg: LabSettings, target: str) -> None:
    """Stop nginx and start it again; return once it answers its health check."""
    services(cfg, target).restart("nginx")


def freeze_gateway(cfg: LabSettings, target: str, mode: str) -> None:
    """Stop every process of one gateway where it stands (SIGSTOP / cgroup freezer)."""
    services(cfg, target).freeze(_gateway(mode))


def thaw_gateway(cfg: LabSettings, target: str, mode: str) -> None:
    services(cfg, target).thaw(_gateway(mode))


def reload_gateway(cfg: LabSettings, target: str, mode: str) -> None:
    """SIGHUP to the gunicorn master: new workers start, old ones finish their requests."""
    services(cfg, target).reload(_gateway(mode))


def worker_family(target: str, mode: str, worker_pid: int) -> Family | None:
    """The master of ``worker_pid`` and all its live workers; None when it is gone."""
    rows = rows_from_json(services(LabSettings.from_env(), target).processes(_gateway(mode)))
    master = parent_of(rows, worker_pid)
    if master is None:
        return None
    return Family(master=master, workers=tuple(children(rows, master)))


def kill_worker(target: str, mode: str, worker_pid: int) -> None:
    """SIGKILL one gunicorn worker (a pid from an X-Gateway-Worker header)."""
    services(LabSettings.from_env(), target).kill_pid(_gateway(mode), worker_pid)


def access_log(cfg: LabSettings, target: str) -> list[dict[str, object]]:
    """nginx's JSON access log lines (one dict per request nginx parsed)."""
    entries = []
    for line in services(cfg, target).access_log().splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # an error-log line that happens to start with "{"
    return entries
