"""wrk, the C load generator, as a throughput engine that still reads the trace.

wrk's Lua hooks see each response (``response(status, headers, body)``), so a
small script counts statuses and ``X-Gateway-Pid`` values per wrk thread and
``done`` prints one JSON line with the latency percentiles, errors, statuses
and pids. That gives the bench wrk's speed plus the distinct-pid column; runs
that need every request's start and end use ``lab.loadgen`` instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway import trace
from lab.errors import LabError
from lab.workshop.analysis import Summary

RESULT_MARKER: Final = "LAB-RESULT "
WRK_THREADS: Final = 2  # one per core on the lab machine; wrk needs threads <= connections

# Each wrk thread has its own Lua state: per-thread tables, merged in done()
# through thread:get (which copies tables between states).
LUA_SCRIPT: Final = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) pids = {}; statuses = {} end
function response(status, headers, body)
  for name, value in pairs(headers) do
    if string.lower(name) == "@PID@" then pids[value] = (pids[value] or 0) + 1 end
  end
  statuses[tostring(status)] = (statuses[tostring(status)] or 0) + 1
end
local function object(t)
  local parts = {}
  for k, v in pairs(t) do table.insert(parts, string.format('"%s": %d', k, v)) end
  return "{" .. table.concat(parts, ", ") .. "}"
end
function done(summary, latency, requests)
  local pids_all, statuses_all = {}, {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("pids")) do pids_all[k] = (pids_all[k] or 0) + v end
    for k, v in pairs(t:get("statuses")) do statuses_all[k] = (statuses_all[k] or 0) + v end
  end
  local e = summary.errors
  local pct = {}
  for _, p in ipairs({50, 95, 99}) do
    table.insert(pct, string.format('"%d": %d', p, latency:percentile(p)))
  end
  io.write("LAB-RESULT ", string.format(
    '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d}, "latency_us": {%s}, "pids": %s, "statuses": %s}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(pct, ", "), object(pids_all), object(statuses_all)))
end
""".replace("@PID@", trace.PID.lower())


class WrkError(LabError):
    """wrk is missing, failed, or printed no result line."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    socket_errors: int  # connect, read, write errors and timeouts
    latency_ms: dict[int, float]  # percentile -> ms
    pids: dict[int, int]  # pid -> requests it answered
    statuses: dict[int, int]  # HTTP status -> count

    def summary(self) -> Summary:
        bad_status = sum(n for code, n in self.statuses.items() if code >= 400)
        return Summary(
            requests=self.requests,
            errors=self.socket_errors + bad_status,
            wall_s=self.duration_s,
            rps=(self.requests - bad_status) / self.duration_s if self.duration_s > 0 else 0.0,
            p50_ms=self.latency_ms.get(50, 0.0),
            p95_ms=self.latency_ms.get(95, 0.0),
            p99_ms=self.latency_ms.get(99, 0.0),
            distinct_pids=len(self.pids),
            max_overlap=None,
        )


def parse_output(stdout: str) -> WrkResult:
    """The result line our Lua ``done`` hook printed, as a WrkResult."""
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            data: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            break
    else:
        raise WrkError(f"wrk printed no result line:\n{stdout.strip()[-500:]}")
    errors = data["errors"]
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=int(data["duration_us"]) / 1e6,
        socket_errors=sum(int(errors[k]) for k in ("connect", "read", "write", "timeout")),
        latency_ms={int(p): us / 1000 for p, us in data["latency_us"].items()},
        pids={int(pid): int(n) for pid, n in data["pids"].items()},
        statuses={int(code): int(n) for code, n in data["statuses"].items()},
    )


def build_command(
    wrk: str,
    url: str,
    concurrency: int,
    duration_s: float,
    script: Path,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """The wrk command line (pure: ``wrk`` is the binary's path)."""
    cmd = [
        wrk,
        f"--threads={min(WRK_THREADS, concurrency)}",
        f"--connections={concurrency}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={round(timeout_s)}s",
        f"--script={script}",
    ]
    for name, value in (headers or {}).items():
        cmd += ["--header", f"{name}: {value}"]
    return [*cmd, url]


def available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    concurrency: int,
    duration_s: float,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> WrkResult:
    """Run wrk for ``duration_s`` (whole seconds, at least 1) with ``concurrency`` connections."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkError("wrk is not installed (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="lab-wrk-") as tmp:
        script = Path(tmp) / "trace.lua"
        script.write_text(LUA_SCRIPT, encoding="utf-8")
        cmd = build_command(wrk, url, concurrency, duration_s, script, headers, timeout_s)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 30, check=False
        )
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}: {proc.stderr.strip() or proc.stdout[-500:]}")
    return parse_output(proc.stdout)
