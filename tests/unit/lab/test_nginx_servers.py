"""How nginx reaches each mode's server: pass_<mode>.conf rendered per server, under `nginx -t`."""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.servers.registry import SERVERS, wire
from lab.nginx import render as nginx_conf
from lab.routing import MODES, RenderError, replica_port
from lab.settings import LabSettings, Limits
from lab.targets.native_nginx import find_nginx
from lab.targets.native_server import gateway_process
from tests.unit.lab.test_nginx_render import nginx_t
from tests.unit.lab.test_tls import tls_values

ROOT = Path(__file__).resolve().parents[3]
EVERY_CHOICE = [
    dict(zip(MODES, combo, strict=True)) for combo in itertools.product(*SERVERS.values())
]


@pytest.fixture(scope="module")
def nginx() -> str:
    found = find_nginx()
    if found is None:
        pytest.fail(
            "nginx is not installed (apt-get install nginx-light): the configs need `nginx -t`"
        )
    return found


DIRECTIVE = {"http": "proxy_pass http://", "fastcgi": "fastcgi_pass ", "uwsgi": "uwsgi_pass "}


def values(target: str, tmp_path: Path) -> dict[str, str]:
    found = nginx_conf.target_values(
        target, limits=Limits(), port=18080, state_dir=tmp_path / "state"
    )
    if target == "compose":  # as test_nginx_conf.render_into: loopback and tmp_path
        found |= {f"{m}_server": f"127.0.0.1:{8000 + i}" for i, m in enumerate(MODES)}
        found |= {"temp_dir": str(tmp_path / "tmp"), "pid_path": str(tmp_path / "nginx.pid")}
    return found | tls_values(tmp_path / "state" / "tls")  # nginx -t loads the certificate


def render_into(tmp_path: Path, target: str, servers: dict[str, str]) -> Path:
    vals = values(target, tmp_path)
    files = nginx_conf.render(vals, "wsgi", None, servers=servers)
    nginx_conf.make_runtime_dirs(vals)
    nginx_conf.write_files(tmp_path / "conf", files)
    return tmp_path / "conf" / "nginx.conf"


@pytest.mark.parametrize("servers", EVERY_CHOICE, ids=lambda c: "-".join(c.values()))
def test_every_choice_of_servers_passes_nginx_t(
    tmp_path: Path, nginx: str, servers: dict[str, str]
) -> None:
    conf = render_into(tmp_path, "native", servers)
    done = nginx_t(nginx, conf)
    assert done.returncode == 0, done.stderr
    for mode, server in servers.items():
        text = (conf.parent / f"pass_{mode}.conf").read_text()
        assert f"\n{DIRECTIVE[wire(mode, server)]}gateway_{mode}" in text
        assert nginx_conf.read_server(text) == (mode, server)


def test_compose_with_the_other_servers_passes_nginx_t(tmp_path: Path, nginx: str) -> None:
    servers = {"cgi": "fcgiwrap", "wsgi": "uwsgi", "asgi": "uvicorn"}
    done = nginx_t(nginx, render_into(tmp_path, "compose", servers))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "conf" / "pass_cgi.conf").read_text()
    assert "fastcgi_param SCRIPT_FILENAME /app/apps/breakfast/cgi_app.py;" in text


def test_fastcgi_runs_the_same_script_as_the_runner(tmp_path: Path) -> None:
    text = nginx_conf.render_pass("cgi", "fcgiwrap", values("native", tmp_path))
    script = ROOT / "apps" / "breakfast" / "cgi_app.py"
    assert f"fastcgi_param SCRIPT_FILENAME {script};" in text
    assert os.access(script, os.X_OK)  # fcgiwrap execs it


def test_without_a_choice_every_mode_gets_its_default(tmp_path: Path) -> None:
    files = nginx_conf.render(values("native", tmp_path), "wsgi")
    recorded = {nginx_conf.read_server(files[f"pass_{m}.conf"]) for m in MODES}
    assert recorded == {("cgi", "runner"), ("wsgi", "sync"), ("asgi", "gunicorn")}


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ({"wsgi": "uvicorn"}, "unknown server 'uvicorn' for wsgi"),
        ({"http": "sync"}, "unknown mode 'http'"),
    ],
)
def test_a_bad_choice_is_refused(tmp_path: Path, servers: dict[str, str], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        nginx_conf.render(values("native", tmp_path), "wsgi", servers=servers)


@pytest.mark.parametrize("text", ["# lab-server: wsgi uvicorn\n", "# lab-mode: wsgi\n", ""])
def test_read_server_ignores_what_is_not_a_valid_record(text: str) -> None:
    assert nginx_conf.read_server(text) is None


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab.nginx", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_server_rewrites_only_that_mode_and_refuses_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "conf"
    state = str(tmp_path / "state")
    assert (
        cli("render", "--target", "native", "--out", str(out), "--state-dir", state).returncode == 0
    )
    before = {p.name: p.read_text() for p in out.iterdir()}
    done = cli("server", "--target", "native", "--out", str(out), "wsgi=gthread")
    assert done.returncode == 0, done.stderr
    after = {p.name: p.read_text() for p in out.iterdir()}
    assert {n for n in after if after[n] != before.get(n)} == {"pass_wsgi.conf"}
    assert nginx_conf.read_server(after["pass_wsgi.conf"]) == ("wsgi", "gthread")
    for bad in ("wsgi=fcgiwrap", "wsgi", "soap=sync"):
        done = cli("server", "--target", "native", "--out", str(out), bad)
        assert done.returncode == 2 and "lab.nginx:" in done.stderr
        assert (out / "pass_wsgi.conf").read_text() == after["pass_wsgi.conf"]


def test_natively_nginx_reaches_gateways_on_unix_sockets_but_fcgiwrap_on_its_port(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    found = nginx_conf.target_values(
        "native",
        limits=Limits(),
        port=18080,
        state_dir=state,
        replicas={"wsgi": 2},
        servers={"cgi": "fcgiwrap"},
    )
    assert found["wsgi_server"].split() == [
        f"unix:{state}/run/gateway-18082.sock",
        f"unix:{state}/run/gateway-{replica_port(18080, 'wsgi', 1)}.sock",
    ]
    assert found["asgi_server"] == f"unix:{state}/run/gateway-18083.sock"
    assert found["cgi_server"] == "127.0.0.1:18081"  # fcgiwrap serves one socket: TCP
    lines = nginx_conf.server_lines(found["wsgi_server"])
    assert lines.splitlines()[0] == f"    server unix:{state}/run/gateway-18082.sock;"


@pytest.mark.parametrize("address", ["unix:relative.sock", "unix:/a b.sock", "unix:/a;b"])
def test_a_bad_unix_address_is_refused(address: str) -> None:
    with pytest.raises(RenderError, match="bad server address"):
        nginx_conf.server_lines(address)


def test_a_state_directory_too_long_for_a_socket_says_what_to_do() -> None:
    with pytest.raises(RenderError, match="LAB_STATE_DIR"):
        nginx_conf.native_socket(Path("/" + "d" * 120), 8082)


def test_each_native_gateway_gets_its_socket_in_a_private_directory(tmp_path: Path) -> None:
    cfg = LabSettings(port=18080, state_dir=tmp_path / "state")
    _, env = gateway_process(cfg, "wsgi", 18082, "gthread")
    sock = Path(env["GATEWAY_UDS"])
    assert sock == nginx_conf.native_socket(cfg.state_dir, 18082)
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700  # the lab's user alone
    _, env = gateway_process(cfg, "cgi", 18081, "fcgiwrap")
    assert "GATEWAY_UDS" not in env


def test_nginx_workers_run_as_the_labs_user_when_root_starts_them() -> None:
    # Started by root, nginx would switch its workers to nobody, who cannot pass
    # a 0700 directory on the way to the gateways' sockets.
    assert nginx_conf.worker_user("root") == "user root;"
    assert nginx_conf.worker_user(None).startswith("#")
    with pytest.raises(RenderError, match="bad user name"):
        nginx_conf.worker_user("root; daemon on")
