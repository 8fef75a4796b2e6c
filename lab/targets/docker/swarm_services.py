"""``lab.targets.Services`` for the swarm stack: what the fault tests do to one service.

Swarm replaces a task that exits or fails its healthcheck, so the controls act
where swarm leaves room: ``stop`` scales the service to 0 (and ``start`` back
to what it ran), while kill, freeze and the rest act on its containers on this
node (``docker kill``, ``pause``, ``exec``). A killed task is replaced by swarm
after its restart delay; a frozen one fails its healthcheck after
interval x retries and is replaced too, unless thawed first.
"""

from __future__ import annotations

import json
import subprocess
from typing import Final, Protocol

from lab.errors import LabError
from lab.settings import LabSettings
from lab.system import procfs
from lab.system.http import is_healthy, wait_until
from lab.targets.docker.compose import NGINX


class Swarm(Protocol):
    """What these controls need of ``lab.targets.docker.swarm.SwarmTarget``."""

    def service(self, cfg: LabSettings, service: str) -> str: ...

    def containers(self, cfg: LabSettings, service: str) -> list[str]: ...

    def container(self, cfg: LabSettings, service: str) -> str: ...

    def service_health(self, cfg: LabSettings) -> dict[str, bool]: ...

    def _nginx_ctl(self, cfg: LabSettings, *args: str) -> subprocess.CompletedProcess[str]: ...


class SwarmServices:
    START_DEADLINE_S: Final = 90.0
    ROUTE_TRY_S: Final = 3.0

    def __init__(self, cfg: LabSettings, target: Swarm) -> None:
        self.cfg = cfg
        self.target = target

    def _docker(self, *args: str, timeout: float = 120.0) -> str:
        done = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise LabError(f"`docker {' '.join(args[:3])}` failed: {done.stderr.strip()}")
        return done.stdout

    def _stopped_file(self, service: str) -> str:
        return str(self.cfg.state_dir / "swarm" / f"stopped-{service}.json")

    def stop(self, service: str) -> None:
        svc = self.target.service(self.cfg, service)
        fmt = "{{.Spec.Mode.Replicated.Replicas}}"
        replicas = int(self._docker("service", "inspect", "--format", fmt, svc).strip() or 1)
        with open(self._stopped_file(service), "w", encoding="utf-8") as f:
            json.dump({"replicas": max(replicas, 1)}, f)
        self._docker("service", "scale", "--detach", f"{svc}=0")
        if not wait_until(lambda: not self.target.containers(self.cfg, service), 60.0, 0.5):
            raise LabError(f"{service} still has containers 60s after scaling it to 0")

    def start(self, service: str) -> None:
        try:
            with open(self._stopped_file(service), encoding="utf-8") as f:
                replicas = int(json.load(f)["replicas"])
        except (OSError, ValueError, KeyError):
            replicas = 1
        svc = self.target.service(self.cfg, service)
        self._docker("service", "scale", "--detach", f"{svc}={replicas}")
        health = lambda: self.target.service_health(self.cfg).get(service, False)  # noqa: E731
        if not wait_until(health, self.START_DEADLINE_S, interval_s=0.5):
            raise LabError(f"{service} did not become healthy after scaling it back up")
        if service != NGINX:
            self._route_again(service)

    def _route_again(self, service: str) -> None:
        """Reload nginx until it reaches ``service``'s new task through its route.

        The task has a new address and nginx resolved the old one at its last
        reload. One reload is not enough: after ``docker kill`` swarm may still
        list the dead task as running for a moment, so the service looks healthy
        while its name resolves to nothing (the reload fails and nginx keeps the
        dead address) or to the dead task alone. So reload, give the route a few
        seconds, and reload again until it answers.
        """
        routed = f"{self.cfg.url}/{service.removeprefix('gateway-')}/healthz"

        def reached() -> bool:
            self.target._nginx_ctl(self.cfg, "reload")
            return wait_until(lambda: is_healthy(routed), self.ROUTE_TRY_S, interval_s=0.2)

        if not wait_until(reached, self.START_DEADLINE_S, interval_s=0.5):
            raise LabError(f"{service} did not answer through nginx after its restart")

    def kill(self, service: str) -> None:
        self._docker("kill", "--signal", "KILL", *self.target.containers(self.cfg, service))

    def restart(self, service: str) -> None:
        svc = self.target.service(self.cfg, service)
        # Without --detach the command returns once the new task runs (healthy).
        self._docker("service", "update", "--force", "--detach=false", "--quiet", svc, timeout=180)
        health = lambda: self.target.service_health(self.cfg).get(service, False)  # noqa: E731
        if not wait_until(health, self.START_DEADLINE_S, interval_s=0.5):
            raise LabError(f"{service} did not answer its health check after a restart")
        if service != NGINX:
            self._route_again(service)

    def freeze(self, service: str) -> None:
        self._docker("pause", *self.target.containers(self.cfg, service))

    def thaw(self, service: str) -> None:
        self._docker("unpause", *self.target.containers(self.cfg, service))

    def reload(self, service: str) -> None:
        # tini (``init: true``) is PID 1 and forwards the signal to the gunicorn master.
        self._docker("kill", "--signal", "HUP", *self.target.containers(self.cfg, service))

    def _exec(self, service: str, *args: str) -> str:
        return self._docker("exec", self.target.container(self.cfg, service), *args)

    def processes(self, service: str) -> str:
        return self._exec(service, _python(service), "-c", procfs.source(), "rows")

    def kill_pid(self, service: str, pid: int) -> None:
        program = f"import os, signal; os.kill({int(pid)}, signal.SIGKILL)"
        self._exec(service, _python(service), "-c", program)

    def cpus(self, service: str) -> float:
        return float(self._exec(service, _python(service), "-c", procfs.source(), "cpus"))

    def access_log(self) -> str:
        svc = self.target.service(self.cfg, NGINX)
        # stdout only (the access log); the error log goes to stderr.
        done = subprocess.run(
            ["docker", "logs", self.target.container(self.cfg, NGINX)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise LabError(f"cannot read {svc}'s log: {done.stderr.strip()}")
        return done.stdout


def _python(service: str) -> str:
    """The nginx image has Debian's python3; the gateway image its venv's python."""
    return "python3" if service == NGINX else "python"
