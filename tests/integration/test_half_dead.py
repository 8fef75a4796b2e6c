"""A half-dead lab: nginx's master process is killed while the
gateways run (natively its workers even keep answering). `lab status` must say so
per service, `lab switch` must fail with a `lab:` line and leave nothing written
for the next start, and `lab up` must bring the lab back rather than call it
running."""

from __future__ import annotations

import json

from lab.settings import LabSettings
from lab.system.http import wait_until
from lab.system.procfs import rows_from_json
from lab.targets.switching import MASTER_TITLE
from tests.support import faults
from tests.support.lab import Lab, run_lab


def status() -> dict[str, object]:
    done = run_lab("status", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    info: dict[str, object] = json.loads(done.stdout)
    return info


def test_a_killed_nginx_master_is_noticed_and_up_brings_the_lab_back(lab: Lab) -> None:
    assert status()["running"] is True
    before = status()["active_mode"]
    services = faults.services(LabSettings.from_env(), lab.target)
    if lab.target == "docker":
        # In its container nginx's master is the main process: killing it ends the
        # container (no orphaned workers answer there), as `docker kill` does.
        services.kill("nginx")
    else:
        rows = rows_from_json(services.processes("nginx"))
        master = next(p.pid for p in rows if p.title.startswith(MASTER_TITLE))
        services.kill_pid("nginx", master)

    def nginx_down() -> bool:
        info = status()
        return info["running"] is False and dict(info["services"])["nginx"] is False  # type: ignore[call-overload]

    assert wait_until(nginx_down, 30, interval_s=0.5), status()
    gateways = {s: ok for s, ok in dict(status()["services"]).items() if s != "nginx"}  # type: ignore[call-overload]
    assert gateways == {"gateway-cgi": True, "gateway-wsgi": True, "gateway-asgi": True}

    other = "cgi" if before != "cgi" else "asgi"
    switched = run_lab("switch", other, timeout=120)
    assert switched.returncode == 1, switched.stdout
    assert switched.stderr.startswith("lab: ") and "Traceback" not in switched.stderr

    up = run_lab("up", timeout=900)
    assert up.returncode == 0, up.stderr
    assert "already" not in up.stdout + up.stderr
    info = status()
    assert info["running"] is True, info
    assert info["active_mode"] == before  # the failed switch left nothing behind
