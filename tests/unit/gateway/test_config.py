"""Settings come from GATEWAY_* variables; bad values are named at start-up."""

from pathlib import Path

import pytest

from gateway.config import Settings, SettingsError, default_workers


def test_defaults_from_mode_only() -> None:
    s = Settings.from_env({"GATEWAY_MODE": "wsgi"})
    assert (s.mode, s.port, s.cgi_max_scripts, s.max_body_bytes) == ("wsgi", 8000, 16, 16 << 20)


def test_env_values_are_cast() -> None:
    s = Settings.from_env(
        {
            "GATEWAY_MODE": "cgi",
            "GATEWAY_PORT": "9001",
            "GATEWAY_TIMEOUT_S": "2.5",
            "GATEWAY_CGI_SCRIPT": "/x/y.py",
        }
    )
    assert (s.port, s.timeout_s, s.cgi_script) == (9001, 2.5, Path("/x/y.py"))


def test_overrides_beat_env_and_none_is_ignored() -> None:
    s = Settings.from_env({"GATEWAY_MODE": "cgi", "GATEWAY_PORT": "1"}, mode="asgi", port=None)
    assert (s.mode, s.port) == ("asgi", 1)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({}, "GATEWAY_MODE is not set", id="no-mode"),
        pytest.param({"GATEWAY_MODE": "fastcgi"}, "mode must be one of", id="unknown-mode"),
        pytest.param(
            {"GATEWAY_MODE": "wsgi", "GATEWAY_PORT": "http"}, "GATEWAY_PORT='http'", id="bad-int"
        ),
        pytest.param(
            # int() reads these as 12 and 80; settings take ASCII digits only.
            {"GATEWAY_MODE": "wsgi", "GATEWAY_PORT": "\u0661\u0662"},
            "GATEWAY_PORT=",
            id="arabic",
        ),
        pytest.param(
            {"GATEWAY_MODE": "wsgi", "GATEWAY_PORT": "\uff18\uff10"},
            "GATEWAY_PORT=",
            id="fullwidth",
        ),
        pytest.param(
            {"GATEWAY_MODE": "cgi", "GATEWAY_CGI_QUEUE_WAIT_S": "-1"},
            "GATEWAY_CGI_QUEUE_WAIT_S='-1'",
            id="negative-wait",
        ),
        pytest.param(
            {"GATEWAY_MODE": "wsgi", "GATEWAY_CGI_MAX_SCRIPTS": "0"},
            "cgi_max_scripts must be positive",
            id="zero-cap",
        ),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_queue_settings_and_their_defaults() -> None:
    s = Settings.from_env(
        {"GATEWAY_MODE": "cgi", "GATEWAY_CGI_QUEUE_MAX": "0", "GATEWAY_CGI_QUEUE_WAIT_S": "2.5"}
    )
    assert (s.cgi_queue_max, s.cgi_queue_wait_s) == (0, 2.5)
    default = Settings(mode="cgi")
    assert (default.cgi_queue_max, default.cgi_queue_wait_s) == (128, 10.0)  # docs/gateway.md


def test_the_cgi_bounds_hold_the_labs_own_heaviest_load() -> None:
    # 100 clients: lab bench's top recorded level (docs/workshop.md) and
    # benchmarks/servers.py's IO level. Past scripts + queue a client is refused
    # at once and asks again: a storm of 503s in the figures instead of a queue.
    default = Settings(mode="cgi")
    assert default.cgi_max_scripts + default.cgi_queue_max >= 100


def test_default_workers_rule_of_thumb() -> None:
    assert default_workers("wsgi", cores=2) == 5  # 2 x cores + 1
    assert default_workers("asgi", cores=2) == 2  # one event loop per core
    assert default_workers("cgi", cores=2) == 1  # concurrency lives in the scripts
