"""The lab's side of the server choice: `lab server` input, LAB_SERVER_<MODE>, records, status."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab import cli, servers
from lab.errors import LabError
from lab.nginx import render as nginx_conf
from lab.settings import LabSettings, Limits
from lab.targets import ServerTarget
from lab.targets.docker.compose import compose_env
from lab.targets.native_nginx import native_values
from lab.targets.native_server import base_ports, servers_in_force, slot_port
from lab.targets.state import RunState
from tests.support.fakes import FakeTarget, use_fake

runner = CliRunner()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeTarget:
    target = FakeTarget(
        servers={"cgi": "fcgiwrap", "wsgi": "uwsgi", "asgi": "gunicorn"},
        gateways={"asgi": "http://127.0.0.1:8083"},
        workers={"cgi": 16, "wsgi": 5, "asgi": 2},
        replicas={"cgi": 1, "wsgi": 1, "asgi": 1},
    )
    return use_fake(monkeypatch, str(tmp_path), target)


def test_the_fake_is_a_server_target() -> None:
    assert isinstance(FakeTarget(), ServerTarget)


def test_lab_server_delegates_to_the_target(fake: FakeTarget) -> None:
    result = runner.invoke(cli.app, ["server", "wsgi", "gthread"])
    assert result.exit_code == 0, result.output
    assert fake.calls == [("server", "wsgi", "gthread")]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["wsgi", "uvicorn"], "unknown server 'uvicorn' for wsgi"),
        (["asgi", "sync"], "unknown server 'sync' for asgi"),
        (["soap", "sync"], "unknown mode 'soap'"),
    ],
)
def test_bad_input_exits_nonzero_and_calls_nothing(
    fake: FakeTarget, args: list[str], says: str
) -> None:
    result = runner.invoke(cli.app, ["server", *args])
    assert result.exit_code != 0
    assert says in result.output
    assert fake.calls == []


def test_status_table_names_each_server_and_its_workers(fake: FakeTarget) -> None:
    result = runner.invoke(cli.app, ["status"])
    assert result.exit_code == 0
    assert "fcgiwrap: (no HTTP address), 16 worker(s)" in result.output
    assert "uwsgi: (no HTTP address), 5 worker(s)" in result.output


def test_lab_server_env_wins_then_the_record_then_the_default() -> None:
    env = {"LAB_SERVER_WSGI": "gthread"}
    recorded = {"wsgi": "uwsgi", "asgi": "uvicorn"}
    assert servers.chosen_servers(env, recorded) == {
        "cgi": "runner",
        "wsgi": "gthread",
        "asgi": "uvicorn",
    }


def test_a_bad_lab_server_variable_is_named() -> None:
    with pytest.raises(LabError, match="LAB_SERVER_CGI='uwsgi'"):
        servers.chosen_servers({"LAB_SERVER_CGI": "uwsgi"}, {})


def test_workers_follow_each_server() -> None:
    counts = servers.worker_counts(
        {"cgi": "fcgiwrap", "wsgi": "gthread", "asgi": "uvicorn"}, Limits(cgi_max_scripts=9)
    )
    assert counts["cgi"] == 9  # one fcgiwrap process per script allowed at once
    runner_counts = servers.worker_counts({"cgi": "runner"}, Limits())
    assert runner_counts == {"cgi": 1}


def test_workers_in_force_follow_lab_gateway_workers_and_replicas() -> None:
    chosen = {"cgi": "fcgiwrap", "wsgi": "sync", "asgi": "uvicorn"}
    counts = servers.worker_counts(chosen, Limits(cgi_max_scripts=16), workers=4)
    # LAB_GATEWAY_WORKERS sets gunicorn's and uvicorn's workers, never fcgiwrap's
    # children: those are the script cap, as `limits` reports it.
    assert counts == {"cgi": 16, "wsgi": 4, "asgi": 4}
    scaled = servers.worker_counts(chosen, Limits(cgi_max_scripts=16), 4, {"asgi": 3, "cgi": 2})
    assert scaled == {"cgi": 32, "wsgi": 4, "asgi": 12}


def test_default_workers_follow_the_cpus_where_the_gateway_runs() -> None:
    chosen = {"wsgi": "sync", "asgi": "uvicorn"}
    limited = servers.worker_counts(chosen, Limits(), cpus={"wsgi": 2.0, "asgi": 1.5})
    assert limited == {"wsgi": 5, "asgi": 2}  # 2 x cores + 1; one per core, rounded up
    # LAB_GATEWAY_WORKERS wins over any CPU count.
    assert servers.worker_counts(chosen, Limits(), 3, cpus={"asgi": 1.0}) == {"wsgi": 3, "asgi": 3}


def test_fcgiwrap_prefork_is_the_script_cap_whatever_the_workers() -> None:
    from gateway.config import Settings
    from gateway.servers.fcgiwrap import fcgiwrap_command

    settings = Settings(mode="cgi", server="fcgiwrap", cgi_max_scripts=16, workers=4)
    assert fcgiwrap_command(settings, "fcgiwrap") == ["fcgiwrap", "-c", "16"]


def test_native_status_counts_uvicorn_workers_the_lab_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lab.targets import native_server

    monkeypatch.setattr(native_server, "read_proc", lambda: [])
    state = RunState(
        groups={"gateway-asgi": 10, "gateway-asgi-2": 11, "gateway-cgi": 12},
        servers={"asgi": "uvicorn", "cgi": "fcgiwrap"},
        limits={"proxy_read_timeout_s": 30, "client_max_body_bytes": 1, "cgi_max_scripts": 5},
        gateway_workers=3,
    )
    counts = native_server.live_workers(state)
    assert (counts["asgi"], counts["cgi"]) == (6, 5)


def test_only_http_servers_have_an_http_address() -> None:
    assert servers.http_address("wsgi", "gthread", "127.0.0.1", 1) == "http://127.0.0.1:1"
    assert servers.http_address("wsgi", "uwsgi", "127.0.0.1", 1) is None
    assert servers.http_address("cgi", "fcgiwrap", "127.0.0.1", 1) is None


def test_the_docker_record_round_trips_and_feeds_compose(tmp_path: Path) -> None:
    cfg = LabSettings(state_dir=tmp_path)
    assert servers.recorded_servers(cfg) == {}
    servers.record_servers(cfg, {"wsgi": "uwsgi"})
    assert servers.recorded_servers(cfg) == {"wsgi": "uwsgi"}
    env = compose_env(cfg, {"LAB_SERVER_ASGI": "uvicorn"})
    assert (env["LAB_SERVER_CGI"], env["LAB_SERVER_WSGI"], env["LAB_SERVER_ASGI"]) == (
        "runner",
        "uwsgi",
        "uvicorn",
    )
    (tmp_path / servers.SERVERS_FILE).write_text('{"wsgi": "nonsense"}')
    assert servers.recorded_servers(cfg) == {}


def test_a_swap_moves_the_mode_to_its_other_port_and_back(tmp_path: Path) -> None:
    cfg = LabSettings(port=24080, state_dir=tmp_path)
    state = RunState(servers={"wsgi": "gthread"}, slots={"wsgi": 1})
    ports = base_ports(cfg, state)
    assert ports == {"cgi": 24081, "wsgi": slot_port(cfg, "wsgi", 1), "asgi": 24083}
    # The other ports never meet the base ports, the replicas' or nginx's.
    others = {slot_port(cfg, m, 1) for m in ("cgi", "wsgi", "asgi")}
    assert others.isdisjoint({24080, 24081, 24082, 24083}) and min(others) < 24091
    values = native_values(cfg, servers_in_force(state), {"wsgi": 2}, ports)
    # nginx reaches the moved gateway on the unix socket named after its port.
    first = f"unix:{nginx_conf.native_socket(tmp_path, ports['wsgi'])}"
    assert values["wsgi_server"].split()[0] == first
    assert len(values["wsgi_server"].split()) == 2
    assert servers_in_force(state) == {"cgi": "runner", "wsgi": "gthread", "asgi": "gunicorn"}
