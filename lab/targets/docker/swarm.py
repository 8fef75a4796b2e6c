"""The swarm target: the lab as a Docker Swarm stack, rendered from compose.yaml.

``up`` makes sure the engine is a swarm manager (``docker swarm init`` when it
is in no swarm, said aloud and recorded in the state dir), builds both images
as the docker target does (tag LAB_IMAGE_TAG; pushed to LAB_REGISTRY when one
is named, so other nodes can pull them), renders the stack file
(``lab.targets.docker.stack``) into the state dir, deploys it as stack
LAB_STACK and returns once every service has all its replicas running healthy
and nginx answers. ``down`` removes the stack and its state volume, and leaves
the swarm only if ``up`` created it.

nginx is controlled as under compose (``lab-nginx`` in its container): switch,
split, scale and the fault controls reuse the docker target's logic; only how
a container is found differs (by its swarm service label, on this node).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import yaml

from lab.errors import LabError
from lab.nginx.render import COMPOSE_GATEWAY_PORT, COMPOSE_TLS_DIR, tls_files
from lab.settings import LabSettings
from lab.system.http import is_healthy, wait_until
from lab.system.ports import port_free
from lab.targets import Services, StatusDict, control_process
from lab.targets.docker.compose import COMPOSE_FILE, NGINX, SERVICES, compose_env
from lab.targets.docker.stack import (
    interpolate,
    parse_service_ls,
    parse_task_listing,
    parse_tasks,
    stack_file,
)
from lab.targets.docker.swarm_server import SwarmServerSwap
from lab.targets.docker.swarm_services import SwarmServices
from lab.targets.docker.target import (
    UPSTREAMS_RELOAD_SCRIPT,
    DockerTarget,
    _run,
    _say,
    port_in_use_message,
)
from lab.targets.switching import check_mode, check_replicas, drain_old_workers

STACK_LABEL: Final = "com.docker.stack.namespace"
SERVICE_LABEL: Final = "com.docker.swarm.service.name"
GWBRIDGE: Final = "docker_gwbridge"


def _docker(*args: str, timeout: float = 120.0) -> str:
    done = _run(["docker", *args], timeout=timeout)
    if done.returncode != 0:
        raise LabError(f"`docker {' '.join(args[:3])}` failed: {done.stderr.strip()}")
    return done.stdout


class SwarmTarget(DockerTarget):
    """The lab as swarm stack LAB_STACK (default gateway-lab-swarm)."""

    name = "swarm"

    def project(self, cfg: LabSettings) -> str:
        return cfg.stack

    # -- where things are -----------------------------------------------------------

    def _record_file(self, cfg: LabSettings) -> Path:
        """Whether ``up`` initialised the swarm (so ``down`` leaves it), and the stack file."""
        return cfg.state_dir / "swarm" / "record.json"

    def service(self, cfg: LabSettings, service: str) -> str:
        """The swarm service of a compose service: ``<stack>_<service>``."""
        return f"{cfg.stack}_{service}"

    def containers(self, cfg: LabSettings, service: str) -> list[str]:
        """The running containers of ``service`` on this node."""
        label = f"{SERVICE_LABEL}={self.service(cfg, service)}"
        return _docker("ps", "--quiet", "--filter", f"label={label}").split()

    def container(self, cfg: LabSettings, service: str) -> str:
        found = self.containers(cfg, service)
        if not found:
            raise LabError(f"no running container of {service} on this node: see `lab status`")
        return found[0]

    def _nginx_ctl(self, cfg: LabSettings, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``lab-nginx ARGS`` (nginx/entrypoint.sh) in the running nginx container."""
        try:
            nginx = self.container(cfg, NGINX)
        except LabError as exc:
            return subprocess.CompletedProcess(["lab-nginx", *args], 1, "", str(exc))
        return _run(["docker", "exec", nginx, "lab-nginx", *args])

    # -- the swarm itself -----------------------------------------------------------

    def _ensure_swarm(self, cfg: LabSettings) -> None:
        state = _docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}")
        node_state, _, manager = state.strip().partition(" ")
        if node_state == "active":
            if manager != "true":
                raise LabError("this engine is a swarm worker: run `lab up` on a manager node")
            return
        if node_state != "inactive":
            raise LabError(f"this engine's swarm state is {node_state!r}: fix it, then `lab up`")
        # `swarm init` also makes the docker_gwbridge network, which `swarm leave` keeps.
        bridge = _run(["docker", "network", "ls", "--quiet", "--filter", f"name=^{GWBRIDGE}$"])
        init = _run(["docker", "swarm", "init"], timeout=60)
        if init.returncode != 0:
            raise LabError(
                f"`docker swarm init` failed: {init.stderr.strip()}\n"
                "(on a machine with several addresses: `docker swarm init --advertise-addr ADDR` "
                "yourself, then `lab up`)"
            )
        record = self._record_file(cfg)
        record.parent.mkdir(parents=True, exist_ok=True)
        made_bridge = not bridge.stdout.strip()
        record.write_text(json.dumps({"initialised_swarm": True, "made_gwbridge": made_bridge}))
        _say("this engine was in no swarm: initialised a single-node swarm (`lab down` leaves it)")

    def _leave_swarm_if_ours(self, cfg: LabSettings) -> None:
        record = self._record_file(cfg)
        try:
            recorded = json.loads(record.read_text())
            ours, made_bridge = recorded.get("initialised_swarm"), recorded.get("made_gwbridge")
        except (OSError, ValueError, AttributeError):
            return
        if not ours:
            return
        others = _run(["docker", "stack", "ls", "--format", "{{.Name}}"]).stdout.split()
        if others:
            _say(f"keeping the swarm `lab up` initialised: other stacks run on it ({others})")
            return
        left = _run(["docker", "swarm", "leave", "--force"], timeout=60)
        if left.returncode != 0:
            raise LabError(f"`docker swarm leave --force` failed: {left.stderr.strip()}")
        if made_bridge:
            _run(["docker", "network", "rm", GWBRIDGE])
        record.unlink()
        _say("left the single-node swarm `lab up` initialised")

    # -- the stack ------------------------------------------------------------------

    def render(
        self, cfg: LabSettings, replicas: Mapping[str, int] | None = None
    ) -> dict[str, object]:
        """compose.yaml, interpolated as compose would with the lab's settings, as a stack."""
        env = compose_env(cfg, self._environ, self._base_image or None, self.name)
        # Its own overlay subnet: the compose project's bridge may use LAB_SUBNET on this engine.
        env["LAB_SUBNET"] = cfg.swarm_subnet
        compose = interpolate(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")), env)
        return stack_file(compose, replicas, cfg.registry)

    def _stack_ls(self, cfg: LabSettings) -> str:
        fmt = "{{.Name}} {{.Replicas}}"
        got = _run(["docker", "service", "ls", "--filter", f"label={STACK_LABEL}={cfg.stack}",
                    "--format", fmt])  # fmt: skip
        return got.stdout if got.returncode == 0 else ""

    def service_health(self, cfg: LabSettings) -> dict[str, bool]:
        """Each service: every replica it should run is running (after its healthcheck)."""
        health = {s: ok for s, (ok, _) in parse_service_ls(self._stack_ls(cfg), cfg.stack).items()}
        health[NGINX] = health[NGINX] and is_healthy(cfg.url + "/nginx-health")
        return health

    def _replica_counts(self, cfg: LabSettings) -> dict[str, int]:
        rows = parse_service_ls(self._stack_ls(cfg), cfg.stack)
        return {mode: rows[service][1] for mode, service in SERVICES.items()}

    def is_running(self, cfg: LabSettings) -> bool:
        return bool(self._stack_ls(cfg).strip())

    def _push(self, cfg: LabSettings) -> None:
        """Tag both images for LAB_REGISTRY and push them, so every node can pull them."""
        for image in ("gateway-lab/gateway", "gateway-lab/nginx"):
            local = f"{image}:{cfg.image_tag}"
            remote = f"{cfg.registry}/{local}"
            _docker("tag", local, remote)
            _say(f"pushing {remote}")
            _docker("push", remote, timeout=cfg.build_timeout_s)

    def up(self, cfg: LabSettings) -> None:
        self._require_engine()
        self._base_image = cfg.base_image
        self._ensure_swarm(cfg)
        running = self.is_running(cfg)
        if running and all(self.service_health(cfg).values()):
            self._copy_ca(cfg)
            control_process.start(cfg, self.name, self._environ, _say)
            _say(f"already up at {cfg.url}")
            return
        if not running:
            for port, variable in ((cfg.port, "LAB_PORT"), (cfg.tls_port, "LAB_TLS_PORT")):
                if not port_free(port):
                    raise LabError(port_in_use_message(port, variable))
        self._base_image = self.build_images(cfg)
        if cfg.registry:
            self._push(cfg)
        counts = self._replica_counts(cfg) if running else None
        # The dashboard's server picker first: swarm mounts only a directory that exists.
        control_process.start(cfg, self.name, self._environ, _say)
        path = self._record_file(cfg).with_name("stack.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.render(cfg, counts), indent=1) + "\n")
        _say(f"deploying stack {cfg.stack} ({path}) and waiting for its healthchecks")
        started = time.monotonic()
        resolve = "always" if cfg.registry else "never"
        deploy = ["stack", "deploy", "--prune", "--resolve-image", resolve, "-c", str(path)]
        _docker(*deploy, *(["--with-registry-auth"] if cfg.registry else []), cfg.stack)
        healthy = lambda: all(self.service_health(cfg).values())  # noqa: E731
        if not wait_until(healthy, cfg.wait_timeout_s, interval_s=1.0):
            report = self._report_failure(cfg)
            self.down(cfg)
            raise LabError(
                f"stack {cfg.stack} did not become healthy within {cfg.wait_timeout_s}s "
                f"and was removed again.\n{report}"
            )
        self._copy_ca(cfg)
        _say(f"stack {cfg.stack} healthy {time.monotonic() - started:.1f}s after deploy")
        _say(
            f"up at {cfg.url}; published on every interface of this node: {cfg.port}/{cfg.tls_port}"
        )
        _say(f"over TLS and HTTP/2: {cfg.tls_url} (trust {cfg.ca_file_of(self.name)})")

    def _report_failure(self, cfg: LabSettings) -> str:
        tasks = _run(["docker", "stack", "ps", "--no-trunc", cfg.stack])
        logs = [
            _run(["docker", "service", "logs", "--tail", "20", self.service(cfg, s)]).stdout
            for s in (NGINX, *SERVICES.values())
        ]
        return f"{tasks.stdout}{tasks.stderr}\n--- last log lines ---\n{''.join(logs)}"

    def _copy_ca(self, cfg: LabSettings) -> None:
        cfg.ca_file_of(self.name).parent.mkdir(parents=True, exist_ok=True)
        source = tls_files(COMPOSE_TLS_DIR)["ca.pem"]
        _docker("cp", f"{self.container(cfg, NGINX)}:{source}", str(cfg.ca_file_of(self.name)))

    def down(self, cfg: LabSettings) -> None:
        control_process.stop(cfg, self.name)
        if self.is_running(cfg):
            _docker("stack", "rm", cfg.stack)
        # `stack rm` returns at once; the containers and networks go afterwards.
        label = f"label={STACK_LABEL}={cfg.stack}"

        def gone() -> bool:
            listed = _docker("ps", "--all", "--quiet", "--filter", label)
            return not (listed + _docker("network", "ls", "--quiet", "--filter", label)).strip()

        if not wait_until(gone, 90.0, interval_s=0.5):
            raise LabError(f"stack {cfg.stack}'s containers or networks are still there after 90s")
        # The state (active mode, servers) goes; the CA volume stays (`make clean`).
        _run(["docker", "volume", "rm", "--force", f"{cfg.stack}_nginx-state"])
        self._leave_swarm_if_ours(cfg)

    def status(self, cfg: LabSettings) -> StatusDict:
        status = super().status(cfg)
        status["tasks"] = self.tasks(cfg) if status["running"] or self.is_running(cfg) else {}
        nodes = sorted({str(t["node"]) for t in status["tasks"].get(NGINX, [])})
        status["published"] = (
            f"ports {cfg.port} and {cfg.tls_port} on every interface of "
            f"{', '.join(nodes) or 'the node running nginx'} (swarm has no host address)"
        )
        return status

    def tasks(self, cfg: LabSettings) -> dict[str, list[dict[str, object]]]:
        """Per service, each running replica: its slot, node and state."""
        fmt = "{{.Name}}\t{{.Node}}\t{{.CurrentState}}"
        got = _run(["docker", "stack", "ps", "--filter", "desired-state=running",
                    "--format", fmt, cfg.stack])  # fmt: skip
        return parse_tasks(got.stdout if got.returncode == 0 else "", cfg.stack)

    def _top(self, cfg: LabSettings, service: str) -> str:
        """``docker top`` of every replica of ``service`` on this node."""
        return "\n".join(_run(["docker", "top", c]).stdout for c in self.containers(cfg, service))

    def logs(self, cfg: LabSettings, follow: bool) -> None:
        args = ["docker", "service", "logs", "--no-trunc", *(["--follow"] if follow else [])]
        procs = [
            subprocess.Popen([*args, self.service(cfg, s)])  # noqa: S603
            for s in (NGINX, *SERVICES.values())
        ]
        for proc in procs:
            proc.wait()

    def _replicas(self, cfg: LabSettings, mode: str) -> list[tuple[int, str, str]]:
        """(slot, task id, address on the lab network) of each running replica of ``mode``."""
        svc = self.service(cfg, SERVICES[mode])
        ids = _docker("service", "ps", "--quiet", "--filter", "desired-state=running", svc).split()
        if not ids:
            return []
        fmt = (
            "{{.Slot}} {{.ID}} "
            "{{range .NetworksAttachments}}{{range .Addresses}}{{.}} {{end}}{{end}}"
        )
        return parse_task_listing(_docker("inspect", "--format", fmt, *ids))

    def scale(self, cfg: LabSettings, mode: str, replicas: int) -> None:
        """``replicas`` tasks of one gateway, spread over the nodes, behind nginx.

        As under compose: nginx resolves the service name (dnsrr: every task's
        address) when it loads its config, so a reload after scaling up
        balances over all of them. Before a scale-down nginx is pinned to the
        replicas that stay (swarm removes the highest slots), and its old
        workers finish their requests before swarm stops the surplus.
        """
        check_mode(mode)
        check_replicas(replicas)
        if not self.is_running(cfg):
            raise LabError("the swarm lab is not running: `make up` first")
        current = self._replicas(cfg, mode)
        if replicas < len(current):
            servers = " ".join(f"{ip}:{COMPOSE_GATEWAY_PORT}" for _, _, ip in current[:replicas])
            pin = ("sh", "-c", UPSTREAMS_RELOAD_SCRIPT, "sh", "--set", f"{mode}_server={servers}")
            before = self._reload(cfg, *pin, what="pinning nginx to the remaining replicas")
            drain_old_workers(before, lambda: self._nginx_procs(cfg), _say)
        svc = self.service(cfg, SERVICES[mode])
        _docker("service", "scale", "--detach", f"{svc}={replicas}")
        done = lambda: self._replica_counts(cfg)[mode] == replicas == len(self._replicas(cfg, mode))  # noqa: E731
        if not wait_until(done, cfg.wait_timeout_s, interval_s=0.5):
            raise LabError(
                f"{svc} did not reach {replicas} healthy replica(s) in {cfg.wait_timeout_s}s"
            )
        self._reload(cfg, "sh", "-c", UPSTREAMS_RELOAD_SCRIPT, what="reloading nginx")
        _say(f"{SERVICES[mode]}: {replicas} replica(s) behind nginx")

    def server(self, cfg: LabSettings, mode: str, server: str) -> None:
        """Put ``server`` behind ``mode``, blue-green by service (docker/swarm_server.py)."""
        SwarmServerSwap(self, _run, _say).swap(cfg, mode, server)

    def services(self, cfg: LabSettings) -> Services:
        return SwarmServices(cfg, self)
