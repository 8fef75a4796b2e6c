"""nginx/templates rendered for each target, checked with the real `nginx -t`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.nginx import render as nginx_conf
from lab.nginx.__main__ import main as nginx_main
from lab.routing import MAX_REPLICAS, MODES, RenderError, parse_split, replica_port
from lab.settings import Limits
from tests.unit.lab.test_tls import tls_values

TEMPLATES = nginx_conf.TEMPLATE_DIR
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    found = shutil.which("nginx") or next((c for c in NGINX_CANDIDATES if Path(c).exists()), None)
    if found is None:
        pytest.fail(
            "nginx is not installed (apt-get install nginx-light): the configs need `nginx -t`"
        )
    return found


def render_into(
    tmp_path: Path,
    target: str,
    mode: str | None = "wsgi",
    split: dict[str, int] | None = None,
    limits: Limits | None = None,
) -> Path:
    """Render ``target`` into tmp_path/conf; returns nginx.conf's path.

    The compose rendering names hosts (gateway-cgi, ...) that only resolve on the
    compose network, and paths (/tmp/nginx) of the container; the test points
    those at loopback and tmp_path. Every other line is the template text as
    the container gets it.
    """
    values = nginx_conf.target_values(
        target, limits=limits or Limits(), port=18080, state_dir=tmp_path / "state"
    )
    if target == "compose":
        values |= {f"{m}_server": f"127.0.0.1:{8000 + i}" for i, m in enumerate(MODES)}
        values |= {"temp_dir": str(tmp_path / "tmp"), "pid_path": str(tmp_path / "nginx.pid")}
    values |= tls_values(tmp_path / "state" / "tls")  # nginx -t loads the certificate
    files = nginx_conf.render(values, mode, split)
    nginx_conf.make_runtime_dirs(values)
    out = tmp_path / "conf"
    nginx_conf.write_files(out, files)
    return out / "nginx.conf"


def nginx_t(nginx_bin: str, conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [nginx_bin, "-t", "-p", str(conf.parent), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("target", nginx_conf.TARGETS)
def test_rendered_config_passes_nginx_t(tmp_path: Path, nginx_bin: str, target: str) -> None:
    result = nginx_t(nginx_bin, render_into(tmp_path, target))
    assert result.returncode == 0, result.stderr


def test_split_config_passes_nginx_t(tmp_path: Path, nginx_bin: str) -> None:
    conf = render_into(tmp_path, "native", mode=None, split={"wsgi": 90, "asgi": 10})
    result = nginx_t(nginx_bin, conf)
    assert result.returncode == 0, result.stderr


def test_targets_fill_the_same_placeholders() -> None:
    native = nginx_conf.target_values("native", limits=Limits(), state_dir=Path("/s"))
    compose = nginx_conf.target_values("compose", limits=Limits())
    assert native.keys() == compose.keys()
    assert native["listen"] == "127.0.0.1:8080" and compose["listen"] == "8080"
    assert compose["wsgi_server"] == "gateway-wsgi:8000"
    assert native["wsgi_server"] == "unix:/s/run/gateway-8082.sock"
    assert (compose["access_log"], compose["error_log"]) == ("/dev/stdout", "/dev/stderr")


@pytest.mark.parametrize("target", nginx_conf.TARGETS)
def test_no_placeholder_is_left(tmp_path: Path, target: str) -> None:
    render_into(tmp_path, target)
    for path in (tmp_path / "conf").iterdir():
        assert "@@" not in path.read_text(), path.name


def test_limits_are_rendered(tmp_path: Path) -> None:
    limits = Limits(proxy_read_timeout_s=7, client_max_body_bytes=1234, cgi_max_scripts=3)
    server = (render_into(tmp_path, "native", limits=limits).parent / "server.conf").read_text()
    assert "client_max_body_size 1234;" in server
    assert "proxy_read_timeout 7s;" in server


def _directive_lines(text: str, directive: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.strip().startswith(directive + " ") and not line.strip().startswith("#")
    ]


@pytest.mark.parametrize("directive", ["proxy_set_header", "proxy_http_version"])
def test_proxy_headers_live_only_in_the_snippet(directive: str) -> None:
    # nginx drops inherited proxy_set_header lines at any level that has its own
    # (ngx_http_proxy_module docs), so they belong in one included file.
    found = {
        path.name for path in TEMPLATES.iterdir() if _directive_lines(path.read_text(), directive)
    }
    assert found == {"proxy.conf"}


def _location_blocks(text: str) -> dict[str, str]:
    """``location`` argument -> its block text (nested ``if`` blocks included)."""
    blocks = {}
    for match in re.finditer(r"^\s*location\s+([^{]+?)\s*\{", text, re.MULTILINE):
        depth, i = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        blocks[match.group(1)] = text[match.end() : i - 1]
    return blocks


def _routes() -> dict[str, str]:
    """The locations of server.conf that reach a gateway: they set $lab_target."""
    blocks = _location_blocks((TEMPLATES / "server.conf").read_text())
    return {name: body for name, body in blocks.items() if "set $lab_target" in body}


def test_every_route_reaches_its_server_through_a_pass_file() -> None:
    # A fixed route includes its mode's pass file; a route that picks the mode
    # per request jumps to the mode's named location (routes.conf), which does.
    routes = _routes()
    assert {"/cgi/", "/wsgi/", "/asgi/", "/"} <= routes.keys()
    for name, body in routes.items():
        assert "set $lab_prefix" in body, name
        assert "proxy_pass" not in body, name  # the server decides: proxy, fastcgi, uwsgi
        assert re.search(r"include pass_(cgi|wsgi|asgi)\.conf;|try_files /\.lab-route @", body)
    named = _location_blocks((TEMPLATES / "routes.conf").read_text())
    for mode in MODES:
        assert f"include pass_{mode}.conf;" in routes[f"/{mode}/"]
        for name in (f"@{mode}", f"@{mode}_stream"):
            assert f"include pass_{mode}.conf;" in named[name], name
    # Over HTTP, every header nginx sets comes from the one snippet.
    http = (TEMPLATES / "pass_http.conf").read_text()
    assert http.index("\ninclude proxy.conf;") < http.index("\nproxy_pass ")


def test_mode_routes_keep_their_prefix() -> None:
    # The path goes on as the client's target (without a fragment), so /wsgi/env
    # reaches the gateway as /wsgi/env.
    assert _directive_lines((TEMPLATES / "pass_http.conf").read_text(), "proxy_pass") == [
        "proxy_pass http://gateway_@@mode$lab_request_uri;"
    ]


def _streaming(name: str) -> bool:
    return "stream|events" in name or name.endswith("_stream")


def test_buffering_is_off_only_for_streaming_routes() -> None:
    # stream.conf turns buffering off for every protocol; only the named
    # locations of long-lived answers include it, and only the streaming
    # routes jump to those.
    stream = (TEMPLATES / "stream.conf").read_text()
    for prefix in ("proxy", "fastcgi", "uwsgi"):
        assert f"{prefix}_buffering off;" in stream
    named = _location_blocks((TEMPLATES / "routes.conf").read_text())
    including = {name for name, body in named.items() if "include stream.conf;" in body}
    assert including == {f"@{m}_stream" for m in MODES}
    jumping = {name for name, body in _routes().items() if "_stream;" in body}
    assert len(jumping) == 2 and all(_streaming(name) for name in jumping)
    for path in TEMPLATES.iterdir():
        if path.name != "stream.conf":
            for prefix in ("proxy", "fastcgi", "uwsgi"):
                lines = _directive_lines(path.read_text(), f"{prefix}_buffering")
                assert all(" off;" not in line for line in lines), path


def test_long_lived_routes_wait_longer_than_the_default() -> None:
    # An idle WebSocket or a quiet event stream outlives proxy_read_timeout (30 s);
    # every other route keeps the configured limit, whatever protocol nginx speaks.
    stream = (TEMPLATES / "stream.conf").read_text()
    for prefix in ("proxy", "fastcgi", "uwsgi"):
        assert f"{prefix}_read_timeout 300s;" in stream
    routes = (TEMPLATES / "routes.conf").read_text()
    for prefix in ("fastcgi", "uwsgi"):
        assert f"{prefix}_read_timeout @@proxy_read_timeout;" in routes
    others = [p for p in TEMPLATES.iterdir() if p.name != "stream.conf"]
    assert not any("_read_timeout 300s;" in p.read_text() for p in others)


def test_proxy_intercept_errors_stays_off() -> None:
    text = "\n".join(p.read_text() for p in TEMPLATES.iterdir())
    assert _directive_lines(text, "proxy_intercept_errors") == ["    proxy_intercept_errors off;"]


@pytest.mark.parametrize("mode", MODES)
def test_active_mode_round_trips(mode: str) -> None:
    text = nginx_conf.render_active_mode(mode)
    assert nginx_conf.read_active_mode(text) == mode
    assert f"default {mode};" in text


def test_split_round_trips_with_catch_all_last() -> None:
    text = nginx_conf.render_active_mode(split={"wsgi": 90, "asgi": 10})
    assert nginx_conf.read_active_mode(text) == {"wsgi": 90, "asgi": 10}
    assert "90% wsgi;" in text and "* asgi;" in text


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("fastcgi", id="unknown"),
        pytest.param("WSGI", id="upper-case"),
        pytest.param("", id="empty"),
        pytest.param("wsgi;", id="nginx-syntax"),
    ],
)
def test_bad_mode_is_rejected(mode: str) -> None:
    with pytest.raises(RenderError, match="unknown mode"):
        nginx_conf.render_active_mode(mode)


@pytest.mark.parametrize(
    "split",
    [
        pytest.param("wsgi=90", id="not-100"),
        pytest.param("wsgi=50,wsgi=50", id="twice"),
        pytest.param("wsgi=90,php=10", id="unknown-mode"),
        pytest.param("wsgi=x,asgi=10", id="not-a-number"),
        pytest.param("wsgi=100,asgi=0", id="zero-weight"),
        pytest.param("wsgi", id="no-weight"),
    ],
)
def test_bad_split_is_rejected(split: str) -> None:
    with pytest.raises(RenderError):
        parse_split(split)


def test_cli_active_rejects_bad_mode_and_changes_nothing(tmp_path: Path) -> None:
    assert nginx_main(["active", "--out", str(tmp_path), "--mode", "asgi"]) == 0
    before = (tmp_path / "active_mode.conf").read_text()
    assert nginx_main(["active", "--out", str(tmp_path), "--mode", "fastcgi"]) == 2
    assert (tmp_path / "active_mode.conf").read_text() == before


def test_cli_renders_compose_with_overrides(tmp_path: Path, nginx_bin: str) -> None:
    out = tmp_path / "conf"
    args = ["render", "--target", "compose", "--out", str(out), "--split", "cgi=50,asgi=50"]
    args += ["--set", f"temp_dir={tmp_path / 'tmp'}", "--set", f"pid_path={tmp_path / 'pid'}"]
    args += [f"--set={m}_server=127.0.0.1:{9000 + i}" for i, m in enumerate(MODES)]
    args += [f"--set={k}={v}" for k, v in tls_values(tmp_path / "tls").items()]
    assert nginx_main(args) == 0
    assert nginx_t(nginx_bin, out / "nginx.conf").returncode == 0
    assert nginx_conf.read_active_mode((out / "active_mode.conf").read_text()) == {
        "cgi": 50,
        "asgi": 50,
    }


def test_cli_rejects_unknown_override(tmp_path: Path) -> None:
    args = ["render", "--target", "compose", "--out", str(tmp_path), "--set", "nope=1"]
    assert nginx_main(args) == 2


def test_unknown_placeholder_is_an_error(tmp_path: Path) -> None:
    for path in TEMPLATES.iterdir():
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "proxy.conf").write_text("proxy_set_header X-Thing @@nope;\n")
    values = nginx_conf.target_values("compose", limits=Limits())
    with pytest.raises(RenderError, match="@@nope"):
        nginx_conf.render(values, templates=tmp_path)


# -- several servers per upstream (`lab scale`) -----------------------------------------


def upstream_servers(text: str, mode: str) -> list[str]:
    """The addresses of the `server` lines in upstream gateway_<mode>."""
    block = text.split(f"upstream gateway_{mode} {{", 1)[1].split("}", 1)[0]
    return re.findall(r"^\s*server (\S+);$", block, re.MULTILINE)


def test_native_replicas_render_one_server_line_each(tmp_path: Path, nginx_bin: str) -> None:
    values = nginx_conf.target_values(
        "native", limits=Limits(), port=18080, state_dir=tmp_path / "state", replicas={"wsgi": 3}
    )
    tls_values(tmp_path / "state" / "tls")  # nginx -t loads the certificate
    files = nginx_conf.render(values)
    upstreams = files["upstreams.conf"]
    run = tmp_path / "state" / "run"
    assert upstream_servers(upstreams, "wsgi") == [
        f"unix:{run}/gateway-18082.sock",
        f"unix:{run}/gateway-18101.sock",
        f"unix:{run}/gateway-18102.sock",
    ]
    assert upstream_servers(upstreams, "cgi") == [f"unix:{run}/gateway-18081.sock"]
    assert upstream_servers(upstreams, "asgi") == [f"unix:{run}/gateway-18083.sock"]
    assert nginx_conf.render_upstreams(values) == upstreams
    nginx_conf.make_runtime_dirs(values)
    nginx_conf.write_files(tmp_path / "conf", files)
    result = nginx_t(nginx_bin, tmp_path / "conf" / "nginx.conf")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        pytest.param("gateway-wsgi:8000", ["gateway-wsgi:8000"], id="service-name"),
        pytest.param(
            "10.0.0.5:8000 10.0.0.6:8000", ["10.0.0.5:8000", "10.0.0.6:8000"], id="spaces"
        ),
        pytest.param(
            "10.0.0.5:8000,10.0.0.6:8000", ["10.0.0.5:8000", "10.0.0.6:8000"], id="commas"
        ),
        pytest.param("[::1]:8000", ["[::1]:8000"], id="ipv6"),
    ],
)
def test_server_lines(addresses: str, expected: list[str]) -> None:
    lines = nginx_conf.server_lines(addresses).splitlines()
    assert lines == [f"    server {a};" for a in expected]


@pytest.mark.parametrize(
    "addresses",
    [
        pytest.param("", id="empty"),
        pytest.param("10.0.0.5", id="no-port"),
        pytest.param("10.0.0.5:8000; return 200", id="injected-directive"),
        pytest.param("a:1}", id="brace"),
    ],
)
def test_bad_server_addresses_are_rejected(addresses: str) -> None:
    with pytest.raises(RenderError):
        nginx_conf.server_lines(addresses)


def test_replica_ports_never_meet_the_base_ports() -> None:
    from lab.routing import gateway_ports

    port = 8080
    base = set(gateway_ports(port).values()) | {port}
    extra = [replica_port(port, m, i) for m in MODES for i in range(1, MAX_REPLICAS)]
    assert len(set(extra)) == len(extra)
    assert not base & set(extra)
    assert max(extra) - port < 40  # two native labs 40 ports apart never collide
    assert [replica_port(port, m, 0) for m in MODES] == [8081, 8082, 8083]
    with pytest.raises(RenderError):
        replica_port(port, "wsgi", MAX_REPLICAS)


def test_cli_upstreams_rewrites_only_that_file(tmp_path: Path, nginx_bin: str) -> None:
    out = tmp_path / "conf"
    args = ["render", "--target", "compose", "--out", str(out), "--mode", "asgi"]
    args += ["--set", f"temp_dir={tmp_path / 'tmp'}", "--set", f"pid_path={tmp_path / 'pid'}"]
    args += [f"--set={m}_server=127.0.0.1:{9000 + i}" for i, m in enumerate(MODES)]
    args += [f"--set={k}={v}" for k, v in tls_values(tmp_path / "tls").items()]
    assert nginx_main(args) == 0
    others = {p.name: p.read_text() for p in out.iterdir() if p.name != "upstreams.conf"}
    pinned = [f"--set={m}_server=127.0.0.1:{9000 + i}" for i, m in enumerate(MODES)]
    pinned[1] = "--set=wsgi_server=127.0.0.1:9101 127.0.0.1:9102"
    assert nginx_main(["upstreams", "--target", "compose", "--out", str(out), *pinned]) == 0
    upstreams = (out / "upstreams.conf").read_text()
    assert upstream_servers(upstreams, "wsgi") == ["127.0.0.1:9101", "127.0.0.1:9102"]
    assert {p.name: p.read_text() for p in out.iterdir() if p.name != "upstreams.conf"} == others
    assert nginx_t(nginx_bin, out / "nginx.conf").returncode == 0
    bad = ["upstreams", "--target", "compose", "--out", str(out), "--set=wsgi_server=x;y"]
    assert nginx_main(bad) == 2
    assert (out / "upstreams.conf").read_text() == upstreams


def test_every_socket_path_is_checked_against_the_kernels_limit() -> None:
    from gateway.servers.registry import MAX_UNIX_PATH_BYTES

    longest = Path("/" + "s" * (MAX_UNIX_PATH_BYTES - 1))
    assert nginx_conf.socket_path(longest) == longest
    with pytest.raises(RenderError, match="too long for a unix socket"):
        nginx_conf.socket_path(longest / "x")
    deep = Path("/" + "d" * MAX_UNIX_PATH_BYTES)
    for make in (
        lambda: nginx_conf.control_socket(deep, "native"),
        lambda: nginx_conf.native_socket(deep, 8081),
    ):
        with pytest.raises(RenderError, match="LAB_STATE_DIR"):
            make()
