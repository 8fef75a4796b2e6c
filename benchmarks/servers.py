"""Every (mode, server) pair through nginx, measured in one run on a running lab.

For each pair (``lab server MODE SERVER``, as ``lab bench --servers`` swaps it),
wrk through nginx on the mode's fixed route:

- hello (``/<mode>/``) req/s at 50 connections, and its p50 at 1 connection;
- ``/<mode>/coffee?ms=100`` req/s at 100 connections (IO-bound: waiting, not CPU).

At the end every mode gets back the server it had before, whatever happened
(``lab.workshop.servers.servers_restored``, Ctrl-C included). The machine, its
load and the command come first, then the Markdown table; answers other than
2xx/3xx are counted beside the figures. Figures depend on the machine and on
whatever else runs on it: compare the rows of one run with each other.

    LAB_TARGET=native .venv/bin/lab up
    .venv/bin/python benchmarks/servers.py [--seconds 5] [--servers wsgi/sync,wsgi/gthread]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from lab.errors import LabError, UsageError
from lab.settings import LabSettings
from lab.workshop.common import machine_info, require_lab
from lab.workshop.servers import Pair, all_pairs, parse_servers, servers_restored

HELLO_CLIENTS: Final = 50
IO_CLIENTS: Final = 100
IO_PATH: Final = "/coffee?ms=100"
COLUMNS: Final = (
    "mode",
    "server",
    f"hello req/s (c{HELLO_CLIENTS})",
    "hello p50 ms (c1)",
    f"{IO_PATH} req/s (c{IO_CLIENTS})",
    "errors",
)


@dataclass(frozen=True)
class Row:
    mode: str
    server: str
    hello_rps: float
    hello_p50_ms: float
    io_rps: float
    errors: str  # "" or e.g. "hello c50: 3 of 1200"


def table(rows: Sequence[Row]) -> str:
    """The Markdown table of docs/results/servers.md (pure)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r.mode} | {r.server} | {r.hello_rps:.0f} | {r.hello_p50_ms:.2f} "
            f"| {r.io_rps:.0f} | {r.errors or '0'} |"
        )
    return "\n".join(lines)


def measure(url: str, mode: str, server: str, seconds: float) -> Row:
    from lab.workshop.loadgen import idle_probe, wait_idle
    from lab.workshop.wrk import run_wrk

    errors: list[str] = []

    def run(path: str, clients: int, what: str) -> tuple[float, float]:
        # Requests a crowd left queued (CGI scripts waiting their turn) drain first,
        # as between the cells of `lab bench`.
        wait_idle(idle_probe(f"{url}/{mode}", mode))
        summary = (result := run_wrk(f"{url}/{mode}{path}", clients, seconds)).summary()
        if summary.errors:
            errors.append(f"{what}: {summary.errors} of {summary.requests}")
        return summary.rps, result.latency_ms.get(50, 0.0)

    # One client first: its p50 must not wait behind the crowd of the other runs.
    _, p50 = run("/", 1, "hello c1")
    hello_rps, _ = run("/", HELLO_CLIENTS, f"hello c{HELLO_CLIENTS}")
    io_rps, _ = run(IO_PATH, IO_CLIENTS, f"coffee c{IO_CLIENTS}")
    return Row(mode, server, hello_rps, p50, io_rps, "; ".join(errors))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run (default 5)")
    parser.add_argument("--servers", help="MODE/SERVER pairs (default: every pair)")
    args = parser.parse_args(argv)
    try:
        pairs: list[Pair] = parse_servers(args.servers) if args.servers else all_pairs()
        if not args.seconds > 0:
            raise UsageError(f"--seconds must be positive, not {args.seconds:g}")
        from lab.workshop import wrk

        if not wrk.available():
            raise LabError("wrk is not installed (apt-get install wrk)")
        url = LabSettings.from_env().url
        require_lab(url)
        machine = machine_info()
        print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {url}, {args.seconds:g} s per wrk run")
        print(
            f"# {machine['cores']} cores ({machine['cpu']}), load average "
            f"{machine['load_average_1m']} at the start",
            flush=True,
        )
        rows = []
        with servers_restored() as use:
            for mode, server in pairs:
                print(f"{mode}/{server} ...", file=sys.stderr, flush=True)
                use(mode, server)
                rows.append(measure(url, mode, server, args.seconds))
    except LabError as exc:
        print(f"servers.py: {exc}", file=sys.stderr)
        return exc.exit_code
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
