"""The docker target: the lab as the Compose project in compose.yaml.

``up`` checks that an engine answers, picks the base image (debian:bookworm-slim, or
lab-base:bookworm built from Debian's packages where no registry is reachable), builds
both images, starts the dashboard's control process on the host (lab.targets.control_process)
and the project with ``--wait``, so it returns once every healthcheck passes. A failed
start is reported with ``docker compose ps`` and the last log lines, then taken down.

``switch``, ``split`` and ``scale`` act on the running nginx container through
the ``lab-nginx`` helper baked into its image (nginx/entrypoint.sh).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from gateway.servers.registry import default_server
from lab.errors import LabError
from lab.nginx.render import COMPOSE_GATEWAY_PORT, COMPOSE_TLS_DIR, tls_files
from lab.routing import MODES, RenderError, active_label, format_split, parse_active
from lab.servers import worker_counts
from lab.settings import ROOT, LabSettings
from lab.system import procfs
from lab.system.http import is_healthy, wait_until
from lab.system.ports import port_free
from lab.targets import Services, StatusDict, control_process, cpus_known, docker_answers
from lab.targets.docker.compose import (
    NGINX,
    PROJECT,
    PROJECT_LABEL,
    SERVICES,
    STATE_VOLUME,
    compose_args,
    compose_env,
    parse_replicas_listing,
    replica_counts,
    scale_args,
    service_health,
    up_args,
    workers_from_top,
)
from lab.targets.docker.server import DockerServerSwap, servers_in_container
from lab.targets.docker.services import DockerServices
from lab.targets.switching import (
    MASTER_TITLE,
    accepting_workers,
    apply_split,
    check_mode,
    drain_old_workers,
    limits_dict,
    wait_for_mode,
    wait_for_reload,
)

SLIM_IMAGE: Final = "debian:bookworm-slim"
LOCAL_BASE_IMAGE: Final = "lab-base:bookworm"
BASE_IMAGE_SCRIPT: Final = ROOT / "scripts" / "base-image.sh"
# The three gateway services share one image (gateway-lab/gateway); compose
# without buildx builds it once per service, so build it through one of them.
BUILD_SERVICES: Final = (SERVICES["wsgi"], NGINX)
PULL_TIMEOUT_S: Final = 60.0
Output = Literal["capture", "stderr", "pass"]
COMMAND_TIMEOUT_S: Final = 120.0
NUMBER_LABEL: Final = "com.docker.compose.container-number"
# Rewrites only upstreams.conf in the nginx container (lab.nginx upstreams);
# extra arguments (--set wsgi_server="IP:8000 ...") pin an upstream to addresses.
UPSTREAMS_SCRIPT: Final = (
    "python3 -m lab.nginx upstreams --target compose "
    '--out "${LAB_NGINX_CONF_DIR:-/tmp/nginx-conf}" "$@"'
)
# The same, then `lab-nginx reload` (nginx -t, graceful reload).
UPSTREAMS_RELOAD_SCRIPT: Final = UPSTREAMS_SCRIPT + " && exec lab-nginx reload"


def port_in_use_message(port: int, variable: str = "LAB_PORT") -> str:
    return (
        f"127.0.0.1:{port} is already in use by another program, so nginx cannot publish it: "
        f"stop that program, or choose another port ({variable}={port + 100} make up)"
    )


# -- I/O at the edges -------------------------------------------------------------


def _say(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def _run(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = COMMAND_TIMEOUT_S,
    output: Output = "capture",
) -> subprocess.CompletedProcess[str]:
    """Run a command, never raising on its exit status.

    ``output``: "capture" keeps stdout/stderr in the result; "stderr" shows the
    command's progress (builds) on stderr, keeping stdout for the lab's own
    output; "pass" leaves both as they are (logs).
    """
    streams: dict[str, Any] = {}
    if output == "capture":
        streams["capture_output"] = True
    elif output == "stderr":
        streams["stdout"] = sys.stderr
    try:
        return subprocess.run(
            list(args),
            env=dict(env) if env is not None else None,
            text=True,
            timeout=timeout,
            check=False,
            **streams,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{' '.join(args[:4])} …` did not finish within {timeout:.0f}s") from exc
    except FileNotFoundError as exc:
        raise LabError(f"{args[0]} is not installed ({exc})") from exc


def _image_exists(image: str) -> bool:
    return _run(["docker", "image", "inspect", image], timeout=30).returncode == 0


class DockerTarget:
    """The lab as Compose project ``gateway-lab``."""

    name = "docker"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._base_image = ""  # LabSettings.base_image, set by each command

    # -- helpers ---------------------------------------------------------------

    def _compose(
        self,
        cfg: LabSettings,
        *args: str,
        base_image: str | None = None,
        timeout: float = COMMAND_TIMEOUT_S,
        output: Output = "capture",
    ) -> subprocess.CompletedProcess[str]:
        env = compose_env(cfg, self._environ, base_image, self.name)
        project = self.project(cfg)
        return _run(compose_args(*args, project=project), env=env, timeout=timeout, output=output)

    def project(self, cfg: LabSettings) -> str:
        """The compose project name its containers, networks and images are labelled with."""
        return PROJECT

    def _require_engine(self) -> None:
        if shutil.which("docker") is None:
            raise LabError(
                "the docker command is not installed: install Docker Engine with Compose v2 "
                "(as root: bash scripts/docker-engine.sh), or run with LAB_TARGET=native"
            )
        if not docker_answers():
            raise LabError(
                "no Docker engine answers: start one (as root: bash scripts/docker-engine.sh), "
                "or run with LAB_TARGET=native to use the host's nginx instead"
            )
        if _run(["docker", "compose", "version"], timeout=30).returncode != 0:
            raise LabError(
                "`docker compose` (Compose v2) is missing: bash scripts/docker-engine.sh "
                "installs it, or run with LAB_TARGET=native"
            )

    def _nginx_ctl(self, cfg: LabSettings, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``lab-nginx ARGS`` (nginx/entrypoint.sh) in the running nginx container."""
        return self._compose(cfg, "exec", "-T", NGINX, "lab-nginx", *args)

    def base_image(self) -> str:
        """The image both Dockerfiles build FROM, built locally when no registry has it."""
        if chosen := self._base_image:
            return chosen
        for image in (SLIM_IMAGE, LOCAL_BASE_IMAGE):
            if _image_exists(image):
                return image
        _say(f"pulling {SLIM_IMAGE}")
        try:
            pulled = _run(["docker", "pull", "--quiet", SLIM_IMAGE], timeout=PULL_TIMEOUT_S)
        except LabError:
            pulled = None
        if pulled is not None and pulled.returncode == 0:
            return SLIM_IMAGE
        _say(
            f"{SLIM_IMAGE} cannot be pulled here; building {LOCAL_BASE_IMAGE} from Debian's "
            f"packages instead ({BASE_IMAGE_SCRIPT.relative_to(ROOT)}, about 30 s)"
        )
        built = _run(["bash", str(BASE_IMAGE_SCRIPT)], timeout=900, output="stderr")
        if built.returncode != 0:
            raise LabError(
                f"could not build {LOCAL_BASE_IMAGE} (exit {built.returncode}); "
                f"set LAB_BASE_IMAGE to an image you have, or run with LAB_TARGET=native"
            )
        return LOCAL_BASE_IMAGE

    def service_health(self, cfg: LabSettings) -> dict[str, bool]:
        """Each service: every container of it runs and reports healthy (nginx: and answers)."""
        ps = self._compose(cfg, "ps", "--format", "{{.Service}} {{.State}} {{.Health}}")
        health = service_health(ps.stdout if ps.returncode == 0 else "")
        health[NGINX] = health[NGINX] and is_healthy(cfg.url + "/nginx-health")
        return health

    def _healthy(self, cfg: LabSettings) -> bool:
        return all(self.service_health(cfg).values())

    def _report_failure(self, cfg: LabSettings) -> str:
        ps = self._compose(cfg, "ps", "--all")
        logs = self._compose(cfg, "logs", "--no-color", "--tail", "30")
        return f"{ps.stdout}{ps.stderr}\n--- last log lines ---\n{logs.stdout}{logs.stderr}"

    def build_images(self, cfg: LabSettings) -> str:
        """Build both images (tag LAB_IMAGE_TAG) on the chosen base; returns the base."""
        base = self.base_image()
        _say(f"building gateway-lab/gateway and gateway-lab/nginx on {base}")
        build = self._compose(
            cfg,
            "build",
            *BUILD_SERVICES,
            base_image=base,
            timeout=cfg.build_timeout_s,
            output="stderr",
        )
        if build.returncode != 0:
            raise LabError(f"`docker compose build` failed (exit {build.returncode}); see above")
        # Images a rebuild replaced (untagged now): this project's only.
        label = f"{PROJECT_LABEL.partition('=')[0]}={self.project(cfg)}"
        _run(["docker", "image", "prune", "--force", "--filter", f"label={label}"])
        return base

    # -- the Target interface -----------------------------------------------------

    def up(self, cfg: LabSettings) -> None:
        self._require_engine()
        self._base_image = cfg.base_image
        if self.is_running(cfg) and self._healthy(cfg):
            self._copy_ca(cfg)
            control_process.start(cfg, self.name, self._environ, _say)  # unless it runs
            _say(f"already up at {cfg.url}")
            return
        if not self.is_running(cfg):
            for port, variable in ((cfg.port, "LAB_PORT"), (cfg.tls_port, "LAB_TLS_PORT")):
                if not port_free(port):
                    raise LabError(port_in_use_message(port, variable))
        base = self.build_images(cfg)
        control_process.start(cfg, self.name, self._environ, _say)  # the directory nginx mounts
        _say("starting the services and waiting for their healthchecks")
        started = self._compose(
            cfg,
            *up_args("--remove-orphans", wait_timeout_s=cfg.wait_timeout_s),
            base_image=base,
            timeout=cfg.wait_timeout_s + 60,
        )
        if started.returncode != 0:
            report = self._report_failure(cfg)
            self.down(cfg)
            output = started.stdout + started.stderr
            if "address already in use" in output or "port is already allocated" in output:
                raise LabError(port_in_use_message(cfg.port))
            raise LabError(
                f"the compose project did not become healthy within {cfg.wait_timeout_s}s "
                f"and was taken down again.\n{output}\n{report}"
            )
        if not wait_until(lambda: is_healthy(cfg.url + "/nginx-health"), 15):
            report = self._report_failure(cfg)
            self.down(cfg)
            raise LabError(f"nginx is healthy inside but {cfg.url} does not answer.\n{report}")
        self._copy_ca(cfg)
        _say(f"up at {cfg.url}")
        _say(f"over TLS and HTTP/2: {cfg.tls_url} (trust {cfg.ca_file_of(self.name)})")

    def _copy_ca(self, cfg: LabSettings) -> None:
        """The CA certificate the nginx container made, copied to this host (``ca_file_of``),
        so ``lab status`` names a file curl and a browser can read (CONTRACT.md: ca_file)."""
        cfg.ca_file_of(self.name).parent.mkdir(parents=True, exist_ok=True)
        source = tls_files(COMPOSE_TLS_DIR)["ca.pem"]
        copied = self._compose(cfg, "cp", f"{NGINX}:{source}", str(cfg.ca_file_of(self.name)))
        if copied.returncode != 0:
            raise LabError(
                "could not copy the lab's CA certificate out of the nginx container:\n"
                f"{copied.stdout}{copied.stderr}"
            )

    def down(self, cfg: LabSettings) -> None:
        control_process.stop(cfg, self.name)
        # No --volumes: that would remove the CA too (TLS_VOLUME). The state goes by name.
        done = self._compose(cfg, "down", "--remove-orphans", "--timeout", "10", timeout=180)
        if done.returncode != 0:
            raise LabError(f"`docker compose down` failed:\n{done.stdout}{done.stderr}")
        removed = _run(["docker", "volume", "rm", "--force", STATE_VOLUME])
        if removed.returncode != 0:
            raise LabError(f"could not remove the volume {STATE_VOLUME}:\n{removed.stderr}")

    def is_running(self, cfg: LabSettings) -> bool:
        if not docker_answers():
            return False
        ps = self._compose(cfg, "ps", "--all", "--quiet")
        return ps.returncode == 0 and bool(ps.stdout.strip())

    def _active(self, cfg: LabSettings) -> str | dict[str, int] | None:
        """The mode or split of ``/``, as the running nginx container has it rendered."""
        got = self._nginx_ctl(cfg, "mode")
        if got.returncode != 0:
            return None
        try:
            return parse_active(got.stdout.strip())
        except RenderError:
            return None

    def active_mode(self, cfg: LabSettings) -> str | None:
        """The default mode of ``/``, or the label of the active split (wsgi=90,asgi=10)."""
        return active_label(self._active(cfg))

    def _nginx_procs(self, cfg: LabSettings) -> list[procfs.Proc]:
        """lab.system.procfs, its own source run inside the nginx container."""
        got = self._nginx_ctl(cfg, "python3", "-c", procfs.source(), "rows")
        if got.returncode != 0:
            raise LabError(f"cannot list the processes in the nginx container:\n{got.stderr}")
        return procfs.rows_from_json(got.stdout)

    def _apply(self, cfg: LabSettings, active: str) -> None:
        """``lab-nginx switch`` (render, nginx -t, reload); returns once the reload is done."""
        if not self.is_running(cfg):
            raise LabError("the docker lab is not running: `make up` first")
        self._reload(cfg, "switch", active, what=f"switching nginx to {active}")

    def _reload(self, cfg: LabSettings, *command: str, what: str) -> set[int]:
        """Run ``lab-nginx COMMAND`` (it tests the config and reloads nginx).

        Returns the workers that accepted connections before, once none does any
        more (``wait_for_reload``).
        """
        rows = self._nginx_procs(cfg)
        master = next((p.pid for p in rows if p.title.startswith(MASTER_TITLE)), None)
        if master is None:
            raise LabError("no nginx master process in the nginx container: see `lab logs`")
        before = accepting_workers(rows, master)
        done = self._nginx_ctl(cfg, *command)
        if done.returncode != 0:
            raise LabError(f"{what} failed:\n{done.stdout}{done.stderr}")
        wait_for_reload(lambda: self._nginx_procs(cfg), master, before)
        return before

    def status(self, cfg: LabSettings) -> StatusDict:
        exists = self.is_running(cfg)
        services = (
            self.service_health(cfg)
            if exists
            else {NGINX: False} | {s: False for s in SERVICES.values()}
        )
        running = all(services.values())
        servers = servers_in_container(self, cfg) if exists else {}
        servers = {m: servers.get(m) or default_server(m) for m in MODES}
        return {
            "target": self.name,
            "url": cfg.url,
            "tls_url": cfg.tls_url,
            "ca_file": str(cfg.ca_file_of(self.name)),
            "running": running,
            "active_mode": self.active_mode(cfg) if exists else None,
            # The gateways publish no port: only nginx reaches them.
            "gateways": {},
            "servers": servers,
            "limits": limits_dict(cfg),
            "services": services,
            "workers": self.workers(cfg, servers) if exists else {m: 0 for m in MODES},
            "replicas": self._replica_counts(cfg) if running else {m: 1 for m in MODES},
        }

    def server(self, cfg: LabSettings, mode: str, server: str) -> None:
        """Put ``server`` behind ``mode``, blue-green by container (lab.targets.docker.server)."""
        DockerServerSwap(self, _run, _say).swap(cfg, mode, server)

    def workers(self, cfg: LabSettings, servers: Mapping[str, str]) -> dict[str, int]:
        """Worker processes per mode, from ``docker compose top`` (every replica).

        fcgiwrap's and uvicorn's process trees are not gunicorn's: for those two, the
        number each is configured to run (uvicorn's default follows its container's
        CPUs, LAB_GATEWAY_CPUS), times the service's replicas."""
        counts = {}
        configured: dict[str, int] = {}
        if any(servers.get(m) in ("fcgiwrap", "uvicorn") for m in SERVICES):
            replicas = self._replica_counts(cfg)
            services, workers = self.services(cfg), cfg.gateway_workers  # workers: CPUs moot
            asked = [m for m in SERVICES if servers.get(m) == "uvicorn" and not workers]
            known = {m: n for m in asked if (n := cpus_known(services, SERVICES[m])) is not None}
            configured = worker_counts(servers, cfg.limits, workers, replicas, known)
        for mode, service in SERVICES.items():
            if servers.get(mode) in ("fcgiwrap", "uvicorn"):
                counts[mode] = configured[mode]
                continue
            counts[mode] = workers_from_top(self._top(cfg, service))
        return counts

    def _top(self, cfg: LabSettings, service: str) -> str:
        """``docker compose top`` of every replica of ``service`` ("" when it fails)."""
        top = self._compose(cfg, "top", service)
        return top.stdout if top.returncode == 0 else ""

    def services(self, cfg: LabSettings) -> Services:
        return DockerServices(cfg, self)

    def _replica_counts(self, cfg: LabSettings) -> dict[str, int]:
        ps = self._compose(cfg, "ps", "--format", "{{.Service}}")
        return replica_counts(ps.stdout) if ps.returncode == 0 else {}

    def switch(self, cfg: LabSettings, mode: str) -> None:
        check_mode(mode)
        self._apply(cfg, mode)
        wait_for_mode(cfg, mode)

    def split(self, cfg: LabSettings, weights: Mapping[str, int] | None) -> None:
        if not self.is_running(cfg):
            raise LabError("the docker lab is not running: `make up` first")
        apply_split(
            cfg,
            weights,
            self._active(cfg),
            apply=lambda checked: self._apply(cfg, format_split(checked)),
            switch=lambda mode: self.switch(cfg, mode),
            say=_say,
        )

    def logs(self, cfg: LabSettings, follow: bool) -> None:
        args = ["logs", "--no-color", *(["--follow"] if follow else [])]
        self._compose(cfg, *args, timeout=10**9 if follow else COMMAND_TIMEOUT_S, output="pass")

    def scale(self, cfg: LabSettings, mode: str, replicas: int) -> None:
        """Run ``replicas`` containers of one gateway and spread nginx's traffic over them.

        nginx resolves an upstream's host name when it loads its config; the
        service name resolves to every replica's address, so a reload after
        scaling up makes nginx balance over all of them (round robin).

        Scaling down must not hand nginx a replica that is going away, so the
        upstream is first pinned to the addresses of the replicas that stay
        (upstreams.conf, reload), the surplus containers are stopped once
        nginx's old workers are done with them, and then the upstream goes
        back to the service name (which now resolves to the survivors only).
        Either way ``scale`` ends with upstreams.conf as ``lab up`` renders it.
        """
        args = scale_args(mode, replicas, cfg.wait_timeout_s)
        if not self.is_running(cfg):
            raise LabError("the docker lab is not running: `make up` first")
        current = self._replicas(cfg, mode)
        if replicas < len(current):
            self._scale_down(cfg, mode, current[:replicas], current[replicas:])
        done = self._compose(cfg, *args, timeout=cfg.wait_timeout_s + 60)
        if done.returncode != 0:
            raise LabError(
                f"scaling {SERVICES[mode]} to {replicas} failed:\n{done.stdout}{done.stderr}"
            )
        # Back to (or still) the service names, which resolve to every replica now.
        self._reload(cfg, "sh", "-c", UPSTREAMS_RELOAD_SCRIPT, what="reloading nginx")
        _say(f"{SERVICES[mode]}: {replicas} replica(s) behind nginx")

    def _replicas(self, cfg: LabSettings, mode: str) -> list[tuple[int, str, str]]:
        """(container number, id, address on the lab network) of each replica of ``mode``."""
        ids = self._compose(cfg, "ps", "--quiet", SERVICES[mode]).stdout.split()
        if not ids:
            return []
        fmt = (
            f'{{{{index .Config.Labels "{NUMBER_LABEL}"}}}} {{{{.Id}}}} '
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        )
        got = _run(["docker", "inspect", "--format", fmt, *ids], timeout=30)
        if got.returncode != 0:
            raise LabError(f"cannot inspect the {SERVICES[mode]} containers:\n{got.stderr}")
        return parse_replicas_listing(got.stdout)

    def _scale_down(
        self,
        cfg: LabSettings,
        mode: str,
        keep: Sequence[tuple[int, str, str]],
        surplus: Sequence[tuple[int, str, str]],
    ) -> None:
        servers = " ".join(f"{ip}:{COMPOSE_GATEWAY_PORT}" for _, _, ip in keep)
        pin = ("sh", "-c", UPSTREAMS_RELOAD_SCRIPT, "sh", "--set", f"{mode}_server={servers}")
        try:
            before = self._reload(cfg, *pin, what="pinning nginx to the remaining replicas")
        except LabError:
            self._nginx_ctl(cfg, "sh", "-c", UPSTREAMS_SCRIPT)  # back to the service names
            raise
        # nginx's old workers finish the requests they hold, some of them on the
        # surplus replicas: let them, then stop and remove the surplus.
        drain_old_workers(before, lambda: self._nginx_procs(cfg), _say)
        ids = [cid for _, cid, _ in surplus]
        _run(["docker", "stop", "--time", "10", *ids], timeout=60)
        removed = _run(["docker", "rm", "--force", "--volumes", *ids], timeout=60)
        if removed.returncode != 0:
            raise LabError(f"cannot remove the surplus replicas:\n{removed.stderr}")
