"""lab.settings: every LAB_* in one object, errors that name the variable, defaults
that agree with the gateway's and compose.yaml's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import Settings as GatewaySettings
from lab.errors import LabError
from lab.routing import MODES
from lab.settings import ROOT, LabSettings, Limits
from lab.targets.switching import gateway_env


def test_nothing_set_gives_the_documented_defaults() -> None:
    cfg = LabSettings.from_env({})
    assert cfg == LabSettings()
    assert (cfg.port, cfg.mode, cfg.target, cfg.gateway_workers) == (8080, "wsgi", "", 0)
    assert cfg.tools_url == cfg.url == "http://127.0.0.1:8080"


def test_every_lab_variable_is_read() -> None:
    env = {
        "LAB_PORT": "18080",
        "LAB_STATE_DIR": "/tmp/x",
        "LAB_TARGET": "Native",
        "LAB_URL": "http://example.test:1/",
        "LAB_MODE": "wsgi=90,asgi=10",
        "LAB_GATEWAY_WORKERS": "3",
        "LAB_BUILD_TIMEOUT_S": "60",
        "LAB_WAIT_TIMEOUT_S": "30",
        "LAB_BASE_IMAGE": "lab-base:bookworm",
        "LAB_CA_BUNDLE": "/ca.pem",
        "LAB_NGINX_TEMPLATES": "/t",
        "LAB_PROXY_READ_TIMEOUT_S": "7",
        "LAB_CLIENT_MAX_BODY_BYTES": "1024",
        "LAB_CGI_MAX_SCRIPTS": "2",
    }
    cfg = LabSettings.from_env(env)
    assert cfg == LabSettings(
        port=18080,
        state_dir=Path("/tmp/x"),
        limits=Limits(7, 1024, 2),
        target="native",
        url_override="http://example.test:1/",
        mode={"wsgi": 90, "asgi": 10},
        gateway_workers=3,
        build_timeout_s=60.0,
        wait_timeout_s=30,
        base_image="lab-base:bookworm",
        ca_bundle="/ca.pem",
        templates=Path("/t"),
    )
    assert cfg.tools_url == "http://example.test:1"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("LAB_PORT", "eighty"),
        ("LAB_PORT", "\u00b9\u2070\u2070"),  # superscript digits: isdigit() says yes, int() no
        ("LAB_PORT", "0"),
        ("LAB_CGI_MAX_SCRIPTS", "-1"),
        ("LAB_GATEWAY_WORKERS", "2.5"),
        ("LAB_WAIT_TIMEOUT_S", "soon"),
        ("LAB_BUILD_TIMEOUT_S", "-5"),
        ("LAB_BUILD_TIMEOUT_S", "nan"),
        ("LAB_MODE", "fastcgi"),
        ("LAB_MODE", "wsgi=\u00b9\u2070\u2070"),
        ("LAB_TARGET", "podman"),
    ],
)
def test_a_bad_value_is_a_lab_error_naming_the_variable(key: str, value: str) -> None:
    with pytest.raises(LabError, match=key):
        LabSettings.from_env({key: value})


def test_nothing_is_read_at_import_time() -> None:
    for path in (ROOT / "lab").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        module_level = [
            line
            for line in text.splitlines()
            if re.match(r"^[A-Za-z_].*os\.environ", line) and "def " not in line
        ]
        assert not module_level, f"{path}: {module_level}"


def test_limit_defaults_agree_with_the_gateway_and_compose() -> None:
    gateway = GatewaySettings(mode="wsgi")
    limits = Limits()
    assert gateway.timeout_s == limits.proxy_read_timeout_s
    assert gateway.max_body_bytes == limits.client_max_body_bytes
    assert gateway.cgi_max_scripts == limits.cgi_max_scripts
    compose = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    assert f"${{LAB_PROXY_READ_TIMEOUT_S:-{limits.proxy_read_timeout_s}}}" in compose
    assert f"${{LAB_CLIENT_MAX_BODY_BYTES:-{limits.client_max_body_bytes}}}" in compose
    assert f"${{LAB_CGI_MAX_SCRIPTS:-{limits.cgi_max_scripts}}}" in compose
    assert f"${{LAB_MODE:-{LabSettings().mode}}}" in compose
    assert f"${{LAB_GATEWAY_WORKERS:-{LabSettings().gateway_workers}}}" in compose


def test_native_gateways_get_the_same_gateway_settings_as_compose() -> None:
    cfg = LabSettings(gateway_workers=3, limits=Limits(9, 100, 4))
    env = gateway_env(cfg, "wsgi")
    assert env == {
        "GATEWAY_CGI_MAX_SCRIPTS": "4",
        "GATEWAY_MAX_BODY_BYTES": "100",
        "GATEWAY_TIMEOUT_S": "9",
        "GATEWAY_WORKERS": "3",
    }
    # CGI's concurrency is its script cap under either server: no worker count.
    assert gateway_env(cfg, "cgi") == {k: v for k, v in env.items() if k != "GATEWAY_WORKERS"}
    compose = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    for key in env:
        assert f"{key}:" in compose, key
    # The gateway accepts them (3 workers in force, whatever the cores).
    settings = GatewaySettings.from_env(env | {"GATEWAY_MODE": "wsgi"})
    assert settings.worker_count == 3
    assert set(MODES) == {"cgi", "wsgi", "asgi"}
