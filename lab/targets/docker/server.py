"""`lab server` on the docker target: a swap by container, never by restart.

1. Start a container of the mode's service with GATEWAY_SERVER=server
   (``compose run``: same image, networks, limits and hardening) and wait for
   its /healthz in its own protocol (``python -m gateway health`` inside it).
2. Point nginx at it: pass_<mode>.conf for the new server and the upstream
   pinned to its address, one graceful reload (``lab-nginx server``).
3. Once nginx's old workers are done with the old container, recreate the
   service with the new server (``compose up`` with LAB_SERVER_<MODE>, recorded
   for later ``up``s) and wait until it is healthy.
4. Upstream back to the service name (reload), then remove the temporary
   container once nginx's old workers are done with it.

A new server that does not come up is removed, and nginx never sees it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Final, Protocol

from gateway.servers.registry import default_server
from lab.errors import LabError
from lab.nginx import render as nginx_conf
from lab.servers import check_choice, record_servers, recorded_servers, wait_for_server
from lab.settings import LabSettings
from lab.system import procfs
from lab.system.http import wait_until
from lab.targets.docker.compose import PROJECT, SERVICES
from lab.targets.switching import check_mode, drain_old_workers

# The first line of each pass_<mode>.conf in the nginx container: the server behind each mode.
SERVERS_SCRIPT: Final = 'head -qn1 "${LAB_NGINX_CONF_DIR:-/tmp/nginx-conf}"/pass_*.conf'
# How long a new server's container may take to answer /healthz.
SERVER_START_S: Final = 60.0
COMPOSE_GATEWAY_PORT: Final = nginx_conf.COMPOSE_GATEWAY_PORT

Run = Callable[..., subprocess.CompletedProcess[str]]


class Compose(Protocol):
    """What the swap needs of ``lab.targets.docker.target.DockerTarget``."""

    def _compose(
        self,
        cfg: LabSettings,
        *args: str,
        timeout: float = ...,
    ) -> subprocess.CompletedProcess[str]: ...

    def _nginx_ctl(self, cfg: LabSettings, *args: str) -> subprocess.CompletedProcess[str]: ...

    def _nginx_procs(self, cfg: LabSettings) -> list[procfs.Proc]: ...

    def _reload(self, cfg: LabSettings, *command: str, what: str) -> set[int]: ...

    def _replicas(self, cfg: LabSettings, mode: str) -> list[tuple[int, str, str]]: ...

    def is_running(self, cfg: LabSettings) -> bool: ...


def servers_in_container(target: Compose, cfg: LabSettings) -> dict[str, str]:
    """mode -> server, as the running nginx container's pass_<mode>.conf files say."""
    got = target._nginx_ctl(cfg, "sh", "-c", SERVERS_SCRIPT)
    found = {}
    for line in got.stdout.splitlines():
        if (record := nginx_conf.read_server(line)) is not None:
            found[record[0]] = record[1]
    return found


def swap_from(
    target: Compose, cfg: LabSettings, mode: str, server: str, kind: str, say: Callable[[str], None]
) -> str | None:
    """The server ``mode`` is swapped from, after the checks every Docker swap makes;
    None when ``server`` already serves it (said). ``kind``: the target, for the error."""
    check_mode(mode)
    check_choice(mode, server)
    if not target.is_running(cfg):
        raise LabError(f"the {kind} lab is not running: `make up` first")
    current = servers_in_container(target, cfg).get(mode) or default_server(mode)
    if current == server:
        say(f"{mode} is already served by {server}")
        return None
    if len(target._replicas(cfg, mode)) > 1:
        raise LabError(f"{mode} runs several replicas: `lab scale {mode} 1` first")
    return current


def swap_back(
    target: Compose,
    cfg: LabSettings,
    mode: str,
    servers: tuple[str, str],
    remove_temp: Callable[[], None],
    say: Callable[[str], None],
) -> None:
    """The last step of every Docker swap, once the service runs the new server:
    nginx back on the service's name (a reload), its old workers drained, the
    temporary gateway removed, the new server answering through nginx.
    ``servers``: (the one before, the new one)."""
    current, server = servers
    before = target._reload(
        cfg, "server", f"{mode}={server}", what=f"pointing nginx back at {SERVICES[mode]}"
    )
    drain_old_workers(before, lambda: target._nginx_procs(cfg), say)
    remove_temp()
    wait_for_server(cfg, mode, server)
    say(f"{mode}: {cfg.url}/{mode}/ is now served by {server} (was {current})")


class DockerServerSwap:
    def __init__(self, target: Compose, run: Run, say: Callable[[str], None]) -> None:
        self.target = target
        self.run = run
        self.say = say

    def swap(self, cfg: LabSettings, mode: str, server: str) -> None:
        """Put ``server`` behind ``mode`` without dropping a request: blue-green by container.

        1. Start a container of the mode's service with GATEWAY_SERVER=server
           (``compose run``: same image, networks, limits and hardening) and
           wait for its /healthz in its own protocol.
        2. Point nginx at it: pass_<mode>.conf for the new server and the
           upstream pinned to its address, one graceful reload (``lab-nginx server``).
        3. Once nginx's old workers are done with the old container, recreate
           the service with the new server (``compose up`` with LAB_SERVER_<MODE>)
           and wait until it is healthy.
        4. Upstream back to the service name (reload), then remove the
           temporary container once nginx's old workers are done with it.

        A new server that does not come up is removed and nginx never sees it.
        """
        current = swap_from(self.target, cfg, mode, server, "docker", self.say)
        if current is None:
            return
        service = SERVICES[mode]
        temp = f"{PROJECT}-{mode}-{server}"
        self.run(["docker", "rm", "--force", temp], timeout=60)  # a leftover of an interrupted swap
        started = self.target._compose(
            cfg, "run", "--detach", "--no-deps", "--name", temp,
            "--env", f"GATEWAY_SERVER={server}", service,
            timeout=cfg.wait_timeout_s,
        )  # fmt: skip
        if started.returncode != 0:
            raise LabError(
                f"{mode} stays on {current}: {server} did not start "
                f"({(started.stderr or started.stdout).strip().splitlines()[-1:]})"
            )
        try:
            health = ["docker", "exec", temp, "python", "-m", "gateway", "health"]
            if not wait_until(lambda: self.run(health, timeout=30).returncode == 0, SERVER_START_S):
                logs = self.run(["docker", "logs", "--tail", "5", temp], timeout=30)
                last = (logs.stdout + logs.stderr).strip().splitlines()[-1:]
                raise LabError(
                    f"{mode} stays on {current}: {server} did not answer /healthz within "
                    f"{SERVER_START_S:.0f}s (its log ends: {last})"
                )
            address = self._container_address(temp)
            pin = f"{mode}_server={address}:{COMPOSE_GATEWAY_PORT}"
            before = self.target._reload(
                cfg, "server", f"{mode}={server}", "--set", pin, what=f"pointing nginx at {temp}"
            )
        except BaseException:
            self.run(["docker", "rm", "--force", temp], timeout=60)
            raise
        drain_old_workers(before, lambda: self.target._nginx_procs(cfg), self.say)
        chosen = recorded_servers(cfg) | {mode: server}
        record_servers(cfg, chosen)
        recreated = self.target._compose(
            cfg, "up", "--detach", "--no-deps", "--wait", service, timeout=cfg.wait_timeout_s + 60
        )
        if recreated.returncode != 0:
            raise LabError(
                f"nginx uses {server} in {temp}, but recreating {service} with it failed "
                f"(the temporary container keeps serving):\n{recreated.stdout}{recreated.stderr}"
            )

        def remove_temp() -> None:
            self.run(["docker", "stop", "--time", "10", temp], timeout=60)
            self.run(["docker", "rm", "--force", temp], timeout=60)

        swap_back(self.target, cfg, mode, (current, server), remove_temp, self.say)

    def _container_address(self, container: str) -> str:
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        got = self.run(["docker", "inspect", "--format", fmt, container], timeout=30)
        addresses = got.stdout.split()
        if got.returncode != 0 or not addresses:
            raise LabError(f"cannot find the address of {container}:\n{got.stderr}")
        return addresses[0]
