"""``lab.targets.Services`` for the compose project: what the fault tests do to one
service, as ``docker compose`` stop/start/kill/pause/exec."""

from __future__ import annotations

import subprocess
from typing import Final, Protocol

from lab.errors import LabError
from lab.settings import LabSettings
from lab.system import procfs
from lab.system.http import is_healthy, wait_until
from lab.targets.docker.compose import NGINX


class Compose(Protocol):
    """What these controls need of ``lab.targets.docker.target.DockerTarget``."""

    def _compose(self, cfg: LabSettings, *args: str) -> subprocess.CompletedProcess[str]: ...

    def service_health(self, cfg: LabSettings) -> dict[str, bool]: ...


class DockerServices:
    """``lab.targets.Services`` for the compose project: compose stop/start/kill/pause/exec."""

    START_DEADLINE_S: Final = 60.0

    def __init__(self, cfg: LabSettings, target: Compose) -> None:
        self.cfg = cfg
        self.target = target

    def _compose(self, *args: str) -> str:
        done = self.target._compose(self.cfg, *args)
        if done.returncode != 0:
            raise LabError(f"`docker compose {' '.join(args[:4])}` failed: {done.stderr.strip()}")
        return done.stdout

    def stop(self, service: str) -> None:
        self._compose("stop", "--timeout", "10", service)

    def kill(self, service: str) -> None:
        # `docker kill` counts as a manual stop for `restart: unless-stopped`: start() restarts.
        self._compose("kill", "--signal", "KILL", service)

    def start(self, service: str) -> None:
        self._compose("start", service)
        health = lambda: self.target.service_health(self.cfg).get(service, False)  # noqa: E731
        if not wait_until(health, self.START_DEADLINE_S, interval_s=0.5):
            raise LabError(f"{service} did not become healthy after `docker compose start`")
        if service != NGINX:
            # The container may have a new address; nginx resolved the old one.
            self._compose("exec", "-T", NGINX, "lab-nginx", "reload")
            routed = f"{self.cfg.url}/{service.removeprefix('gateway-')}/healthz"
            if not wait_until(lambda: is_healthy(routed), self.START_DEADLINE_S, interval_s=0.2):
                raise LabError(f"{service} did not answer through nginx after its restart")

    def restart(self, service: str) -> None:
        self._compose("restart", "--timeout", "10", service)
        url = self.cfg.url + ("/nginx-health" if service == NGINX else "")
        if service == NGINX and not wait_until(lambda: is_healthy(url, 1.0), 30.0):
            raise LabError("nginx did not answer its health check after a restart")

    def freeze(self, service: str) -> None:
        self._compose("pause", service)

    def thaw(self, service: str) -> None:
        self._compose("unpause", service)

    def reload(self, service: str) -> None:
        # tini (``init: true``) is PID 1 and forwards the signal to the gunicorn master.
        self._compose("kill", "--signal", "HUP", service)

    def processes(self, service: str) -> str:
        return self._compose("exec", "-T", service, _python(service), "-c", procfs.source(), "rows")

    def kill_pid(self, service: str, pid: int) -> None:
        program = f"import os, signal; os.kill({int(pid)}, signal.SIGKILL)"
        self._compose("exec", "-T", service, _python(service), "-c", program)

    def cpus(self, service: str) -> float:
        program = [_python(service), "-c", procfs.source(), "cpus"]
        return float(self._compose("exec", "-T", service, *program))

    def access_log(self) -> str:
        return self._compose("logs", "--no-color", "--no-log-prefix", NGINX)


def _python(service: str) -> str:
    """The nginx image has Debian's python3; the gateway image its venv's python."""
    return "python3" if service == NGINX else "python"
