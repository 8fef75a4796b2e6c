"""The swarm stack file, rendered from compose.yaml: one source of truth for both engines.

Why a renderer and not a second file (or an override): ``docker stack deploy``
refuses or silently ignores much of what compose.yaml needs under compose
(``mem_limit``, ``cpus``, ``pids_limit``, the top-level ``name``, ``depends_on``
with health conditions, the build secret, the short ``tmpfs`` syntax,
``127.0.0.1:`` in ``ports``), and an override file can add keys but not take
them away portably (compose's ``!reset`` is unknown to ``docker stack``). So
compose.yaml stays the only description of the services, and this module
translates it, pure and unit-tested (tests/unit/lab/test_stack.py): every
key is either carried over, moved to where swarm reads it, or dropped with the
reason written beside it in ``DROPPED``. A new key in compose.yaml that is in
neither list makes ``stack_file`` fail, so nothing is lost quietly.

What swarm adds: ``deploy`` (replicas spread over nodes, limits, restart
policy, start-first updates), overlay networks, and ``hostname`` per task so
``X-Gateway-Host`` names the node and the replica that served a request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from lab.errors import LabError
from lab.routing import MODES

# ${NAME}, ${NAME:-default}, ${NAME-default} and $$ (a literal $), as compose interpolates.
_VARIABLE: Final = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z0-9_]+)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
)
GATEWAYS: Final = {mode: f"gateway-{mode}" for mode in MODES}
NGINX: Final = "nginx"
# compose.yaml's top-level keys swarm does not read.
TOP_DROPPED: Final = {
    "name": "the stack's name is the argument of `docker stack deploy` (LAB_STACK)",
    "secrets": "the CA secret is for the image build only; `lab up` builds before it deploys",
}
# Service keys carried over as they are (swarm reads them; docker 20.10+ for cap_drop).
CARRIED: Final = (
    "image", "environment", "healthcheck", "init", "read_only", "cap_drop",
    "networks", "volumes", "logging", "expose",
)  # fmt: skip
# Service keys swarm refuses or ignores, and where their meaning went.
DROPPED: Final = {
    "build": "swarm does not build: `lab up` builds the images (and pushes them to LAB_REGISTRY)",
    "restart": "deploy.restart_policy",
    "cpus": "deploy.resources.limits.cpus",
    "mem_limit": "deploy.resources.limits.memory",
    "pids_limit": "deploy.resources.limits.pids",
    "tmpfs": "a tmpfs mount in the long volume syntax (swarm ignores the short one)",
    "ports": "published in the long syntax; swarm has no host address (every interface)",
    "depends_on": "nginx waits until the gateways' names resolve (LAB_WAIT_FOR_GATEWAYS)",
    # Not enforced by swarm services on this engine (20.10): the images run as a
    # non-root USER with no capabilities (cap_drop: ALL), which swarm does enforce.
    "security_opt": "not supported by swarm services (no-new-privileges is not enforced)",
}
STACK_VERSION: Final = "3.9"
# How long nginx waits at start for the gateways' names to resolve (seconds).
WAIT_FOR_GATEWAYS_S: Final = 120
# Spread the replicas of a gateway over nodes by this node label (`docker node
# update --label-add lab.zone=a NODE`); nodes without it form one group, and
# within a group the scheduler spreads tasks over nodes anyway.
SPREAD_LABEL: Final = "node.labels.lab.zone"


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Every string in ``value`` with ``${NAME:-default}`` replaced from ``env``, as compose does
    (``:-`` when unset or empty, ``-`` when unset only; ``$$`` is a literal ``$``)."""
    if isinstance(value, str):

        def one(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            got = env.get(m["name"])
            if m["op"] == ":-" and not got:
                return m["default"]
            if m["op"] == "-" and got is None:
                return m["default"]
            return got or ""

        return _VARIABLE.sub(one, value)
    if isinstance(value, Mapping):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    return value


def _tmpfs_mount(entry: str) -> dict[str, Any]:
    """``/tmp:size=64m,mode=1777`` -> a tmpfs mount in the long syntax (size in bytes)."""
    target, _, options = entry.partition(":")
    mount: dict[str, Any] = {"type": "tmpfs", "target": target}
    for option in filter(None, options.split(",")):
        key, _, raw = option.partition("=")
        if key == "size":
            mount["tmpfs"] = {"size": size_bytes(raw)}
        # mode: Docker's tmpfs default is 1777, which is what compose.yaml asks for.
        elif key != "mode" or raw.lstrip("0") != "1777":
            raise LabError(f"tmpfs option {option!r} has no swarm equivalent here")
    return mount


def size_bytes(text: str) -> int:
    """``64m`` -> 67108864 (Docker's units: b, k, m, g, powers of 1024; ``mb`` too)."""
    m = re.fullmatch(r"(\d+)\s*([bkmg]?)b?", text.strip().lower())
    if m is None:
        raise LabError(f"not a size: {text!r}")
    return int(m[1]) * {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m[2]]


def _port(entry: str) -> dict[str, Any]:
    """``127.0.0.1:8380:8080`` -> the long syntax swarm reads, published in ``host`` mode.

    Swarm has no host address: the port is open on every interface. ``host``
    mode opens it on the node that runs nginx only (a manager, see placement),
    as ``docker run -p`` does, and nginx sees the client's own address. The
    routing mesh (``ingress``: the port on every node) needs IPVS in the
    kernel, which not every machine has (the CI machines do not).
    """
    parts = entry.split(":")
    published, target = parts[-2], parts[-1]
    return {"target": int(target), "published": int(published), "protocol": "tcp", "mode": "host"}


def _service(name: str, svc: Mapping[str, Any], replicas: int, registry: str) -> dict[str, Any]:
    unknown = set(svc) - set(CARRIED) - set(DROPPED)
    if unknown:
        raise LabError(f"compose.yaml: {name} has keys the swarm stack does not handle: {unknown}")
    out: dict[str, Any] = {k: svc[k] for k in CARRIED if k in svc}
    if registry:
        out["image"] = f"{registry}/{svc['image']}"
    out["volumes"] = [*svc.get("volumes", []), *(_tmpfs_mount(t) for t in svc.get("tmpfs", []))]
    limits: dict[str, Any] = {}
    if "cpus" in svc:
        limits["cpus"] = str(svc["cpus"])
    if "mem_limit" in svc:
        limits["memory"] = str(svc["mem_limit"])
    if "pids_limit" in svc:
        limits["pids"] = int(svc["pids_limit"])
    deploy: dict[str, Any] = {
        "replicas": replicas,
        # `restart: unless-stopped`; `lab` stops a service by scaling it to 0.
        "restart_policy": {"condition": "any", "delay": "1s"},
        # A new task (a new image, setting or server) is healthy before the old one stops.
        "update_config": {"parallelism": 1, "order": "start-first", "failure_action": "rollback"},
    }
    if limits:
        deploy["resources"] = {"limits": limits}
    if name == NGINX:
        # nginx keeps its state and the lab's CA in local volumes: on a manager,
        # where `lab` runs and copies the CA out.
        deploy["placement"] = {"constraints": ["node.role == manager"]}
        # Its ports are published on the node (host mode): the old task must let go first.
        deploy["update_config"] = {**deploy["update_config"], "order": "stop-first"}
        out["ports"] = [_port(str(p)) for p in svc.get("ports", [])]
        out["environment"] = {
            **svc["environment"],
            "LAB_WAIT_FOR_GATEWAYS": str(WAIT_FOR_GATEWAYS_S),
        }
        out["hostname"] = "{{.Node.Hostname}}-nginx"
    else:
        # dnsrr: the service name resolves to every task's address, as a compose
        # service name does, so nginx balances per request over the replicas and
        # keeps upstream keepalive connections to each (README: "Swarm").
        deploy["endpoint_mode"] = "dnsrr"
        deploy["placement"] = {"preferences": [{"spread": SPREAD_LABEL}]}
        # X-Gateway-Host: which node, which replica (the task's slot).
        out["hostname"] = "{{.Node.Hostname}}-" + name.removeprefix("gateway-") + "-{{.Task.Slot}}"
    out["deploy"] = deploy
    out["stop_grace_period"] = "10s"
    return out


def stack_file(
    compose: Mapping[str, Any],
    replicas: Mapping[str, int] | None = None,
    registry: str = "",
) -> dict[str, Any]:
    """The stack file for ``docker stack deploy`` from compose.yaml as loaded (interpolated).

    ``replicas``: mode -> gateway replicas (default 1 each); ``registry``: the
    prefix of both images where every node pulls them (LAB_REGISTRY).
    """
    counts = {mode: 1 for mode in MODES} | dict(replicas or {})
    top = {k for k in compose if not str(k).startswith("x-")}
    unknown = top - {"services", "networks", "volumes"} - set(TOP_DROPPED)
    if unknown:
        raise LabError(
            f"compose.yaml has top-level keys the swarm stack does not handle: {unknown}"
        )
    services = {
        name: _service(
            name, svc, counts[name.removeprefix("gateway-")] if name != NGINX else 1, registry
        )
        for name, svc in compose["services"].items()
    }
    networks: dict[str, Any] = {}
    for name, net in (compose.get("networks") or {}).items():
        # Overlay: the same network on every node. Internal: no route out, as under compose.
        networks[name] = {"driver": "overlay", **(net or {})}
    return {
        "version": STACK_VERSION,
        "services": services,
        "networks": networks,
        "volumes": dict(compose.get("volumes") or {}),
    }


# -- parsers for what `docker` prints about a stack ----------------------------------


def _compose_service(name: str, stack: str) -> str | None:
    """``<stack>_gateway-wsgi`` -> ``gateway-wsgi``; None for another stack's service."""
    prefix = f"{stack}_"
    return name[len(prefix) :] if name.startswith(prefix) else None


def parse_service_ls(text: str, stack: str) -> dict[str, tuple[bool, int]]:
    """``docker service ls --format "{{.Name}} {{.Replicas}}"`` -> per service (all its
    replicas run, how many run). Swarm counts a task with a healthcheck as running
    only once it has passed. Services not listed: (False, 0)."""
    found = {name: (False, 0) for name in (NGINX, *GATEWAYS.values())}
    for line in text.splitlines():
        parts = line.split()
        service = _compose_service(parts[0], stack) if len(parts) >= 2 else None
        running, _, desired = parts[1].partition("/") if service else ("", "", "")
        if service in found and running.isdigit() and desired.isdigit():
            found[service] = (int(desired) > 0 and running == desired, int(running))
    return found


def parse_tasks(text: str, stack: str) -> dict[str, list[dict[str, object]]]:
    """``docker stack ps --format "{{.Name}}\\t{{.Node}}\\t{{.CurrentState}}"`` -> per service,
    each task's slot, node and state ("Running 2 minutes ago"), lowest slot first."""
    found: dict[str, list[dict[str, object]]] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        name, _, slot = parts[0].strip().rpartition(".")
        service = _compose_service(name, stack)
        if service is None or not slot.isdigit():
            continue
        task = {"slot": int(slot), "node": parts[1].strip(), "state": parts[2].strip()}
        found.setdefault(service, []).append(task)
    return {s: sorted(tasks, key=lambda t: str(t["slot"]).zfill(9)) for s, tasks in found.items()}


def parse_task_listing(text: str) -> list[tuple[int, str, str]]:
    """``docker inspect`` of tasks, lines "SLOT ID ADDRESS/PREFIX" -> (slot, id, address),
    lowest slot first (a task on no network yet is left out)."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit():
            rows.append((int(parts[0]), parts[1], parts[2].partition("/")[0]))
    return sorted(rows)


def next_stack(stack: Mapping[str, Any], stack_name: str, mode: str, server: str) -> dict[str, Any]:
    """A one-service stack: ``mode``'s gateway as ``stack`` runs it, but served by ``server``,
    on the running stack's lab network (``lab server``'s blue-green swap on swarm)."""
    # Its own name (gateway-wsgi-next): sharing the running service's name on one
    # network would put both in that name's DNS answer, and nginx pins to it by name.
    service = dict(stack["services"][GATEWAYS[mode]])
    service["environment"] = {**service["environment"], "GATEWAY_SERVER": server}
    service["hostname"] = "{{.Node.Hostname}}-" + f"{mode}-{server}"
    service["deploy"] = {**service["deploy"], "replicas": 1}
    return {
        "version": STACK_VERSION,
        "services": {f"{GATEWAYS[mode]}-next": service},
        # Services of another stack may join an overlay network by its name.
        "networks": {"lab": {"external": True, "name": f"{stack_name}_lab"}},
    }
