"""The swarm stack rendered from compose.yaml (lab/targets/docker/stack.py): no engine needed.

What they pin, as test_compose.py does for compose.yaml itself: the four
service names, limits moved to ``deploy.resources`` (equal for every gateway),
read-only roots with a writable /tmp as a tmpfs mount in the long syntax,
healthchecks, the gateways on the internal overlay network only, nginx alone
publishing, and replicas spread over nodes and resolved per task (dnsrr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.errors import LabError
from lab.targets.docker.stack import (
    DROPPED,
    interpolate,
    parse_service_ls,
    parse_task_listing,
    parse_tasks,
    size_bytes,
    stack_file,
)

ROOT = Path(__file__).resolve().parents[3]
GATEWAYS = ("gateway-cgi", "gateway-wsgi", "gateway-asgi")
SERVICES = ("nginx", *GATEWAYS)
ENV = {"LAB_PORT": "8380", "LAB_TLS_PORT": "8390", "LAB_SUBNET": "172.29.0.0/24"}


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    result = interpolate(loaded, ENV if env is None else env)
    assert isinstance(result, dict)
    return result


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return stack_file(compose(), {"wsgi": 3})


@pytest.fixture(scope="module")
def services(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = stack["services"]
    assert isinstance(found, dict)
    return found


def test_the_stack_is_a_version_3_file_with_the_contract_services(stack: dict[str, Any]) -> None:
    assert stack["version"].startswith("3.")
    assert sorted(stack["services"]) == sorted(SERVICES)
    # Refused or meaningless under swarm: the name is `docker stack deploy`'s argument.
    assert "name" not in stack and "secrets" not in stack
    assert not [k for k in stack if k.startswith("x-")]


@pytest.mark.parametrize("name", SERVICES)
def test_keys_swarm_refuses_or_ignores_are_gone(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    # ports come back in the long syntax (nginx only); the rest has no place in a stack.
    assert not set(services[name]) & (set(DROPPED) - {"ports"})
    assert all(isinstance(p, dict) for p in services[name].get("ports", []))


@pytest.mark.parametrize("name", GATEWAYS)
def test_gateway_limits_are_in_deploy_resources_and_equal(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    limits = services[name]["deploy"]["resources"]["limits"]
    assert limits == {"cpus": "1.0", "memory": "512m", "pids": 512}


def test_limits_follow_the_settings() -> None:
    env = ENV | {"LAB_GATEWAY_CPUS": "0.5", "LAB_GATEWAY_MEMORY": "256m"}
    rendered = stack_file(compose(env))
    for name in GATEWAYS:
        limits = rendered["services"][name]["deploy"]["resources"]["limits"]
        assert (limits["cpus"], limits["memory"]) == ("0.5", "256m")


@pytest.mark.parametrize("name", SERVICES)
def test_read_only_root_with_tmp_as_a_long_syntax_tmpfs(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    svc = services[name]
    assert svc["read_only"] is True
    assert svc["cap_drop"] == ["ALL"]
    assert svc["init"] is True
    mounts = [v for v in svc["volumes"] if isinstance(v, dict) and v["type"] == "tmpfs"]
    assert mounts == [{"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 64 * 1024**2}}]


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_keeps_its_healthcheck(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    original = compose()["services"][name]["healthcheck"]
    assert services[name]["healthcheck"] == original
    assert services[name]["deploy"]["restart_policy"]["condition"] == "any"


def test_gateways_are_on_the_internal_overlay_network_only(
    stack: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name in GATEWAYS:
        assert services[name]["networks"] == ["lab"]
        assert "ports" not in services[name]
    lab = stack["networks"]["lab"]
    assert lab["driver"] == "overlay"
    assert lab["internal"] is True
    assert lab["ipam"]["config"][0]["subnet"] == "172.29.0.0/24"
    # The gateways believe X-Forwarded-* from that subnet only.
    for name in GATEWAYS:
        assert services[name]["environment"]["GATEWAY_FORWARDED_ALLOW_IPS"] == "172.29.0.0/24"
    assert sorted(services["nginx"]["networks"]) == ["edge", "lab"]
    assert stack["networks"]["edge"]["driver"] == "overlay"


def test_only_nginx_publishes_in_host_mode_on_the_lab_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    ports = services["nginx"]["ports"]
    assert ports == [
        {"target": 8080, "published": 8380, "protocol": "tcp", "mode": "host"},
        {"target": 8443, "published": 8390, "protocol": "tcp", "mode": "host"},
    ]
    deploy = services["nginx"]["deploy"]
    assert deploy["replicas"] == 1
    assert deploy["placement"]["constraints"] == ["node.role == manager"]
    # A host-mode port can be bound by one task at a time.
    assert deploy["update_config"]["order"] == "stop-first"


def test_replicas_are_spread_and_resolved_per_task(services: dict[str, dict[str, Any]]) -> None:
    replicas = {name: services[name]["deploy"]["replicas"] for name in GATEWAYS}
    assert replicas == {"gateway-cgi": 1, "gateway-wsgi": 3, "gateway-asgi": 1}
    for name in GATEWAYS:
        deploy = services[name]["deploy"]
        assert deploy["endpoint_mode"] == "dnsrr"
        assert deploy["placement"]["preferences"] == [{"spread": "node.labels.lab.zone"}]
        assert deploy["update_config"]["order"] == "start-first"
        # X-Gateway-Host names the node and the replica.
        mode = name.removeprefix("gateway-")
        assert services[name]["hostname"] == f"{{{{.Node.Hostname}}}}-{mode}-{{{{.Task.Slot}}}}"


def test_nginx_waits_for_the_gateways_instead_of_depends_on(
    services: dict[str, dict[str, Any]],
) -> None:
    assert int(services["nginx"]["environment"]["LAB_WAIT_FOR_GATEWAYS"]) > 0
    entrypoint = (ROOT / "nginx" / "entrypoint.sh").read_text()
    assert 'getent hosts "$name"' in entrypoint


def test_images_are_the_compose_images_with_a_registry_prefix() -> None:
    env = ENV | {"LAB_IMAGE_TAG": "v1"}
    plain = stack_file(compose(env))["services"]
    assert plain["nginx"]["image"] == "gateway-lab/nginx:v1"
    assert plain["gateway-wsgi"]["image"] == "gateway-lab/gateway:v1"
    pushed = stack_file(compose(env), registry="registry.example:5000")["services"]
    assert pushed["gateway-asgi"]["image"] == "registry.example:5000/gateway-lab/gateway:v1"


def test_an_unknown_compose_key_is_refused_not_dropped() -> None:
    changed = compose()
    changed["services"]["nginx"] = {**changed["services"]["nginx"], "privileged": True}
    with pytest.raises(LabError, match="privileged"):
        stack_file(changed)
    with pytest.raises(LabError, match="configs"):
        stack_file({**compose(), "configs": {}})


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${A:-x}", {}, "x"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A}", {"A": "1"}, "1"),
        ("$$A", {"A": "1"}, "$A"),
        ("a-${A:-1}-${B:-2}", {"B": "3"}, "a-1-3"),
    ],
)
def test_interpolate_as_compose_does(value: str, env: dict[str, str], expected: str) -> None:
    assert interpolate({"k": [value]}, env) == {"k": [expected]}


@pytest.mark.parametrize(
    ("text", "expected"), [("64m", 64 * 1024**2), ("1g", 1024**3), ("512", 512), ("2kb", 2048)]
)
def test_size_bytes(text: str, expected: int) -> None:
    assert size_bytes(text) == expected


def test_size_bytes_refuses_nonsense() -> None:
    with pytest.raises(LabError):
        size_bytes("lots")


def test_parse_service_ls() -> None:
    text = "s_nginx 1/1\ns_gateway-wsgi 2/3\ns_gateway-cgi 1/1\nother_gateway-asgi 1/1\n"
    got = parse_service_ls(text, "s")
    assert got == {
        "nginx": (True, 1),
        "gateway-wsgi": (False, 2),
        "gateway-cgi": (True, 1),
        "gateway-asgi": (False, 0),
    }
    assert parse_service_ls("s_gateway-cgi 0/0\n", "s")["gateway-cgi"] == (False, 0)


def test_parse_tasks_per_service_lowest_slot_first() -> None:
    text = (
        "s_gateway-wsgi.10\tnode-b\tRunning 1 second ago\n"
        "s_gateway-wsgi.2\tnode-a\tRunning 3 minutes ago\n"
        "s_nginx.1\tnode-a\tRunning 3 minutes ago\n"
        "t_nginx.1\tnode-c\tRunning\n"
    )
    got = parse_tasks(text, "s")
    assert [t["slot"] for t in got["gateway-wsgi"]] == [2, 10]
    assert got["gateway-wsgi"][1]["node"] == "node-b"
    assert got["nginx"] == [{"slot": 1, "node": "node-a", "state": "Running 3 minutes ago"}]


def test_parse_task_listing() -> None:
    text = "3 abc 172.29.0.7/24 \n1 def 172.29.0.5/24 \n2 ghi \n"
    assert parse_task_listing(text) == [(1, "def", "172.29.0.5"), (3, "abc", "172.29.0.7")]


def test_next_stack_is_the_gateway_with_another_server_on_the_running_network(
    stack: dict[str, Any],
) -> None:
    from lab.targets.docker.stack import next_stack

    got = next_stack(stack, "lab1", "wsgi", "gthread")
    assert list(got["services"]) == ["gateway-wsgi-next"]
    service = got["services"]["gateway-wsgi-next"]
    original = stack["services"]["gateway-wsgi"]
    assert service["environment"] == original["environment"] | {"GATEWAY_SERVER": "gthread"}
    assert service["deploy"]["replicas"] == 1
    assert service["deploy"]["resources"] == original["deploy"]["resources"]
    assert service["read_only"] is True and service["volumes"] == original["volumes"]
    assert got["networks"] == {"lab": {"external": True, "name": "lab1_lab"}}
    # The running stack is not changed by it.
    assert original["environment"]["GATEWAY_SERVER"] == "sync"


def test_the_control_directory_is_an_absolute_read_only_bind_in_nginx_only(
    services: dict[str, dict[str, Any]],
) -> None:
    """Swarm refuses a relative or missing bind source: `lab up` sets LAB_CONTROL_DIR
    (absolute) and makes the directory before it deploys."""
    env = ENV | {"LAB_CONTROL_DIR": "/srv/lab/.lab/control-swarm"}
    nginx = stack_file(compose(env))["services"]["nginx"]
    assert "/srv/lab/.lab/control-swarm:/run/lab-control:ro" in nginx["volumes"]
    for name in GATEWAYS:
        assert not any("lab-control" in str(v) for v in services[name]["volumes"])
