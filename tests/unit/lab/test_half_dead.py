"""Half-dead labs, natively, without starting nginx: status per
service, a dead nginx master noticed before any reload, the old config file put back
when a reload fails, and the lock that keeps two `lab up` apart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab import cli
from lab.errors import LabError
from lab.nginx import render
from lab.settings import LabSettings
from lab.targets import native, native_nginx, state
from lab.targets.native import NativeTarget
from lab.targets.state import RunState, save_state

runner = CliRunner()


def dead_pid() -> int:
    """A pid that no process has any more (a child that exited and was reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)


@pytest.fixture
def cfg(tmp_path: Path) -> LabSettings:
    return LabSettings(port=18599, state_dir=tmp_path)


def test_status_lists_every_service_and_is_not_running_when_one_is_down(
    cfg: LabSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Everything recorded; every gateway answers, nginx's master is gone.
    save_state(cfg, RunState(groups={"nginx": os.getpgrp()}, port=cfg.port, nginx="nginx"))
    monkeypatch.setattr(native, "is_healthy", lambda url, timeout=1.0: True)
    monkeypatch.setattr(native, "master_alive", lambda pid: False)
    info = NativeTarget().status(cfg)
    assert info["services"] == {
        "gateway-cgi": True, "gateway-wsgi": True, "gateway-asgi": True, "nginx": False,
    }  # fmt: skip
    assert info["running"] is False


def test_status_is_running_only_when_every_service_answers(
    cfg: LabSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_state(cfg, RunState(groups={"nginx": os.getpgrp()}, port=cfg.port, nginx="nginx"))
    monkeypatch.setattr(native, "is_healthy", lambda url, timeout=1.0: True)
    monkeypatch.setattr(native, "master_alive", lambda pid: True)
    info = NativeTarget().status(cfg)
    assert info["running"] is True and all(info["services"].values())
    assert set(info["workers"]) == {"cgi", "wsgi", "asgi"}


def test_up_with_a_dead_nginx_master_restarts_instead_of_saying_running(
    cfg: LabSettings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    save_state(cfg, RunState(groups={"nginx": os.getpgrp()}, port=cfg.port, nginx="nginx"))
    monkeypatch.setattr(native, "is_healthy", lambda url, timeout=1.0: True)  # workers answer
    monkeypatch.setattr(native, "master_alive", lambda pid: False)
    downs: list[bool] = []
    monkeypatch.setattr(NativeTarget, "down", lambda self, cfg, quiet=False: downs.append(quiet))

    def stop_here(self: NativeTarget, cfg: LabSettings) -> None:
        raise LabError("stopped before starting anything")

    monkeypatch.setattr(NativeTarget, "_check_ports", stop_here)
    with pytest.raises(LabError, match="stopped before"):
        NativeTarget().up(cfg)
    out = capsys.readouterr().out
    assert "already running" not in out and "not healthy (nginx)" in out
    assert downs == [False]


def test_switch_with_a_dead_master_changes_nothing_and_says_so(cfg: LabSettings) -> None:
    native_nginx.render_config(cfg, "wsgi")
    active = native_nginx.Paths(cfg.state_dir).active
    before = active.read_text()
    save_state(cfg, RunState(groups={"nginx": dead_pid()}, port=cfg.port, nginx="nginx"))
    with pytest.raises(LabError, match="master process is not running"):
        NativeTarget().switch(cfg, "asgi")
    assert active.read_text() == before


def test_lab_switch_never_tracebacks_on_a_half_dead_lab(
    cfg: LabSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    native_nginx.render_config(cfg, "wsgi")
    save_state(cfg, RunState(groups={"nginx": dead_pid()}, port=cfg.port, nginx="nginx"))
    monkeypatch.setenv("LAB_STATE_DIR", str(cfg.state_dir))
    monkeypatch.setenv("LAB_PORT", str(cfg.port))
    monkeypatch.setenv("LAB_TARGET", "native")
    result = runner.invoke(cli.app, ["switch", "asgi"])
    assert result.exit_code == 1
    assert result.output.startswith("lab: ") and "Traceback" not in result.output
    assert native_nginx.active_mode(cfg) == "wsgi"


def fake_nginx(tmp_path: Path, test_exit: int) -> str:
    """An "nginx" whose `-t` exits ``test_exit``."""
    path = tmp_path / "fake-nginx"
    path.write_text(f"#!/bin/sh\necho 'nginx: [emerg] fake' >&2\nexit {test_exit}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("why", ["nginx -t fails", "the reload is not taken"])
def test_a_failed_reload_puts_the_previous_file_back(
    cfg: LabSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    native_nginx.render_config(cfg, "wsgi")
    active = native_nginx.Paths(cfg.state_dir).active
    before = active.read_text()
    monkeypatch.setattr(native_nginx, "master_alive", lambda pid: True)
    if why == "nginx -t fails":
        nginx = fake_nginx(tmp_path, 1)
        master = os.getpid()
    else:
        # The test passes, but the "master" is gone by the time of the SIGHUP.
        nginx = fake_nginx(tmp_path, 0)
        master = dead_pid()
    text = render.render_active_mode("asgi", None, cfg.templates)
    with pytest.raises(LabError):
        native_nginx.reload_with(cfg, nginx, master, render.ACTIVE_FILE, text)
    assert active.read_text() == before


def test_two_commands_that_change_the_lab_do_not_overlap(cfg: LabSettings) -> None:
    with state.exclusive(cfg, "up"):
        with pytest.raises(LabError, match=r"cannot up now: `lab up` \(pid \d+\) is changing"):
            with state.exclusive(cfg, "up"):
                pass  # pragma: no cover
        # Another process is kept out too.
        other = subprocess.run(
            [sys.executable, "-c",
             "from lab.settings import LabSettings; from lab.targets import state\n"
             f"cfg = LabSettings.from_env({{'LAB_STATE_DIR': {str(cfg.state_dir)!r}}})\n"
             "with state.exclusive(cfg, 'up'): pass"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert other.returncode != 0 and "cannot up now" in other.stderr
    with state.exclusive(cfg, "up"):  # released
        pass


def test_lab_up_while_another_runs_is_a_clean_error(
    cfg: LabSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_STATE_DIR", str(cfg.state_dir))
    monkeypatch.setenv("LAB_TARGET", "native")
    with state.exclusive(cfg, "up"):
        result = runner.invoke(cli.app, ["up"])
    assert result.exit_code == 1 and "cannot up now" in result.output
    assert "Traceback" not in result.output
