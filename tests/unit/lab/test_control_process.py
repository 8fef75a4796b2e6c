"""lab/targets/control_process.py: the picker's host process as a Docker lab starts and stops it.

A real ``python -m lab.control`` in a temporary state directory (no lab, no engine):
``start`` records its group and returns once it answers on its socket, a second
``start`` keeps it, ``stop`` ends it and leaves neither socket nor record.
"""

from __future__ import annotations

import os
from pathlib import Path

from lab.nginx.render import control_socket
from lab.settings import LabSettings
from lab.system import processes
from lab.targets import control_process
from lab.targets.control_process import answers


def test_start_records_a_process_that_answers_and_stop_ends_it(tmp_path: Path) -> None:
    cfg = LabSettings(state_dir=tmp_path)
    said: list[str] = []
    environ = dict(os.environ) | {"LAB_TARGET": "docker"}
    control_process.start(cfg, "docker", environ, said.append)
    try:
        pgid = control_process.recorded_group(cfg, "docker")
        assert pgid is not None and processes.group_alive(pgid)
        socket_path = control_socket(tmp_path, "docker")
        assert answers(socket_path) and control_process.is_running(cfg, "docker")
        assert said == [
            f"the dashboard's server picker listens on unix:{socket_path} (nginx: /lab/api/)"
        ]
        # A second start (lab up of a running lab) keeps the process that answers.
        control_process.start(cfg, "docker", environ, said.append)
        assert control_process.recorded_group(cfg, "docker") == pgid and len(said) == 1
    finally:
        control_process.stop(cfg, "docker")
    assert not processes.group_alive(pgid)
    assert not socket_path.exists() and not control_process.record_file(cfg, "docker").exists()
    assert not control_process.is_running(cfg, "docker")


def test_a_record_of_a_dead_process_is_replaced(tmp_path: Path) -> None:
    cfg = LabSettings(state_dir=tmp_path)
    control_process.record_file(cfg, "swarm").write_text('{"pgid": 999999999}\n')
    assert control_process.recorded_group(cfg, "swarm") is None
    control_process.start(cfg, "swarm", dict(os.environ), lambda _: None)
    try:
        assert control_process.is_running(cfg, "swarm")
    finally:
        control_process.stop(cfg, "swarm")


def test_the_environment_names_the_target_and_the_lab(tmp_path: Path) -> None:
    cfg = LabSettings(state_dir=tmp_path, port=8380, tls_port=8743, stack="s", image_tag="t")
    env = control_process.control_env(cfg, "swarm", {"LAB_TARGET": "native", "KEEP": "1"})
    assert env["LAB_TARGET"] == "swarm" and env["KEEP"] == "1"
    assert (env["LAB_PORT"], env["LAB_TLS_PORT"]) == ("8380", "8743")
    assert (env["LAB_STATE_DIR"], env["LAB_STACK"], env["LAB_IMAGE_TAG"]) == (
        str(tmp_path),
        "s",
        "t",
    )
