"""`lab server` on the swarm target: a blue-green swap by service, never a restart.

1. Deploy a one-service stack ``<stack>-next``: the mode's gateway as the
   stack runs it, with GATEWAY_SERVER=server, on the stack's lab network
   (``lab.targets.docker.stack.next_stack``); wait until its task is healthy.
2. Point nginx at it: pass_<mode>.conf for the new server and the upstream
   pinned to the task's address, one graceful reload (``lab-nginx server``).
3. Once nginx's old workers are done, update the stack's service to the new
   server (recorded for later ``up``s) and wait until all its replicas are healthy.
4. Upstream back to the service name (reload), then remove ``<stack>-next``
   once nginx's old workers are done with it.

A new server that does not come up is removed, and nginx never sees it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Final, Protocol

from lab.errors import LabError
from lab.nginx.render import COMPOSE_GATEWAY_PORT
from lab.servers import record_servers, recorded_servers
from lab.settings import LabSettings
from lab.system.http import wait_until
from lab.targets.docker.compose import SERVICES
from lab.targets.docker.server import Compose, swap_back, swap_from
from lab.targets.docker.stack import next_stack, parse_service_ls
from lab.targets.switching import drain_old_workers

SERVER_START_S: Final = 90.0

Run = Callable[..., subprocess.CompletedProcess[str]]


class Swarm(Compose, Protocol):
    """What the swap needs of ``lab.targets.docker.swarm.SwarmTarget``."""

    def render(
        self, cfg: LabSettings, replicas: dict[str, int] | None = None
    ) -> dict[str, object]: ...

    def service(self, cfg: LabSettings, service: str) -> str: ...


class SwarmServerSwap:
    def __init__(self, target: Swarm, run: Run, say: Callable[[str], None]) -> None:
        self.target = target
        self.run = run
        self.say = say

    def _docker(self, *args: str, timeout: float = 120.0) -> str:
        done = self.run(["docker", *args], timeout=timeout)
        if done.returncode != 0:
            raise LabError(f"`docker {' '.join(args[:3])}` failed: {done.stderr.strip()}")
        return str(done.stdout)

    def _healthy(self, stack: str, service: str) -> bool:
        fmt = ["--format", "{{.Name}} {{.Replicas}}"]
        got = self.run(["docker", "service", "ls", "--filter", f"name={stack}_", *fmt])
        return parse_service_ls(got.stdout if got.returncode == 0 else "", stack)[service][0]

    def swap(self, cfg: LabSettings, mode: str, server: str) -> None:
        current = swap_from(self.target, cfg, mode, server, "swarm", self.say)
        if current is None:
            return
        service, temp = SERVICES[mode], f"{cfg.stack}-next"
        stack = self.target.render(cfg, None)
        path = cfg.state_dir / "swarm" / "next.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(next_stack(stack, cfg.stack, mode, server), indent=1) + "\n")
        self._remove(temp)  # a leftover of an interrupted swap
        self._docker("stack", "deploy", "--resolve-image", "never", "-c", str(path), temp)
        try:
            if not wait_until(lambda: self._running(f"{temp}_{service}-next"), SERVER_START_S, 1.0):
                raise LabError(
                    f"{mode} stays on {current}: {server} did not become healthy within "
                    f"{SERVER_START_S:.0f}s (`docker service logs {temp}_{service}-next`)"
                )
            # By name (dnsrr: the temporary task's address), as the stack's own services are.
            pin = f"{mode}_server={service}-next:{COMPOSE_GATEWAY_PORT}"
            before = self.target._reload(
                cfg, "server", f"{mode}={server}", "--set", pin, what=f"pointing nginx at {temp}"
            )
        except BaseException:
            self._remove(temp)
            raise
        drain_old_workers(before, lambda: self.target._nginx_procs(cfg), self.say)
        record_servers(cfg, recorded_servers(cfg) | {mode: server})
        real = self.target.service(cfg, service)
        # Without --detach: returns once the update has converged (start-first: the
        # new task is healthy and the old one stopped), so the name resolves to the new only.
        # Once more if swarm rolled it back (a new task that failed its first
        # healthchecks on a busy machine): the temporary service serves meanwhile.
        update = ["docker", "service", "update", "--detach=false", "--quiet",
                  "--env-add", f"GATEWAY_SERVER={server}", real]  # fmt: skip
        for attempt in (1, 2):
            updated = self.run(update, timeout=SERVER_START_S * 2)
            if updated.returncode == 0 and self._updated(real, cfg.stack, service):
                break
            if attempt == 1:
                self.say(f"updating {real} failed ({updated.stderr.strip()[-200:]}); once more")
        else:
            raise LabError(
                f"nginx uses {server} in {temp}, but updating {real} to it failed "
                f"(the temporary service keeps serving): {updated.stderr.strip()}"
            )

        def remove_temp() -> None:
            # Its task stops in the background; the next swap waits for it to be gone.
            self.run(["docker", "stack", "rm", temp], timeout=60)

        swap_back(self.target, cfg, mode, (current, server), remove_temp, self.say)

    def _running(self, name: str) -> bool:
        """The one task of service ``name`` runs (swarm: after its healthcheck passed)."""
        got = self.run(["docker", "service", "ls", "--filter", f"name={name}", "--format",
                        "{{.Name}} {{.Replicas}}"])  # fmt: skip
        return f"{name} 1/1" in got.stdout.splitlines()

    def _updated(self, real: str, stack: str, service: str) -> bool:
        fmt = "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}"
        state = self._docker("service", "inspect", "--format", fmt, real).strip()
        return state in ("", "completed") and self._healthy(stack, service)

    def _remove(self, temp: str) -> None:
        self.run(["docker", "stack", "rm", temp], timeout=60)
        label = f"label=com.docker.stack.namespace={temp}"
        wait_until(
            lambda: not self.run(["docker", "ps", "-aq", "--filter", label]).stdout.strip(),
            60.0,
            0.5,
        )
