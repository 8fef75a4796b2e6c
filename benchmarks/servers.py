"""Every (mode, server) pair through nginx, measured in one run on a running lab.

For each pair: `lab server MODE SERVER`, then with wrk through nginx
(``/<mode>/`` and ``/<mode>/coffee?ms=100``):

- hello req/s at 50 connections, and its p50 at 1 connection;
- ``/coffee?ms=100`` req/s at 100 connections (IO-bound: waiting, not CPU).

Every mode goes back to its default server at the end. Figures depend on the
machine and on whatever else runs on it: compare the ratios within one run.

    LAB_PORT=8080 .venv/bin/python benchmarks/servers.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from gateway.servers.registry import SERVERS, default_server
from lab.workshop.wrk import WrkResult, run_wrk

LAB = [sys.executable, "-m", "lab.cli"]


def use(mode: str, server: str) -> None:
    done = subprocess.run([*LAB, "server", mode, server], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"`lab server {mode} {server}` failed: {done.stderr.strip()}")


def checked(result: WrkResult, what: str) -> WrkResult:
    summary = result.summary()
    if summary.errors:
        print(f"  ({what}: {summary.errors} errors of {summary.requests})", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{os.environ.get('LAB_PORT', '8080')}"
    rows = []
    try:
        for mode, names in SERVERS.items():
            for server in names:
                use(mode, server)
                print(f"{mode}/{server} ...", file=sys.stderr, flush=True)
                hello = checked(run_wrk(f"{url}/{mode}/", 50, args.seconds), "hello c50")
                one = checked(run_wrk(f"{url}/{mode}/", 1, args.seconds), "hello c1")
                io = checked(
                    run_wrk(f"{url}/{mode}/coffee?ms=100", 100, args.seconds), "coffee c100"
                )
                rows.append(
                    (
                        mode,
                        server,
                        hello.summary().rps,
                        one.latency_ms.get(50, 0.0),
                        io.summary().rps,
                    )
                )
    finally:
        for mode in SERVERS:
            use(mode, default_server(mode))
    print("| mode | server | hello req/s (c50) | hello p50 ms (c1) | /coffee?ms=100 req/s (c100) |")
    print("|---|---|---|---|---|")
    for mode, server, rps, p50, io_rps in rows:
        print(f"| {mode} | {server} | {rps:.0f} | {p50:.2f} | {io_rps:.0f} |")


if __name__ == "__main__":
    main()
