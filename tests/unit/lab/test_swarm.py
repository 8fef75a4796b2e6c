"""The swarm target leaves the engine as it found it: ``up`` initialises a swarm only when
the engine is in none (and records that), ``down`` leaves only a swarm ``up`` made.

``docker`` is replaced by a fake that answers from a script and records each call.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from lab.errors import LabError
from lab.settings import LabSettings
from lab.targets.docker import swarm


class FakeDocker:
    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers  # the start of a command line -> its stdout
        self.calls: list[str] = []

    def __call__(self, args: Sequence[str], *_: Any, **__: Any) -> subprocess.CompletedProcess[str]:
        line = " ".join(args)
        self.calls.append(line)
        out = next((v for k, v in self.answers.items() if line.startswith(k)), "")
        return subprocess.CompletedProcess(list(args), 0, out, "")


@pytest.fixture
def cfg(tmp_path: Path) -> LabSettings:
    return LabSettings.from_env({"LAB_STATE_DIR": str(tmp_path), "LAB_STACK": "s"})


def use(monkeypatch: pytest.MonkeyPatch, answers: dict[str, str]) -> FakeDocker:
    fake = FakeDocker(answers)
    monkeypatch.setattr(swarm, "_run", fake)
    return fake


def test_up_initialises_a_swarm_only_when_the_engine_is_in_none(
    cfg: LabSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = use(monkeypatch, {"docker info": "inactive false\n"})
    swarm.SwarmTarget()._ensure_swarm(cfg)
    assert "docker swarm init" in fake.calls
    assert (cfg.state_dir / "swarm" / "record.json").is_file()


def test_an_existing_swarm_is_used_as_it_is(
    cfg: LabSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = use(monkeypatch, {"docker info": "active true\n"})
    swarm.SwarmTarget()._ensure_swarm(cfg)
    assert not [c for c in fake.calls if c.startswith("docker swarm")]
    assert not (cfg.state_dir / "swarm" / "record.json").exists()


def test_a_worker_node_is_refused(cfg: LabSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, {"docker info": "active false\n"})
    with pytest.raises(LabError, match="worker"):
        swarm.SwarmTarget()._ensure_swarm(cfg)


def test_down_leaves_the_swarm_up_made_and_only_that(
    cfg: LabSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = swarm.SwarmTarget()
    fake = use(monkeypatch, {})
    target._leave_swarm_if_ours(cfg)  # no record: a swarm someone else made
    assert "docker swarm leave --force" not in fake.calls

    use(monkeypatch, {"docker info": "inactive false\n"})
    target._ensure_swarm(cfg)
    fake = use(monkeypatch, {"docker stack ls": "someone-elses-stack\n"})
    target._leave_swarm_if_ours(cfg)  # ours, but another stack runs on it
    assert "docker swarm leave --force" not in fake.calls

    fake = use(monkeypatch, {})
    target._leave_swarm_if_ours(cfg)
    assert "docker swarm leave --force" in fake.calls
    # The bridge network `swarm init` made (none was there before) goes too.
    assert "docker network rm docker_gwbridge" in fake.calls
    assert not (cfg.state_dir / "swarm" / "record.json").exists()


def test_a_gwbridge_that_was_there_before_stays(
    cfg: LabSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = swarm.SwarmTarget()
    use(monkeypatch, {"docker info": "inactive false\n", "docker network ls": "b5066a9716eb\n"})
    target._ensure_swarm(cfg)
    fake = use(monkeypatch, {})
    target._leave_swarm_if_ours(cfg)
    assert "docker swarm leave --force" in fake.calls
    assert "docker network rm docker_gwbridge" not in fake.calls
