"""The docker target's `lab server`, step by step, against a recording stand-in for Docker.

No engine here: every docker and compose command the swap would run is
recorded, and answered the way a healthy (or a failing) engine would. The
order is the property: the new server is running and healthy before nginx
points at it, and the old one goes only after nginx has moved on.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.config import default_workers
from lab.errors import LabError
from lab.servers import recorded_servers
from lab.settings import LabSettings
from lab.targets import switching
from lab.targets.docker import server as docker_server
from lab.targets.docker import target as docker
from lab.targets.docker.compose import compose_env
from lab.targets.docker.services import DockerServices
from lab.targets.docker.swarm import SwarmTarget
from lab.targets.docker.target import DockerTarget


class Engine:
    def __init__(self, healthy: bool = True) -> None:
        self.healthy = healthy
        self.log: list[str] = []

    def run(self, cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        self.log.append(" ".join(cmd))
        ok = self.healthy or "health" not in cmd
        out = "172.28.0.9 " if cmd[:2] == ["docker", "inspect"] else ""
        return subprocess.CompletedProcess(cmd, 0 if ok else 1, out, "")


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Engine:
    fake = Engine()
    monkeypatch.setattr(docker, "_run", fake.run)
    monkeypatch.setattr(docker_server, "SERVER_START_S", 0.3)
    monkeypatch.setattr(switching, "DRAIN_DEADLINE_S", 0.3)
    monkeypatch.setattr(docker_server, "wait_for_server", lambda cfg, mode, server: None)
    return fake


@pytest.fixture
def target(monkeypatch: pytest.MonkeyPatch, engine: Engine) -> DockerTarget:
    t = DockerTarget({})
    monkeypatch.setattr(t, "is_running", lambda cfg: True)
    monkeypatch.setattr(docker_server, "servers_in_container", lambda target, cfg: {"wsgi": "sync"})
    monkeypatch.setattr(t, "_replicas", lambda cfg, mode: [(1, "id", "172.28.0.3")])
    monkeypatch.setattr(t, "_nginx_procs", lambda cfg: [])

    def compose(cfg: LabSettings, *args: str, **_: object) -> subprocess.CompletedProcess[str]:
        env = compose_env(cfg, {})
        engine.log.append(f"compose {' '.join(args)} [LAB_SERVER_WSGI={env['LAB_SERVER_WSGI']}]")
        return subprocess.CompletedProcess(list(args), 0, "", "")

    def reload(cfg: LabSettings, *command: str, what: str) -> set[int]:
        engine.log.append(f"lab-nginx {' '.join(command)}")
        return set()

    monkeypatch.setattr(t, "_compose", compose)
    monkeypatch.setattr(t, "_reload", reload)
    return t


def test_the_new_server_is_healthy_before_nginx_moves_and_the_old_goes_last(
    target: DockerTarget, engine: Engine, tmp_path: Path
) -> None:
    cfg = LabSettings(state_dir=tmp_path)
    target.server(cfg, "wsgi", "gthread")
    steps = engine.log
    run = next(i for i, s in enumerate(steps) if s.startswith("compose run"))
    assert "--env GATEWAY_SERVER=gthread gateway-wsgi" in steps[run]
    health = next(i for i, s in enumerate(steps) if s.endswith("python -m gateway health"))
    pin = steps.index("lab-nginx server wsgi=gthread --set wsgi_server=172.28.0.9:8000")
    recreate = next(i for i, s in enumerate(steps) if s.startswith("compose up"))
    back = steps.index("lab-nginx server wsgi=gthread")
    removed = max(i for i, s in enumerate(steps) if s.startswith("docker rm --force"))
    assert run < health < pin < recreate < back < removed
    # The service is recreated with the new server, which is recorded for later `up`s.
    assert steps[recreate].endswith("gateway-wsgi [LAB_SERVER_WSGI=gthread]")
    assert recorded_servers(cfg) == {"wsgi": "gthread"}


def test_a_server_that_never_answers_is_removed_and_nginx_never_moves(
    target: DockerTarget, engine: Engine, tmp_path: Path
) -> None:
    engine.healthy = False
    cfg = LabSettings(state_dir=tmp_path)
    with pytest.raises(LabError, match="wsgi stays on sync: uwsgi did not answer /healthz"):
        target.server(cfg, "wsgi", "uwsgi")
    assert not any(s.startswith("lab-nginx") for s in engine.log)
    assert engine.log[-1] == "docker rm --force gateway-lab-wsgi-uwsgi"
    assert recorded_servers(cfg) == {}


def test_bad_input_and_no_change_touch_nothing(
    target: DockerTarget, engine: Engine, tmp_path: Path
) -> None:
    cfg = LabSettings(state_dir=tmp_path)
    with pytest.raises(LabError, match="unknown server 'uvicorn' for wsgi"):
        target.server(cfg, "wsgi", "uvicorn")
    target.server(cfg, "wsgi", "sync")  # already there
    assert engine.log == []


def test_status_workers_count_every_replica_and_lab_gateway_workers(
    target: DockerTarget, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # uvicorn's and fcgiwrap's counts are configured ones: times the replicas running.
    monkeypatch.setattr(target, "_replica_counts", lambda cfg: {"cgi": 2, "wsgi": 1, "asgi": 3})
    monkeypatch.setattr(target, "_top", lambda cfg, service: "")
    monkeypatch.setattr(DockerServices, "cpus", lambda self, service: 1.0)
    cfg = LabSettings(state_dir=tmp_path, gateway_workers=4)
    counts = target.workers(cfg, {"cgi": "fcgiwrap", "wsgi": "sync", "asgi": "uvicorn"})
    assert counts == {"cgi": 2 * cfg.limits.cgi_max_scripts, "wsgi": 0, "asgi": 12}


@pytest.mark.parametrize("kind", [DockerTarget, SwarmTarget])
@pytest.mark.parametrize(("container_cpus", "per_replica"), [(1.0, 1), (1.5, 2), (None, None)])
def test_uvicorns_default_workers_follow_its_containers_cpus(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    kind: type[DockerTarget],
    container_cpus: float | None,
    per_replica: int | None,
) -> None:
    # LAB_GATEWAY_CPUS limits the container; uvicorn inside counts those CPUs, not
    # this host's (None: the container cannot be asked, the host's count stands).
    # The swarm target counts workers the same way, through its own services.
    target = kind({}) if kind is DockerTarget else kind()
    monkeypatch.setattr(target, "_replica_counts", lambda cfg: {"asgi": 3})
    monkeypatch.setattr(target, "_top", lambda cfg, service: "")
    asked: list[str] = []

    def cpus(self: object, service: str) -> float:
        asked.append(service)
        if container_cpus is None:
            raise LabError("`docker compose exec` failed")
        return container_cpus

    monkeypatch.setattr(type(target.services(LabSettings(state_dir=tmp_path))), "cpus", cpus)
    counts = target.workers(LabSettings(state_dir=tmp_path), {"cgi": "runner", "asgi": "uvicorn"})
    assert asked == ["gateway-asgi"]
    expected = per_replica if per_replica is not None else default_workers("asgi")
    assert counts["asgi"] == 3 * expected
    # LAB_GATEWAY_WORKERS decides alone: the container is not asked.
    asked.clear()
    fixed = target.workers(LabSettings(state_dir=tmp_path, gateway_workers=2), {"asgi": "uvicorn"})
    assert fixed["asgi"] == 6 and asked == []
