"""The dashboard's server picker as a process of the lab: ``lab.control`` on the host.

``lab up`` starts it on every target, told the target (LAB_TARGET), on a unix
socket in ``control-<target>/`` of the state dir (``spawn``, ``wait_answers``);
natively its process group is one of native.json's services.

Under Docker nginx's container cannot start containers (and gets no Docker socket):
the same process runs on the host (``start``, ``stop``).
compose.yaml bind-mounts that directory into nginx's container (LAB_CONTROL_DIR)
and nginx proxies ``/lab/api/`` to the socket; the directory and socket belong to
the group of nginx's user in its image (``NGINX_CONTAINER_GID``), so that user
may connect and no other user of the host.

Its process group is recorded in ``control-<target>.json`` in the state dir,
which ``down`` stops. Started by plain ``docker compose up`` (no ``lab up``),
nothing listens there and nginx answers a JSON 503 naming ``lab up``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from lab.errors import LabError
from lab.nginx.render import NGINX_CONTAINER_GID, control_socket
from lab.settings import ROOT, LabSettings
from lab.system import processes

START_DEADLINE_S: Final = 15.0
HEALTH_PATH: Final = "/lab/api/healthz"  # answered by lab.control while it serves


SERVICE: Final = "control"  # its name among the native lab's services (native.json, logs/)


def control_command(socket_path: Path, group: int | None) -> list[str]:
    """The command ``lab up`` runs: this module on ``socket_path``, whose directory
    and socket ``group`` may use (None: the lab's user only)."""
    cmd = [sys.executable, "-m", "lab.control", str(socket_path)]
    return [*cmd, str(group)] if group is not None else cmd


def prepare_dir(directory: Path, group: int | None) -> tuple[int, int]:
    """Make the socket's directory; returns the modes (directory, socket) to give.

    ``group`` None (native: nginx runs as the lab's user, or as root): 0700 and
    0600, the lab's user alone. A group (nginx's user in its container, whose
    gid is the same number on the host): 0710 and 0660 with that group, so it
    may reach the socket but not list the directory, and other users nothing.
    Where the lab's user may not give that group (not root, not a member):
    0711 and 0666, as open as the loopback port it replaces, said in the log.
    """
    directory.mkdir(parents=True, exist_ok=True)
    modes = (0o700, 0o600)
    if group is not None:
        try:
            os.chown(directory, -1, group)
            modes = (0o710, 0o660)
        except PermissionError:
            modes = (0o711, 0o666)
            sys.stderr.write(
                f"lab control: may not give {directory} to group {group} (nginx's user in its "
                "container): the socket is open to every local user\n"
            )
    os.chmod(directory, modes[0])
    return modes


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP/1.1 client connection to a unix socket (http.client parses the answer)."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.path))


def answers(socket_path: Path, timeout: float = 1.0) -> bool:
    """True when the control process on ``socket_path`` answers its health check (200)."""
    conn = UnixHTTPConnection(socket_path, timeout)
    try:
        conn.request("GET", HEALTH_PATH)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def record_file(cfg: LabSettings, target: str) -> Path:
    return cfg.state_dir / f"{SERVICE}-{target}.json"


def log_file(cfg: LabSettings, target: str) -> Path:
    """logs/control.log natively (a native service's log), else logs/control-<target>.log."""
    name = SERVICE if target == "native" else f"{SERVICE}-{target}"
    return cfg.state_dir / "logs" / f"{name}.log"


def control_env(cfg: LabSettings, target: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The control process's environment: the caller's, plus where this lab lives."""
    return dict(environ) | {
        "LAB_PORT": str(cfg.port),
        "LAB_TLS_PORT": str(cfg.tls_port),
        "LAB_STATE_DIR": str(cfg.state_dir),
        "LAB_STACK": cfg.stack,
        "LAB_IMAGE_TAG": cfg.image_tag,
        "LAB_TARGET": target,
    }


def recorded_group(cfg: LabSettings, target: str) -> int | None:
    """The control process's group, when the record names one that still runs it."""
    try:
        pgid = int(json.loads(record_file(cfg, target).read_text())["pgid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    alive = processes.group_alive(pgid) and processes.leader_matches(pgid, "lab.control")
    return pgid if alive else None


def answering(cfg: LabSettings, target: str) -> bool:
    """A control process answers on ``target``'s socket."""
    return answers(control_socket(cfg.state_dir, target))


def is_running(cfg: LabSettings, target: str) -> bool:
    """The recorded control process runs and answers on its socket."""
    return recorded_group(cfg, target) is not None and answering(cfg, target)


def spawn(cfg: LabSettings, target: str, environ: Mapping[str, str], group: int | None) -> int:
    """Start the control process of ``target`` (log: logs/control[-target].log); its group."""
    path = control_socket(cfg.state_dir, target)
    prepare_dir(path.parent, group)
    log = log_file(cfg, target)
    env = control_env(cfg, target, environ)
    return processes.spawn(control_command(path, group), log, env, cwd=ROOT).pid


def wait_answers(cfg: LabSettings, target: str, pgid: int) -> None:
    """Return once the control process answers on its socket; LabError if it does not."""
    try:
        processes.wait_healthy({SERVICE: (pgid, lambda: answering(cfg, target))}, START_DEADLINE_S)
    except processes.StartFailed as failed:
        log = log_file(cfg, target)
        raise LabError(f"{failed}. Last lines of {log}:\n{processes.tail(log)}") from None


def start(
    cfg: LabSettings, target: str, environ: Mapping[str, str], say: Callable[[str], None]
) -> None:
    """Start the control process unless it runs; return once it answers on its socket.

    Called before the containers start, so the directory compose.yaml mounts
    exists with its owner and modes (Docker would make a root-owned one, and
    swarm refuses a bind mount whose source is missing).
    """
    if is_running(cfg, target):
        return
    stop(cfg, target)  # a record whose process is gone or does not answer
    pgid = spawn(cfg, target, environ, NGINX_CONTAINER_GID)
    record_file(cfg, target).write_text(json.dumps({"pgid": pgid}) + "\n")
    try:
        wait_answers(cfg, target, pgid)
    except LabError:
        stop(cfg, target)
        raise
    path = control_socket(cfg.state_dir, target)
    say(f"the dashboard's server picker listens on unix:{path} (nginx: /lab/api/)")


def stop(cfg: LabSettings, target: str) -> None:
    """Stop the recorded control process (if it runs) and forget it."""
    if (pgid := recorded_group(cfg, target)) is not None:
        processes.stop_groups({SERVICE: pgid})
    record_file(cfg, target).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        control_socket(cfg.state_dir, target).unlink(missing_ok=True)
