"""Static checks on compose.yaml, the Dockerfiles and .env.example: no engine needed.

What they pin: the four service names of CONTRACT.md, one published port
(nginx's, on loopback only), healthchecks everywhere with nginx waiting for
healthy gateways, equal limits for every mode, hardening (read-only root, no
root user, no capabilities) and settings that are documented.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.servers.registry import default_server
from lab.settings import LabSettings
from lab.targets.switching import gateway_env

ROOT = Path(__file__).resolve().parents[3]
GATEWAYS = ("gateway-cgi", "gateway-wsgi", "gateway-asgi")
SERVICES = ("nginx", *GATEWAYS)
DOCKERFILES = ("gateway/Dockerfile", "nginx/Dockerfile")
# ${NAME} or ${NAME:-default}, as compose interpolates them.
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::-(?P<default>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def default_of(value: object) -> str:
    """The value compose uses when no variable is set: ``${X:-8080}`` -> ``8080``."""
    return VARIABLE.sub(lambda m: m["default"] or "", str(value))


def test_services_are_the_contract_names(services: dict[str, dict[str, Any]]) -> None:
    assert sorted(services) == sorted(SERVICES)


def test_only_nginx_publishes_a_port_and_only_on_loopback(
    services: dict[str, dict[str, Any]],
) -> None:
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"nginx"}
    ports = services["nginx"]["ports"]
    assert [default_of(p) for p in ports] == ["127.0.0.1:8080:8080", "127.0.0.1:8443:8443"]
    assert all(str(port).startswith("127.0.0.1:${LAB_") for port in ports)


@pytest.mark.parametrize("name", GATEWAYS)
def test_gateways_are_reachable_only_inside_the_project(
    services: dict[str, dict[str, Any]], compose: dict[str, Any], name: str
) -> None:
    svc = services[name]
    assert [str(p) for p in svc["expose"]] == ["8000"]
    assert svc["networks"] == ["lab"]
    assert compose["networks"]["lab"]["internal"] is True


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]], name: str) -> None:
    check = services[name]["healthcheck"]
    assert check["test"][0] == "CMD"
    for key in ("interval", "timeout", "retries", "start_period"):
        assert key in check, key


def test_healthchecks_ask_the_right_endpoint(services: dict[str, dict[str, Any]]) -> None:
    assert "GET /nginx-health " in " ".join(services["nginx"]["healthcheck"]["test"])
    # A gateway's /healthz, asked in its server's protocol (HTTP, FastCGI or
    # uwsgi): `gateway health` reads GATEWAY_MODE, GATEWAY_SERVER and GATEWAY_PORT.
    for name in GATEWAYS:
        assert services[name]["healthcheck"]["test"] == ["CMD", "python", "-m", "gateway", "health"]


def test_nginx_waits_for_healthy_gateways(services: dict[str, dict[str, Any]]) -> None:
    depends = services["nginx"]["depends_on"]
    assert depends == {g: {"condition": "service_healthy"} for g in GATEWAYS}


def test_gateways_differ_only_in_mode_and_server(services: dict[str, dict[str, Any]]) -> None:
    def without_mode(svc: dict[str, Any]) -> dict[str, Any]:
        own = ("GATEWAY_MODE", "GATEWAY_SERVER", "GATEWAY_WORKERS")
        env = {k: v for k, v in svc["environment"].items() if k not in own}
        return {**svc, "environment": env}

    # Each server comes from LAB_SERVER_<MODE>, nginx's too, defaulting to the mode's first.
    for name in GATEWAYS:
        mode = services[name]["environment"]["GATEWAY_MODE"]
        chosen = f"${{LAB_SERVER_{mode.upper()}:-{default_server(mode)}}}"
        assert services[name]["environment"]["GATEWAY_SERVER"] == chosen
        assert services["nginx"]["environment"][f"LAB_SERVER_{mode.upper()}"] == chosen

    modes = {name: services[name]["environment"]["GATEWAY_MODE"] for name in GATEWAYS}
    assert modes == {"gateway-cgi": "cgi", "gateway-wsgi": "wsgi", "gateway-asgi": "asgi"}
    shapes = [without_mode(services[name]) for name in GATEWAYS]
    assert shapes[0] == shapes[1] == shapes[2]


def test_each_gateway_gets_the_settings_a_native_one_gets(
    services: dict[str, dict[str, Any]],
) -> None:
    # The cgi gateway takes no worker count: its concurrency is the script cap.
    for name in GATEWAYS:
        env = services[name]["environment"]
        expected = set(gateway_env(LabSettings(), env["GATEWAY_MODE"]))
        assert {k for k in env if k in expected or k == "GATEWAY_WORKERS"} == expected, name


def test_gateways_have_equal_limits_from_settings(services: dict[str, dict[str, Any]]) -> None:
    limits = {(services[g]["cpus"], services[g]["mem_limit"]) for g in GATEWAYS}
    assert limits == {("${LAB_GATEWAY_CPUS:-1.0}", "${LAB_GATEWAY_MEMORY:-512m}")}


def test_gateways_trust_forwarded_headers_only_from_the_lab_network(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    subnet = compose["networks"]["lab"]["ipam"]["config"][0]["subnet"]
    for name in GATEWAYS:
        assert services[name]["environment"]["GATEWAY_FORWARDED_ALLOW_IPS"] == subnet
    assert default_of(subnet) == "172.28.0.0/24"


@pytest.mark.parametrize("name", SERVICES)
def test_services_are_hardened(services: dict[str, dict[str, Any]], name: str) -> None:
    svc = services[name]
    assert svc["read_only"] is True
    assert any(str(t).startswith("/tmp:") for t in svc["tmpfs"])
    assert svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert svc["restart"] == "unless-stopped"
    assert svc["init"] is True


@pytest.mark.parametrize("name", SERVICES)
def test_images_are_named_and_built_on_the_chosen_base(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    svc = services[name]
    expected = "gateway-lab/nginx" if name == "nginx" else "gateway-lab/gateway"
    expected += ":${LAB_IMAGE_TAG:-latest}"
    assert svc["image"] == expected
    build = svc["build"]
    assert build["dockerfile"] in DOCKERFILES
    assert build["args"]["BASE_IMAGE"] == "${LAB_BASE_IMAGE:-debian:bookworm-slim}"
    assert build["secrets"] == ["ca"]


def test_ca_secret_defaults_to_a_file_every_machine_has(compose: dict[str, Any]) -> None:
    assert default_of(compose["secrets"]["ca"]["file"]) == "/dev/null"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfiles_run_as_non_root(dockerfile: str) -> None:
    users = re.findall(r"^USER\s+(\S+)", (ROOT / dockerfile).read_text(), re.MULTILINE)
    assert users, f"{dockerfile} sets no USER"
    assert users[-1] not in ("root", "0")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfiles_take_the_base_as_an_argument(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert "ARG BASE_IMAGE=debian:bookworm-slim" in text
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.MULTILINE)
    # A "# syntax=" line makes BuildKit pull a frontend image: no registry, no build.
    assert not re.search(r"^#\s*syntax=", text, re.MULTILINE)


def test_every_setting_is_documented_in_env_example() -> None:
    used = {m["name"] for m in VARIABLE.finditer((ROOT / "compose.yaml").read_text())}
    documented = set(
        re.findall(r"^([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    )
    assert used - documented == set()


def test_documented_defaults_match_compose() -> None:
    text = (ROOT / "compose.yaml").read_text()
    defaults = {m["name"]: m["default"] for m in VARIABLE.finditer(text) if m["default"]}
    example = dict(
        re.findall(r"^([A-Z0-9_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE)
    )
    assert {k: example[k] for k in defaults} == defaults


# -- the docker target's pure parts (lab/docker.py) ---------------------------------


@pytest.mark.parametrize(
    ("environ", "files", "expected"),
    [
        pytest.param({"LAB_CA_BUNDLE": "/a.pem"}, {"/a.pem"}, "/a.pem", id="lab-ca-bundle"),
        pytest.param({"PIP_CERT": "/p.pem"}, {"/p.pem"}, "/p.pem", id="pip-cert"),
        pytest.param(
            {"PIP_CERT": "/gone.pem"},
            {"/etc/ssl/certs/ca-certificates.crt"},
            "/etc/ssl/certs/ca-certificates.crt",
            id="system-bundle",
        ),
        pytest.param({}, set(), None, id="none-compose-default"),
    ],
)
def test_ca_bundle_choice(environ: dict[str, str], files: set[str], expected: str | None) -> None:
    from lab.targets.docker.compose import ca_bundle

    assert (
        ca_bundle(
            environ.get("LAB_CA_BUNDLE", ""), environ.get("PIP_CERT"), lambda p: str(p) in files
        )
        == expected
    )


def test_compose_env_carries_the_lab_settings() -> None:
    from lab.settings import LabSettings, Limits
    from lab.targets.docker.compose import compose_env

    cfg = LabSettings(port=9090, limits=Limits(proxy_read_timeout_s=7, cgi_max_scripts=3))
    env = compose_env(cfg, {"LAB_PORT": "1", "PATH": "/bin"}, base_image="lab-base:bookworm")
    assert env["LAB_PORT"] == "9090"
    assert env["LAB_PROXY_READ_TIMEOUT_S"] == "7"
    assert env["LAB_CGI_MAX_SCRIPTS"] == "3"
    assert env["LAB_BASE_IMAGE"] == "lab-base:bookworm"
    assert env["PATH"] == "/bin"


def test_compose_args_pin_project_and_file() -> None:
    from lab.targets.docker.compose import compose_args

    args = compose_args("ps")
    assert args[:2] == ["docker", "compose"]
    assert args[args.index("--project-name") + 1] == "gateway-lab"
    assert args[args.index("--file") + 1] == str(ROOT / "compose.yaml")
    assert args[-1] == "ps"


@pytest.mark.parametrize(
    ("mode", "replicas"),
    [
        pytest.param("bogus", 2, id="unknown-mode"),
        pytest.param("wsgi", 0, id="zero"),
        pytest.param("wsgi", 17, id="too-many"),
    ],
)
def test_scale_rejects_bad_requests(mode: str, replicas: int) -> None:
    from lab.errors import LabError
    from lab.targets.docker.compose import scale_args

    with pytest.raises(LabError):
        scale_args(mode, replicas)


def test_scale_touches_only_the_one_service() -> None:
    from lab.targets.docker.compose import scale_args

    args = scale_args("wsgi", 3)
    assert args[args.index("--scale") + 1] == "gateway-wsgi=3"
    assert "--no-recreate" in args and "--wait" in args


TOP = """\
gateway-lab-gateway-wsgi-1
UID PID PPID C STIME TTY TIME CMD
root 4100 4080 0 18:00 ? 00:00:00 /sbin/docker-init -- python -m gateway serve --mode wsgi
lab 4120 4100 0 18:00 ? 00:00:01 /opt/venv/bin/python -m gateway serve --mode wsgi
lab 4130 4120 0 18:00 ? 00:00:02 /opt/venv/bin/python -m gateway serve --mode wsgi
lab 4131 4120 0 18:00 ? 00:00:02 /opt/venv/bin/python -m gateway serve --mode wsgi
lab 4132 4120 0 18:00 ? 00:00:02 /opt/venv/bin/python -m gateway serve --mode wsgi

gateway-lab-gateway-wsgi-2
UID PID PPID C STIME TTY TIME CMD
root 5100 5080 0 18:01 ? 00:00:00 /sbin/docker-init -- python -m gateway serve --mode wsgi
lab 5120 5100 0 18:01 ? 00:00:01 /opt/venv/bin/python -m gateway serve --mode wsgi
lab 5130 5120 0 18:01 ? 00:00:02 /opt/venv/bin/python -m gateway serve --mode wsgi
lab 5140 5130 0 18:01 ? 00:00:00 /usr/bin/python3 /app/apps/breakfast/cgi_app.py
"""


def test_workers_are_counted_from_compose_top() -> None:
    """tini is not the master, a CGI script under a worker is not a worker."""
    from lab.targets.docker.compose import workers_from_top

    assert workers_from_top(TOP) == 4
    assert workers_from_top("") == 0


def test_service_health_needs_every_replica_healthy() -> None:
    from lab.targets.docker.compose import service_health

    ps = (
        "nginx running healthy\ngateway-cgi running healthy\n"
        "gateway-wsgi running healthy\ngateway-wsgi running unhealthy\n"
    )
    assert service_health(ps) == {
        "nginx": True,
        "gateway-cgi": True,
        "gateway-wsgi": False,
        "gateway-asgi": False,  # not listed: not running
    }


def dockerignore_allows(path: str) -> bool:
    """The build context's allow-list (.dockerignore: "*" then "!path" exceptions)."""
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    return any(path == entry or path.startswith(entry + "/") for entry in allowed)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_file_a_dockerfile_copies_is_in_the_build_context(dockerfile: str) -> None:
    """A COPY of a path .dockerignore leaves out fails only at build time, in CI."""
    sources = []
    for line in (ROOT / dockerfile).read_text().splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources += [w.rstrip("/") for w in words[1:-1] if not w.startswith("--")]
    assert sources, f"{dockerfile} copies nothing from the context"
    missing = [s for s in sources if not dockerignore_allows(s) or not (ROOT / s).exists()]
    assert not missing, f"{dockerfile} copies what the build context leaves out: {missing}"


def test_nginx_mounts_only_the_control_directory_read_only(
    services: dict[str, dict[str, Any]],
) -> None:
    """The dashboard's picker reaches the host through one directory (its unix socket):
    read-only, in nginx alone; no Docker socket in any container."""
    mounts = [str(v) for v in services["nginx"]["volumes"]]
    binds = [m for m in mounts if m.startswith(("$", ".", "/"))]
    assert binds == ["${LAB_CONTROL_DIR:-./.lab/control-docker}:/run/lab-control:ro"]
    for name, svc in services.items():
        assert not any("docker.sock" in str(v) for v in svc.get("volumes", [])), name
        if name != "nginx":
            assert not any(str(v).startswith(("$", ".", "/")) for v in svc.get("volumes", []))


def test_compose_env_points_the_mount_at_the_targets_control_directory(tmp_path: Path) -> None:
    from lab.nginx.render import control_socket
    from lab.settings import LabSettings
    from lab.targets.docker.compose import compose_env

    cfg = LabSettings(state_dir=tmp_path / "state")
    for target in ("docker", "swarm"):
        env = compose_env(cfg, {}, target=target)
        assert Path(env["LAB_CONTROL_DIR"]).is_absolute()
        assert Path(env["LAB_CONTROL_DIR"]) == control_socket(cfg.state_dir, target).parent
