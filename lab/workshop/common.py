"""What every workshop tool needs: URLs, output folders, machine and lab metadata,
and the check that the lab is up before any load is sent."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeAlias

from lab.errors import LabError
from lab.routing import MODES
from lab.settings import ROOT, LabSettings
from lab.system.http import is_healthy
from lab.system.procfs import cpu_model

# The CLI's error policy (lab.cli.reports_lab_errors), handed to each tool's register().
Guard: TypeAlias = Callable[[Callable[..., None]], Callable[..., None]]


def mode_url(base: str, mode: str, path: str) -> str:
    """The fixed route of one mode: ``http://host:8080/wsgi/coffee?ms=100``."""
    return f"{base.rstrip('/')}/{mode}{path}"


def lab_url(cfg: LabSettings | None = None) -> str:
    """``LAB_URL`` if set, else nginx on ``127.0.0.1:$LAB_PORT``."""
    return (cfg or LabSettings.from_env()).tools_url


def require_lab(base: str) -> None:
    """LabError unless nginx and every mode's gateway answer at ``base`` (through nginx)."""
    down = [m for m in MODES if not is_healthy(mode_url(base, m, "/healthz"), timeout=3.0)]
    if not is_healthy(base.rstrip("/") + "/nginx-health", timeout=3.0):
        raise LabError(f"no lab answers at {base}: start it with `make up` (or set LAB_URL)")
    if down:
        raise LabError(
            f"the lab at {base} answers, but not its {', '.join(down)} gateway(s): "
            "see `lab status` and `lab logs`"
        )


def machine_info() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        # Other programs on the machine share its cores: the 1-minute load at the start.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


# How long an experiment waits for the load its predecessor left to die down.
SETTLE_DEADLINE_S: Final = 240.0


def settle_load(
    cores: int, deadline_s: float = SETTLE_DEADLINE_S, say: Callable[[str], None] | None = None
) -> float:
    """Wait until the 1-minute load average is at most ``cores`` (or the deadline has
    passed); the load then. The load average decays over about a minute, so right
    after a load run it still counts that run: an experiment that started at once
    would be judged on a busy machine (evidence.noise) for its predecessor's sake."""
    end = time.monotonic() + deadline_s
    load = os.getloadavg()[0]
    if load > cores and say is not None:
        limit = f"{deadline_s:.0f} s at most"
        say(f"load average {load:.1f}: waiting for it to fall to {cores} ({limit})")
    while load > cores and time.monotonic() < end:
        time.sleep(2.0)
        load = os.getloadavg()[0]
    return load


def lab_info(cfg: LabSettings | None = None) -> dict[str, Any]:
    """What the recorded run ran on: the target, the server behind each mode, the CPUs
    each gateway may use and the worker processes in force per mode (read from the
    running processes).

    Empty values when the lab at LAB_URL is not one this machine manages.
    """
    from lab.targets import FaultTarget, get_target
    from lab.targets.state import current_target_name

    cfg = cfg or LabSettings.from_env()
    try:
        target = get_target(current_target_name(cfg))
        status = target.status(cfg)
        cpus: dict[str, float] = {}
        if isinstance(target, FaultTarget):
            services = target.services(cfg)
            cpus = {m: services.cpus(f"gateway-{m}") for m in MODES}
    except (LabError, OSError, ValueError) as exc:
        return {"target": None, "servers": {}, "gateway_cpus": {}, "workers": {}, "note": str(exc)}
    return {
        "target": status["target"],
        # Present once the lab can swap servers (CONTRACT.md, "Servers behind each route").
        "servers": dict[str, Any](status).get("servers") or {},
        "gateway_cpus": cpus,
        "workers": status.get("workers", {}),
    }


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def default_out_dir() -> Path:
    return ROOT / "results" / timestamp()
