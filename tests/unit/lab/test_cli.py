"""The `lab` CLI against a fake target: arguments, exit codes, the status JSON shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lab import cli
from lab.errors import LabError
from lab.settings import LabSettings
from lab.system import processes
from lab.targets import ScalableTarget, Target, native, state, target_name
from lab.targets.docker.target import DockerTarget
from tests.support.fakes import FakeTarget, use_fake

runner = CliRunner()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeTarget:
    return use_fake(monkeypatch, str(tmp_path), FakeTarget())


def test_fake_target_implements_the_protocol() -> None:
    assert isinstance(FakeTarget(), Target)
    assert isinstance(native.NativeTarget(), Target)


@pytest.mark.parametrize("mode", ["fastcgi", "WSGI", "", "cgi,asgi"])
def test_switch_to_unknown_mode_fails_and_changes_nothing(fake: FakeTarget, mode: str) -> None:
    result = runner.invoke(cli.app, ["switch", mode])
    assert result.exit_code != 0
    assert fake.calls == []


@pytest.mark.parametrize("mode", ["cgi", "wsgi", "asgi"])
def test_switch_delegates_to_the_target(fake: FakeTarget, mode: str) -> None:
    result = runner.invoke(cli.app, ["switch", mode])
    assert result.exit_code == 0, result.output
    assert fake.calls == [("switch", mode)]


def test_status_json_has_the_contract_shape(
    fake: FakeTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_PORT", "18080")
    result = runner.invoke(cli.app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert {"target", "url", "running", "active_mode", "gateways", "limits"} <= set(info)
    assert set(info) - {"services", "workers", "replicas", "servers"} == {
        "target",
        "url",
        "tls_url",
        "ca_file",
        "running",
        "active_mode",
        "gateways",
        "limits",
    }
    assert info["url"] == "http://127.0.0.1:18080"
    assert set(info["limits"]) == {
        "proxy_read_timeout_s",
        "client_max_body_bytes",
        "cgi_max_scripts",
    }
    assert info["limits"]["client_max_body_bytes"] >= 16 * 1024 * 1024


def test_status_table_names_url_and_mode(fake: FakeTarget) -> None:
    result = runner.invoke(cli.app, ["status"])
    assert result.exit_code == 0
    assert "http://127.0.0.1:" in result.stdout and "wsgi" in result.stdout


def test_lab_error_is_a_message_and_exit_1(fake: FakeTarget) -> None:
    fake.fail_with = "port 8080 is already in use"
    result = runner.invoke(cli.app, ["up"])
    assert result.exit_code == 1
    assert "port 8080 is already in use" in result.output
    assert "Traceback" not in result.output


def test_up_records_the_target_and_down_clears_it(fake: FakeTarget, tmp_path: Path) -> None:
    assert runner.invoke(cli.app, ["up"]).exit_code == 0
    cfg = LabSettings.from_env()
    assert state.recorded_target(cfg) == "native"
    assert runner.invoke(cli.app, ["down"]).exit_code == 0
    assert state.recorded_target(cfg) is None
    assert fake.calls == [("up",), ("down",)]


def test_up_with_unknown_target_fails(fake: FakeTarget) -> None:
    result = runner.invoke(cli.app, ["up", "--target", "kubernetes"])
    assert result.exit_code == 1 and "not a target" in result.output


def test_logs_follow_flag(fake: FakeTarget) -> None:
    assert runner.invoke(cli.app, ["logs", "-f"]).exit_code == 0
    assert fake.calls == [("logs", "True")]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({"LAB_TARGET": "native"}, "native", id="native"),
        pytest.param({"LAB_TARGET": "Docker"}, "docker", id="docker-any-case"),
    ],
)
def test_lab_target_is_obeyed(env: dict[str, str], expected: str) -> None:
    assert target_name(LabSettings.from_env(env).target) == expected


def test_unknown_lab_target_is_an_error() -> None:
    with pytest.raises(LabError, match="LAB_TARGET"):
        LabSettings.from_env({"LAB_TARGET": "podman"})
    with pytest.raises(LabError, match="LAB_TARGET"):
        target_name("podman")


def test_recorded_target_wins_over_auto_choice(tmp_path: Path) -> None:
    cfg = LabSettings(state_dir=tmp_path)
    state.record_target(cfg, "native")
    assert state.current_target_name(cfg) == "native"
    assert state.current_target_name(LabSettings(state_dir=tmp_path, target="docker")) == "docker"


def test_workshop_tools_are_commands() -> None:
    app = typer.Typer()

    @app.command()
    def other() -> None:  # two commands, so typer keeps subcommand names
        pass

    cli.register_tools(app)
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("bench", "timeline", "claims"):
        assert command in result.stdout


def test_native_log_tail_starts_at_the_last_start(tmp_path: Path) -> None:
    log = tmp_path / "gateway-cgi.log"
    log.write_text(
        f"{processes.START_MARKER}1\nold failure\n{processes.START_MARKER}2\nnew failure\n"
    )
    assert processes.tail(log) == "new failure"


def test_native_status_when_nothing_runs(tmp_path: Path) -> None:
    info = native.NativeTarget().status(LabSettings(port=18080, state_dir=tmp_path))
    assert info["running"] is False and info["active_mode"] is None
    assert info["gateways"]["asgi"] == "http://127.0.0.1:18083"


def test_native_switch_needs_a_running_lab(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="lab up"):
        native.NativeTarget().switch(LabSettings(state_dir=tmp_path), "asgi")


# -- lab scale ---------------------------------------------------------------------------


@pytest.fixture
def scaling(fake: FakeTarget) -> FakeTarget:
    return fake


def test_both_targets_can_scale() -> None:
    assert isinstance(native.NativeTarget(), ScalableTarget)
    assert isinstance(DockerTarget(), ScalableTarget)
    assert isinstance(FakeTarget(), ScalableTarget)


@pytest.mark.parametrize(("mode", "n"), [("wsgi", "3"), ("cgi", "1"), ("asgi", "8")])
def test_scale_delegates_to_the_target(scaling: FakeTarget, mode: str, n: str) -> None:
    result = runner.invoke(cli.app, ["scale", mode, n])
    assert result.exit_code == 0, result.output
    assert scaling.calls == [("scale", mode, n)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["fastcgi", "2"], "unknown mode", id="unknown-mode"),
        pytest.param(["wsgi", "0"], "between 1 and 8", id="zero"),
        pytest.param(["wsgi", "9"], "between 1 and 8", id="too-many"),
        pytest.param(["wsgi", "three"], "whole number", id="not-a-number"),
        pytest.param(["wsgi", "2.5"], "whole number", id="fraction"),
    ],
)
def test_bad_scale_exits_2_and_changes_nothing(
    scaling: FakeTarget, args: list[str], message: str
) -> None:
    result = runner.invoke(cli.app, ["scale", *args])
    assert result.exit_code == 2
    assert result.output.startswith("lab: ") and message in result.output
    assert scaling.calls == []


def test_scale_needs_a_target_that_can(fake: FakeTarget) -> None:
    fake.scale = None  # type: ignore[assignment,method-assign]  # a target without scale()
    assert not isinstance(fake, ScalableTarget)
    result = runner.invoke(cli.app, ["scale", "wsgi", "2"])
    assert result.exit_code == 1 and "cannot run replicas" in result.output


def test_native_scale_needs_a_running_lab(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="lab up"):
        native.NativeTarget().scale(LabSettings(state_dir=tmp_path), "wsgi", 2)


def test_native_status_reports_one_replica_per_mode_when_nothing_runs(tmp_path: Path) -> None:
    info = native.NativeTarget().status(LabSettings(port=18080, state_dir=tmp_path))
    assert info.get("replicas") == {"cgi": 1, "wsgi": 1, "asgi": 1}


def test_status_table_shows_replicas(fake: FakeTarget) -> None:
    info = fake.status(LabSettings()) | {"replicas": {"cgi": 1, "wsgi": 3, "asgi": 1}}
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(cli.status_table(info))
    assert "+ 2 replica(s)" in console.export_text()


def test_docker_replica_listing_is_sorted_by_container_number() -> None:
    from lab.targets.docker.compose import parse_replicas_listing, replica_counts

    listing = "3 ccc 172.28.0.9 \n1 aaa 172.28.0.4 \n\n2 bbb 172.28.0.7 \n"
    assert parse_replicas_listing(listing) == [
        (1, "aaa", "172.28.0.4"),
        (2, "bbb", "172.28.0.7"),
        (3, "ccc", "172.28.0.9"),
    ]
    ps = "nginx\ngateway-cgi\ngateway-wsgi\ngateway-wsgi\ngateway-asgi\ngateway-wsgi\n"
    assert replica_counts(ps) == {"cgi": 1, "wsgi": 3, "asgi": 1}
