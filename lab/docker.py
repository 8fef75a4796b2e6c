"""The docker target: the lab as the Compose project in compose.yaml.

``up`` checks that an engine answers, picks the base image (debian:bookworm-slim,
or lab-base:bookworm built from Debian's packages where no registry is
reachable), builds both images and starts the project with ``--wait``, so it
returns once every healthcheck passes. A failed start is reported with
``docker compose ps`` and the last log lines, then taken down: nothing is left
half-started.

``switch``, ``split`` and ``scale`` act on the running nginx container through
the ``lab-nginx`` helper baked into its image (nginx/entrypoint.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from gateway.servers.registry import default_server
from lab import nginx_conf
from lab.config import MODES, ROOT, LabConfig
from lab.nginx_conf import COMPOSE_GATEWAY_PORT
from lab.servers import (
    check_choice,
    compose_server_env,
    record_servers,
    recorded_servers,
    wait_for_server,
    worker_counts,
)
from lab.target import (
    LabError,
    ProcRow,
    StatusDict,
    accepting_workers,
    active_label,
    apply_split,
    check_mode,
    check_replicas,
    docker_answers,
    format_weights,
    is_healthy,
    limits_dict,
    parse_weights,
    wait_for_mode,
    wait_for_reload,
    wait_until,
)

PROJECT: Final = "gateway-lab"
PROJECT_LABEL: Final = f"com.docker.compose.project={PROJECT}"
COMPOSE_FILE: Final = ROOT / "compose.yaml"
SLIM_IMAGE: Final = "debian:bookworm-slim"
LOCAL_BASE_IMAGE: Final = "lab-base:bookworm"
BASE_IMAGE_SCRIPT: Final = ROOT / "scripts" / "base-image.sh"
ENGINE_SCRIPT: Final = ROOT / "scripts" / "docker-engine.sh"
# The host's system CA bundle: passed to the gateway build as pip's CA (compose
# secret "ca"), which a TLS-inspecting proxy needs and is harmless elsewhere.
SYSTEM_CA_BUNDLE: Final = Path("/etc/ssl/certs/ca-certificates.crt")
SERVICES: Final = {mode: f"gateway-{mode}" for mode in MODES}
NGINX: Final = "nginx"
# The three gateway services share one image (gateway-lab/gateway); compose
# without buildx builds it once per service, so build it through one of them.
BUILD_SERVICES: Final = (SERVICES["wsgi"], NGINX)

BUILD_TIMEOUT_S: Final = float(os.environ.get("LAB_BUILD_TIMEOUT_S", "1200"))
WAIT_TIMEOUT_S: Final = int(os.environ.get("LAB_WAIT_TIMEOUT_S", "120"))
PULL_TIMEOUT_S: Final = 60.0
Output = Literal["capture", "stderr", "pass"]
COMMAND_TIMEOUT_S: Final = 120.0
# lab.target.read_proc, run inside the nginx container (python3 is there for the
# renderer): every process's [pid, ppid, title] as JSON, to see a reload finish.
PROC_SCRIPT: Final = """
import json, pathlib
rows = []
for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        title = (stat.parent / "cmdline").read_bytes().replace(b"\\0", b" ").decode().strip()
    except (OSError, IndexError, UnicodeDecodeError):
        continue
    rows.append([int(stat.parent.name), int(fields[1]), title])
print(json.dumps(rows))
"""
MASTER_TITLE: Final = "nginx: master process"
NUMBER_LABEL: Final = "com.docker.compose.container-number"
# How long a scale-down waits for nginx's old workers to finish their requests.
DRAIN_DEADLINE_S: Final = 15.0
# Rewrites only upstreams.conf in the nginx container (lab.nginx_conf upstreams);
# extra arguments (--set wsgi_server="IP:8000 ...") pin an upstream to addresses.
UPSTREAMS_SCRIPT: Final = (
    "python3 -m lab.nginx_conf upstreams --target compose "
    '--out "${LAB_NGINX_CONF_DIR:-/tmp/nginx-conf}" "$@"'
)
# The same, then `lab-nginx reload` (nginx -t, graceful reload).
UPSTREAMS_RELOAD_SCRIPT: Final = UPSTREAMS_SCRIPT + " && exec lab-nginx reload"
# The first line of each pass_<mode>.conf in the nginx container: the server behind each mode.
SERVERS_SCRIPT: Final = 'head -qn1 "${LAB_NGINX_CONF_DIR:-/tmp/nginx-conf}"/pass_*.conf'
# How long a new server's container may take to answer /healthz.
SERVER_START_S: Final = 60.0


# -- pure parts -------------------------------------------------------------------


def ca_bundle(
    environ: Mapping[str, str], is_file: Callable[[Path], bool] = Path.is_file
) -> str | None:
    """The CA file for pip inside the build: LAB_CA_BUNDLE, else PIP_CERT, else the system bundle.

    None when there is none, and compose's default (/dev/null: pip's own CAs) applies.
    """
    for candidate in (environ.get("LAB_CA_BUNDLE"), environ.get("PIP_CERT")):
        if candidate and is_file(Path(candidate)):
            return candidate
    return str(SYSTEM_CA_BUNDLE) if is_file(SYSTEM_CA_BUNDLE) else None


def compose_env(
    cfg: LabConfig, environ: Mapping[str, str], base_image: str | None = None
) -> dict[str, str]:
    """The environment for ``docker compose``: the caller's, plus the lab's settings.

    compose.yaml reads these (each has a default there); values given here win
    over a .env file, so the CLI's LabConfig is what runs.
    """
    env = dict(environ)
    env["LAB_PORT"] = str(cfg.port)
    env["LAB_PROXY_READ_TIMEOUT_S"] = str(cfg.limits.proxy_read_timeout_s)
    env["LAB_CLIENT_MAX_BODY_BYTES"] = str(cfg.limits.client_max_body_bytes)
    env["LAB_CGI_MAX_SCRIPTS"] = str(cfg.limits.cgi_max_scripts)
    # The server behind each mode: LAB_SERVER_<MODE> if given, else the last `lab server`.
    env |= compose_server_env(environ, recorded_servers(cfg))
    if base_image:
        env["LAB_BASE_IMAGE"] = base_image
    if bundle := ca_bundle(environ):
        env["LAB_CA_BUNDLE"] = bundle
    return env


def compose_args(*args: str) -> list[str]:
    return [
        "docker",
        "compose",
        "--project-name",
        PROJECT,
        "--project-directory",
        str(ROOT),
        "--file",
        str(COMPOSE_FILE),
        *args,
    ]


def up_args(*extra: str) -> list[str]:
    """``up`` with the images already built: no build, no pull, return once healthy."""
    return [
        "up", "--detach", "--wait", "--wait-timeout", str(WAIT_TIMEOUT_S),
        "--no-build", "--pull", "never", *extra,
    ]  # fmt: skip


def scale_args(mode: str, replicas: int) -> list[str]:
    """``up`` arguments that set one gateway's replica count and touch nothing else."""
    check_mode(mode)
    check_replicas(replicas)
    return up_args("--no-recreate", "--scale", f"{SERVICES[mode]}={replicas}")


def parse_replicas_listing(text: str) -> list[tuple[int, str, str]]:
    """``docker inspect`` lines "NUMBER ID IP" -> (number, id, ip), lowest number first."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit():
            rows.append((int(parts[0]), parts[1], parts[2]))
    return sorted(rows)


def replica_counts(ps_services: str) -> dict[str, int]:
    """``docker compose ps --format {{.Service}}`` output -> running containers per mode."""
    names = ps_services.split()
    return {mode: names.count(service) for mode, service in SERVICES.items()}


def port_in_use_message(port: int) -> str:
    return (
        f"127.0.0.1:{port} is already in use by another program, so nginx cannot publish it: "
        f"stop that program, or choose another port (LAB_PORT={port + 100} make up)"
    )


# -- I/O at the edges -------------------------------------------------------------


def _say(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: connections of a lab just stopped, still in TIME_WAIT,
        # do not make the port look taken; a listening program still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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

    # -- helpers ---------------------------------------------------------------

    def _compose(
        self,
        cfg: LabConfig,
        *args: str,
        base_image: str | None = None,
        timeout: float = COMMAND_TIMEOUT_S,
        output: Output = "capture",
    ) -> subprocess.CompletedProcess[str]:
        env = compose_env(cfg, self._environ, base_image)
        return _run(compose_args(*args), env=env, timeout=timeout, output=output)

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

    def _nginx_ctl(self, cfg: LabConfig, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``lab-nginx ARGS`` (nginx/entrypoint.sh) in the running nginx container."""
        return self._compose(cfg, "exec", "-T", NGINX, "lab-nginx", *args)

    def base_image(self) -> str:
        """The image both Dockerfiles build FROM, built locally when no registry has it."""
        if chosen := self._environ.get("LAB_BASE_IMAGE"):
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

    def _healthy(self, cfg: LabConfig) -> bool:
        """Every service of the project runs and reports healthy, and nginx answers."""
        ps = self._compose(cfg, "ps", "--format", "{{.Service}} {{.State}} {{.Health}}")
        rows = [line.split() for line in ps.stdout.splitlines() if line.strip()]
        services = {row[0] for row in rows}
        all_healthy = all(row[1:] == ["running", "healthy"] for row in rows)
        wanted = {NGINX, *SERVICES.values()}
        return wanted <= services and all_healthy and is_healthy(cfg.url + "/nginx-health")

    def _report_failure(self, cfg: LabConfig) -> str:
        ps = self._compose(cfg, "ps", "--all")
        logs = self._compose(cfg, "logs", "--no-color", "--tail", "30")
        return f"{ps.stdout}{ps.stderr}\n--- last log lines ---\n{logs.stdout}{logs.stderr}"

    # -- the Target interface -----------------------------------------------------

    def up(self, cfg: LabConfig) -> None:
        self._require_engine()
        if self.is_running(cfg) and self._healthy(cfg):
            _say(f"already up at {cfg.url}")
            return
        if not self.is_running(cfg) and not _port_free(cfg.port):
            raise LabError(port_in_use_message(cfg.port))
        base = self.base_image()
        _say(f"building gateway-lab/gateway and gateway-lab/nginx on {base}")
        build = self._compose(
            cfg, "build", *BUILD_SERVICES, base_image=base, timeout=BUILD_TIMEOUT_S, output="stderr"
        )
        if build.returncode != 0:
            raise LabError(f"`docker compose build` failed (exit {build.returncode}); see above")
        # Images a rebuild replaced (untagged now): this project's only.
        _run(["docker", "image", "prune", "--force", "--filter", f"label={PROJECT_LABEL}"])
        _say("starting the services and waiting for their healthchecks")
        started = self._compose(
            cfg, *up_args("--remove-orphans"), base_image=base, timeout=WAIT_TIMEOUT_S + 60
        )
        if started.returncode != 0:
            report = self._report_failure(cfg)
            self.down(cfg)
            output = started.stdout + started.stderr
            if "address already in use" in output or "port is already allocated" in output:
                raise LabError(port_in_use_message(cfg.port))
            raise LabError(
                f"the compose project did not become healthy within {WAIT_TIMEOUT_S}s "
                f"and was taken down again.\n{output}\n{report}"
            )
        if not wait_until(lambda: is_healthy(cfg.url + "/nginx-health"), 15):
            report = self._report_failure(cfg)
            self.down(cfg)
            raise LabError(f"nginx is healthy inside but {cfg.url} does not answer.\n{report}")
        _say(f"up at {cfg.url}")

    def down(self, cfg: LabConfig) -> None:
        done = self._compose(
            cfg, "down", "--remove-orphans", "--volumes", "--timeout", "10", timeout=180
        )
        if done.returncode != 0:
            raise LabError(f"`docker compose down` failed:\n{done.stdout}{done.stderr}")

    def is_running(self, cfg: LabConfig) -> bool:
        if not docker_answers():
            return False
        ps = self._compose(cfg, "ps", "--all", "--quiet")
        return ps.returncode == 0 and bool(ps.stdout.strip())

    def _active(self, cfg: LabConfig) -> str | dict[str, int] | None:
        """The mode or split of ``/``, as the running nginx container has it rendered."""
        got = self._nginx_ctl(cfg, "mode")
        label = got.stdout.strip()
        if got.returncode != 0:
            return None
        if label in MODES:
            return label
        try:
            return parse_weights(label) if "=" in label else None
        except LabError:
            return None

    def active_mode(self, cfg: LabConfig) -> str | None:
        """The default mode of ``/``, or the label of the active split (wsgi=90,asgi=10)."""
        return active_label(self._active(cfg))

    def _nginx_procs(self, cfg: LabConfig) -> list[ProcRow]:
        got = self._nginx_ctl(cfg, "python3", "-c", PROC_SCRIPT)
        if got.returncode != 0:
            raise LabError(f"cannot list the processes in the nginx container:\n{got.stderr}")
        return [(int(pid), int(ppid), str(title)) for pid, ppid, title in json.loads(got.stdout)]

    def _apply(self, cfg: LabConfig, active: str) -> None:
        """``lab-nginx switch`` (render, nginx -t, reload); returns once the reload is done."""
        if not self.is_running(cfg):
            raise LabError("the docker lab is not running: `make up` first")
        self._reload(cfg, "switch", active, what=f"switching nginx to {active}")

    def _reload(self, cfg: LabConfig, *command: str, what: str) -> set[int]:
        """Run ``lab-nginx COMMAND`` (it tests the config and reloads nginx).

        Returns the workers that accepted connections before, once none does any
        more (``wait_for_reload``).
        """
        rows = self._nginx_procs(cfg)
        master = next((pid for pid, _, title in rows if title.startswith(MASTER_TITLE)), None)
        if master is None:
            raise LabError("no nginx master process in the nginx container: see `lab logs`")
        before = accepting_workers(rows, master)
        done = self._nginx_ctl(cfg, *command)
        if done.returncode != 0:
            raise LabError(f"{what} failed:\n{done.stdout}{done.stderr}")
        wait_for_reload(lambda: self._nginx_procs(cfg), master, before)
        return before

    def status(self, cfg: LabConfig) -> StatusDict:
        running = self.is_running(cfg)
        servers = self._servers(cfg) if running else {}
        servers = {m: servers.get(m) or default_server(m) for m in MODES}
        return {
            "target": self.name,
            "url": cfg.url,
            "running": running,
            "active_mode": self.active_mode(cfg) if running else None,
            # The gateways publish no port: only nginx reaches them.
            "gateways": {},
            "servers": servers,
            # Counted as on this host: inside a container limited to fewer CPUs
            # (LAB_GATEWAY_CPUS) gunicorn and uvicorn run fewer.
            "workers": worker_counts(servers, cfg.limits),
            "limits": limits_dict(cfg),
            "replicas": self._replica_counts(cfg) if running else {m: 1 for m in MODES},
        }

    def _servers(self, cfg: LabConfig) -> dict[str, str]:
        """mode -> server, as the running nginx container's pass_<mode>.conf files say."""
        got = self._nginx_ctl(cfg, "sh", "-c", SERVERS_SCRIPT)
        found = {}
        for line in got.stdout.splitlines():
            if (record := nginx_conf.read_server(line)) is not None:
                found[record[0]] = record[1]
        return found

    def server(self, cfg: LabConfig, mode: str, server: str) -> None:
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
        check_mode(mode)
        check_choice(mode, server)
        if not self.is_running(cfg):
            raise LabError("the docker lab is not running: `make up` first")
        current = self._servers(cfg).get(mode) or default_server(mode)
        if current == server:
            _say(f"{mode} is already served by {server}")
            return
        if len(self._replicas(cfg, mode)) > 1:
            raise LabError(f"{mode} runs several replicas: `lab scale {mode} 1` first")
        service = SERVICES[mode]
        temp = f"{PROJECT}-{mode}-{server}"
        _run(["docker", "rm", "--force", temp], timeout=60)  # a leftover of an interrupted swap
        started = self._compose(
            cfg, "run", "--detach", "--no-deps", "--name", temp,
            "--env", f"GATEWAY_SERVER={server}", service,
            timeout=WAIT_TIMEOUT_S,
        )  # fmt: skip
        if started.returncode != 0:
            raise LabError(
                f"{mode} stays on {current}: {server} did not start "
                f"({(started.stderr or started.stdout).strip().splitlines()[-1:]})"
            )
        try:
            health = ["docker", "exec", temp, "python", "-m", "gateway", "health"]
            if not wait_until(lambda: _run(health, timeout=30).returncode == 0, SERVER_START_S):
                logs = _run(["docker", "logs", "--tail", "5", temp], timeout=30)
                last = (logs.stdout + logs.stderr).strip().splitlines()[-1:]
                raise LabError(
                    f"{mode} stays on {current}: {server} did not answer /healthz within "
                    f"{SERVER_START_S:.0f}s (its log ends: {last})"
                )
            address = self._container_address(temp)
            pin = f"{mode}_server={address}:{COMPOSE_GATEWAY_PORT}"
            before = self._reload(
                cfg, "server", f"{mode}={server}", "--set", pin, what=f"pointing nginx at {temp}"
            )
        except BaseException:
            _run(["docker", "rm", "--force", temp], timeout=60)
            raise
        self._drain(cfg, before)
        chosen = recorded_servers(cfg) | {mode: server}
        record_servers(cfg, chosen)
        recreated = self._compose(
            cfg, "up", "--detach", "--no-deps", "--wait", service, timeout=WAIT_TIMEOUT_S + 60
        )
        if recreated.returncode != 0:
            raise LabError(
                f"nginx uses {server} in {temp}, but recreating {service} with it failed "
                f"(the temporary container keeps serving):\n{recreated.stdout}{recreated.stderr}"
            )
        before = self._reload(
            cfg, "server", f"{mode}={server}", what=f"pointing nginx back at {service}"
        )
        self._drain(cfg, before)
        _run(["docker", "stop", "--time", "10", temp], timeout=60)
        _run(["docker", "rm", "--force", temp], timeout=60)
        wait_for_server(cfg, mode, server)
        _say(f"{mode}: {cfg.url}/{mode}/ is now served by {server} (was {current})")

    def _container_address(self, container: str) -> str:
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        got = _run(["docker", "inspect", "--format", fmt, container], timeout=30)
        addresses = got.stdout.split()
        if got.returncode != 0 or not addresses:
            raise LabError(f"cannot find the address of {container}:\n{got.stderr}")
        return addresses[0]

    def _drain(self, cfg: LabConfig, before: set[int]) -> None:
        """Wait until nginx's workers from before a reload have finished their requests."""
        if not wait_until(
            lambda: not before & {pid for pid, _, _ in self._nginx_procs(cfg)},
            DRAIN_DEADLINE_S,
            interval_s=0.2,
        ):
            _say(f"nginx's old workers still hold connections after {DRAIN_DEADLINE_S:.0f}s")

    def _replica_counts(self, cfg: LabConfig) -> dict[str, int]:
        ps = self._compose(cfg, "ps", "--format", "{{.Service}}")
        return replica_counts(ps.stdout) if ps.returncode == 0 else {}

    def switch(self, cfg: LabConfig, mode: str) -> None:
        check_mode(mode)
        self._apply(cfg, mode)
        wait_for_mode(cfg, mode)

    def split(self, cfg: LabConfig, weights: Mapping[str, int] | None) -> None:
        if not self.is_running(cfg):
            raise LabError("the docker lab is not running: `make up` first")
        apply_split(
            cfg,
            weights,
            self._active(cfg),
            apply=lambda checked: self._apply(cfg, format_weights(checked)),
            switch=lambda mode: self.switch(cfg, mode),
            say=_say,
        )

    def logs(self, cfg: LabConfig, follow: bool) -> None:
        args = ["logs", "--no-color", *(["--follow"] if follow else [])]
        self._compose(cfg, *args, timeout=10**9 if follow else COMMAND_TIMEOUT_S, output="pass")

    def scale(self, cfg: LabConfig, mode: str, replicas: int) -> None:
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
        args = scale_args(mode, replicas)
        if not self.is_running(cfg):
            raise LabError("the docker lab is not running: `make up` first")
        current = self._replicas(cfg, mode)
        if replicas < len(current):
            self._scale_down(cfg, mode, current[:replicas], current[replicas:])
        done = self._compose(cfg, *args, timeout=WAIT_TIMEOUT_S + 60)
        if done.returncode != 0:
            raise LabError(
                f"scaling {SERVICES[mode]} to {replicas} failed:\n{done.stdout}{done.stderr}"
            )
        # Back to (or still) the service names, which resolve to every replica now.
        self._reload(cfg, "sh", "-c", UPSTREAMS_RELOAD_SCRIPT, what="reloading nginx")
        _say(f"{SERVICES[mode]}: {replicas} replica(s) behind nginx")

    def _replicas(self, cfg: LabConfig, mode: str) -> list[tuple[int, str, str]]:
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
        cfg: LabConfig,
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
        # surplus replicas: let them (a stop is graceful too: SIGTERM, then gunicorn
        # lets its workers finish), then stop and remove the surplus.
        if not wait_until(
            lambda: not before & {pid for pid, _, _ in self._nginx_procs(cfg)},
            DRAIN_DEADLINE_S,
            interval_s=0.2,
        ):
            _say(f"nginx's old workers still hold connections after {DRAIN_DEADLINE_S:.0f}s")
        ids = [cid for _, cid, _ in surplus]
        _run(["docker", "stop", "--time", "10", *ids], timeout=60)
        removed = _run(["docker", "rm", "--force", "--volumes", *ids], timeout=60)
        if removed.returncode != 0:
            raise LabError(f"cannot remove the surplus replicas:\n{removed.stderr}")


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.docker scale MODE N``: the docker target's scale alone (`lab scale`
    does the same on whichever target runs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lab.docker", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    scale = sub.add_parser("scale", help="run N containers of one gateway behind nginx")
    scale.add_argument("mode", choices=MODES)
    scale.add_argument("replicas", type=int)
    args = parser.parse_args(argv)
    try:
        DockerTarget().scale(LabConfig.from_env(), args.mode, args.replicas)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
