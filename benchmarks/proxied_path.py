"""The proxied path against its anchors, side by side in one run.

On a running native lab (``LAB_PORT``), with wrk:

- each (mode, server)'s hello at 50 clients through nginx (``/<mode>/``) and
  straight at its gateway (its address in ``lab status``): what nginx costs.
  Every pair whose server speaks HTTP by default (``--servers`` picks others);
  the servers swap as ``lab server`` does, and each mode gets its own back at
  the end. fcgiwrap and the uwsgi server have no HTTP of their own: nginx is
  their only client, so they have no direct side;
- the lab's CGI runner against nginx + fcgiwrap running the *same*
  ``apps/breakfast/cgi_app.py`` with the same interpreter and ``-I -S``: p50 at
  1 client, successful req/s at 50 clients and how many were refused. The pair
  is started here, on spare loopback ports, and stopped at the end;
- ASGI / WSGI on ``/coffee?ms=100`` at 100 clients (waiting, not CPU);
- the exec floor (``/bin/true``, then the interpreter with nothing to run) and
  the script alone (``cgi_app.py`` with a CGI environment, no server): what a
  CGI request cannot go below.

Each pair is measured in alternating rounds (A, B, A, B, ...) and compared by
the medians, so a burst of load from elsewhere lands on both sides. The machine
and its load average are printed with the table: figures depend on both,
compare the ratios within one run.

    LAB_PORT=8080 .venv/bin/python benchmarks/proxied_path.py [--rounds 3] [--seconds 5]
        [--servers asgi/gunicorn,asgi/uvicorn]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.cgi.runner import PYTHON_FLAGS
from gateway.config import APPS_DIR
from lab.settings import LabSettings
from lab.system.procfs import cpu_model, group_cpu_seconds, group_switches
from lab.targets.state import load_state
from lab.workshop.loadgen import idle_probe, wait_idle
from lab.workshop.servers import Pair as ServerPair
from lab.workshop.servers import all_pairs, parse_servers, servers_restored
from lab.workshop.wrk import WrkResult, run_wrk

CGI_SCRIPT = APPS_DIR / "cgi_app.py"
Result = tuple[float, int, int]  # (the figure, refused or failed, requests) of one run
Measure = Callable[[str], Result]
ANCHOR_PORT_OFFSET = 70  # nginx + fcgiwrap listen on LAB_PORT + 70, away from the lab's ports


@dataclass(frozen=True)
class Side:
    """One measured figure of one side of a comparison, over its rounds."""

    values: tuple[float, ...]
    refused: int = 0  # non-2xx answers and socket errors, summed over the rounds
    requests: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else 0.0


def alternate(rounds: int, first: Callable[[], None], second: Callable[[], None]) -> None:
    """Run ``first, second, first, second, ...``: ``rounds`` times each."""
    for _ in range(rounds):
        first()
        second()


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def fcgiwrap_nginx_conf(*, state: Path, port: int, socket_path: Path, script: Path) -> str:
    """An nginx config serving ``script`` through fcgiwrap under ``/cgi/`` (pure).

    Shaped like the lab's own nginx for CGI: one location, SCRIPT_NAME the
    mount point, PATH_INFO the rest (RFC 3875 §4.1.13, §4.1.5), access log on.
    """
    return f"""daemon off;
worker_processes auto;
pid {state}/nginx.pid;
error_log {state}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {state}/body;
    fastcgi_temp_path {state}/fastcgi;
    proxy_temp_path {state}/proxy;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    access_log {state}/access.log;
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/cgi(/.*)?$ {{
            fastcgi_pass unix:{socket_path};
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param SERVER_NAME $server_name;
            fastcgi_param SERVER_PORT $server_port;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param REMOTE_PORT $remote_port;
            fastcgi_param HTTP_HOST $host;
            fastcgi_param SCRIPT_NAME /cgi;
            fastcgi_param PATH_INFO $1;
            fastcgi_param SCRIPT_FILENAME {script};
        }}
    }}
}}
"""


def wrapper_script(interpreter: str, script: Path) -> str:
    """An executable that runs ``script`` as the lab's runner does: same interpreter, same flags.

    fcgiwrap execs SCRIPT_FILENAME itself, and a ``#!`` line passes at most one
    argument, so a two-line shell wrapper ``exec``s the interpreter (one extra
    exec of /bin/sh, well under a millisecond: see the exec floor).
    """
    return f'#!/bin/sh\nexec {interpreter} {" ".join(PYTHON_FLAGS)} {script} "$@"\n'


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def fcgiwrap_anchor(port: int) -> Iterator[str]:
    """nginx + fcgiwrap on ``port``, serving cgi_app.py under /cgi/; yields the base URL."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    fcgiwrap = shutil.which("fcgiwrap") or "/usr/sbin/fcgiwrap"
    if not (Path(nginx).exists() and Path(fcgiwrap).exists()):
        sys.exit("nginx and fcgiwrap are needed: apt-get install nginx-light fcgiwrap")
    with tempfile.TemporaryDirectory(prefix="lab-anchor-") as tmp:
        state = Path(tmp)
        sock = state / "fcgiwrap.sock"
        wrapper = state / "cgi_app"
        wrapper.write_text(wrapper_script(sys.executable, CGI_SCRIPT), encoding="utf-8")
        wrapper.chmod(0o755)
        conf = state / "nginx.conf"
        conf.write_text(
            fcgiwrap_nginx_conf(state=state, port=port, socket_path=sock, script=wrapper),
            encoding="utf-8",
        )
        # fcgiwrap -c: its number of children, each running one script at a
        # time, as the lab's cap runs at most cgi_max_scripts at once.
        # Each in its own process group: fcgiwrap -c forks its children, which
        # a signal to the parent alone would leave running.
        procs = [
            subprocess.Popen(
                [fcgiwrap, "-c", "16", "-s", f"unix:{sock}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        ]
        try:
            deadline = time.monotonic() + 10
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            # Started as root, nginx's workers run as "nobody": let them connect.
            state.chmod(0o755)
            sock.chmod(0o666)
            procs.append(
                subprocess.Popen(
                    [nginx, "-c", str(conf), "-p", str(state), "-e", str(state / "error.log")],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            wait_port(port)
            yield f"http://127.0.0.1:{port}"
        finally:
            for proc in reversed(procs):
                os.killpg(proc.pid, signal.SIGTERM)  # the group this script started
                proc.wait(10)


def cgi_environment(path_info: str) -> dict[str, str]:
    """The meta-variables of a plain GET, for running the script alone."""
    return {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "/cgi",
        "PATH_INFO": path_info,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }


def exec_ms(cmd: Sequence[str], env: dict[str, str] | None, runs: int) -> float:
    """Median wall time of ``runs`` fork+exec+wait of ``cmd``, in milliseconds."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def good(result: WrkResult) -> tuple[float, int, int]:
    """(successful req/s, refused or failed, requests) of one wrk run."""
    summary = result.summary()
    return summary.rps, summary.errors, summary.requests


class Pair:
    """Two sides of one comparison, measured in alternating rounds."""

    def __init__(self, measure: Callable[[str], tuple[float, int, int]]) -> None:
        self.measure = measure
        self.values: dict[str, list[float]] = {}
        self.refused: dict[str, int] = {}
        self.requests: dict[str, int] = {}

    def run(self, rounds: int, a: str, b: str) -> tuple[Side, Side]:
        def one(url: str) -> Callable[[], None]:
            def go() -> None:
                value, refused, requests = self.measure(url)
                self.values.setdefault(url, []).append(value)
                self.refused[url] = self.refused.get(url, 0) + refused
                self.requests[url] = self.requests.get(url, 0) + requests

            return go

        alternate(rounds, one(a), one(b))
        return self.side(a), self.side(b)

    def side(self, url: str) -> Side:
        return Side(tuple(self.values[url]), self.refused[url], self.requests[url])


class CpuMeter:
    """CPU per request of nginx, of a gateway and of wrk itself, around each wrk run.

    nginx and each gateway run in their own process groups natively (the lab's
    run state names them); wrk is this script's child. On 2 cores the three
    share the CPUs, so at saturation the throughput is about cores / (CPU per
    request of all three): the through-nginx / direct ratio this predicts is
    printed beside the measured one, to say how much of the gap is CPU.

    Also counted: how often per request the gateway's threads were switched out
    while they could have run on (involuntary context switches), the price of
    sharing two cores with nginx and wrk, whom each answer wakes.
    """

    def __init__(self, cfg: LabSettings) -> None:
        self.cfg = cfg
        self.groups()  # a native lab, or a clear exit now
        self.samples: dict[tuple[ServerPair, str, str], list[float]] = {}

    def groups(self) -> dict[str, int]:
        """The process groups of the lab now (a server swap starts a new group)."""
        state = load_state(self.cfg)
        if state is None:
            sys.exit(f"no native run state in {self.cfg.state_dir}: the CPU meter needs it")
        return dict(state.groups)

    def measure(
        self, pair: ServerPair, url: str, run: Callable[[], tuple[float, int, int]]
    ) -> tuple[float, int, int]:
        """Run ``run`` (one wrk round at ``url``), kept as a round of ``pair`` (mode,
        server): every server of a mode is reached through nginx at one URL."""
        mode = pair[0]
        groups = self.groups()
        who = {"nginx": groups["nginx"], "gateway": groups[f"gateway-{mode}"]}
        before = {name: group_cpu_seconds(pgid) for name, pgid in who.items()}
        wrk_before = _children_cpu_seconds()
        switched_before = group_switches(who["gateway"])[1]
        value, refused, requests = run()
        used = {name: group_cpu_seconds(pgid) - before[name] for name, pgid in who.items()}
        used["wrk"] = _children_cpu_seconds() - wrk_before
        for name, seconds in used.items():
            self.samples.setdefault((pair, url, name), []).append(1e6 * seconds / max(requests, 1))
        switched = group_switches(who["gateway"])[1] - switched_before
        self.samples.setdefault((pair, url, "switched"), []).append(switched / max(requests, 1))
        return value, refused, requests

    def per_request(self, pair: ServerPair, url: str, name: str) -> float:
        """Median per request: microseconds of CPU, or for "switched" the gateway's
        involuntary context switches."""
        return statistics.median(self.rounds(pair, url, name))

    def rounds(self, pair: ServerPair, url: str, name: str) -> list[float]:
        return self.samples.get((pair, url, name), [0.0])


def _children_cpu_seconds() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def pair_name(pair: ServerPair) -> str:
    """How the tables name a (mode, server): ``ASGI/uvicorn``."""
    return f"{pair[0].upper()}/{pair[1]}"


def cpu_rows(
    meter: CpuMeter, pair: ServerPair, proxied: str, direct: str, measured: float
) -> list[str]:
    """Two rows of the CPU table for ``pair`` and the ratio the CPU-bound model predicts."""
    rows, totals, name = [], {}, pair_name(pair)
    for side, url in (("nginx", proxied), ("direct", direct)):
        names = ("nginx", "gateway", "wrk") if side == "nginx" else ("gateway", "wrk")
        parts = {part: meter.per_request(pair, url, part) for part in names}
        parts.setdefault("nginx", 0.0)  # nginx idles while wrk talks to the gateway
        # The median of each round's total (not the sum of the parts' medians, which
        # on a noisy machine can add up parts of different rounds).
        rounds = zip(*(meter.rounds(pair, url, part) for part in names), strict=False)
        totals[side] = statistics.median(sum(r) for r in rounds)
        rows.append(
            f"| {name} {side} | {parts['nginx']:.0f} | {parts['gateway']:.0f} "
            f"| {parts['wrk']:.0f} | {totals[side]:.0f} "
            f"| {meter.per_request(pair, url, 'switched'):.2f} |"
        )
    model = totals["direct"] / totals["nginx"] if totals["nginx"] else 0.0
    rows.append(f"| {name} model / measured | | | | {model:.2f} / {measured:.2f} | |")
    return rows


def direct_url(mode: str) -> str | None:
    """The HTTP address of the gateway serving ``mode`` now (``lab status``), None when
    its server speaks another protocol to nginx (FastCGI, uwsgi)."""
    from lab.targets import get_target, state

    cfg = LabSettings.from_env()
    gateways = get_target(state.current_target_name(cfg)).status(cfg).get("gateways") or {}
    address = gateways.get(mode)
    return f"{address.rstrip('/')}/" if isinstance(address, str) and address else None


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> str:
    cpus = len(os.sched_getaffinity(0))
    model = cpu_model() or "?"
    return f"{platform.node()}: {cpus} CPUs ({model}), {platform.system()} {platform.release()}"


def row(figure: str, a: Side, b: Side, unit: str, names: tuple[str, str]) -> str:
    refused = ""
    if a.refused or b.refused:
        refused = (
            f"   refused/failed: {names[0]} {a.refused}/{a.requests},"
            f" {names[1]} {b.refused}/{b.requests}"
        )
    return (
        f"| {figure} | {a.median:.1f} {unit} | {b.median:.1f} {unit} "
        f"| {ratio(a.median, b.median):.2f} |{refused}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per pair")
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration of each round")
    parser.add_argument(
        "--cgi-seconds",
        type=int,
        default=10,
        help="wrk duration of each CGI round at 50 clients (a loaded machine answers few in 5 s)",
    )
    parser.add_argument(
        "--servers",
        help="MODE/SERVER pairs for the through-nginx / direct rows (default: every pair)",
    )
    args = parser.parse_args()
    pairs = parse_servers(args.servers) if args.servers else all_pairs()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    port = int(os.environ.get("LAB_PORT", "8080"))
    lab = f"http://127.0.0.1:{port}"
    try:
        wait_port(port, 2)
    except RuntimeError:
        sys.exit(f"no lab on {lab}: LAB_PORT={port} LAB_TARGET=native .venv/bin/lab up")
    seconds, rounds = args.seconds, args.rounds

    # After each round, until the modes it loaded are idle again through nginx
    # (lab.workshop.loadgen.wait_idle): requests wrk abandoned can still wait in
    # the CGI queue, and the next round must not pay for them.
    def settle(*modes: str) -> None:
        for mode in modes:
            wait_idle(idle_probe(f"{lab}/{mode}", mode))

    def rps(connections: int, duration_s: int, *modes: str) -> Measure:
        def measure(url: str) -> Result:
            found = good(run_wrk(url, connections, duration_s))
            settle(*modes)
            return found

        return measure

    def p50(url: str) -> Result:
        result = run_wrk(url, 1, seconds)
        settle("cgi")
        _, refused, requests = good(result)
        return result.latency_ms.get(50, 0.0), refused, requests

    print(f"machine: {machine()}")
    print(f"python: {sys.executable} {' '.join(PYTHON_FLAGS)} ({platform.python_version()})")
    print(f"load average before: {load_average()}")
    print(
        f"wrk: {rounds} alternating rounds of {seconds} s per side"
        f" ({args.cgi_seconds} s for CGI at 50 clients), medians compared\n"
    )
    print("| figure | A | B | A / B |")
    print("|---|---|---|---|")
    names = ("A", "B")
    meter = CpuMeter(LabSettings.from_env())
    cpu_table: list[str] = []
    with servers_restored() as use:
        for pair in pairs:
            mode, server = pair
            use(mode, server)
            direct = direct_url(mode)
            if direct is None:
                what = "no HTTP of its own: nginx is its only client"
                print(f"| {pair_name(pair)} hello c50 | {what} | | |")
                continue
            proxied = f"{lab}/{mode}/"
            # Unmeasured first: a server just swapped in may still be starting
            # its other workers, and nginx has no idle connections to it yet.
            for url in (proxied, direct):
                run_wrk(url, 50, 1)
            settle(mode)
            measure = rps(50, args.cgi_seconds if mode == "cgi" else seconds, mode)

            def metered(url: str, pair: ServerPair = pair, measure: Measure = measure) -> Result:
                return meter.measure(pair, url, lambda: measure(url))

            a, b = Pair(metered).run(rounds, proxied, direct)
            figure = f"{pair_name(pair)} hello c50, nginx / direct"
            print(row(figure, a, b, "req/s", names), flush=True)
            cpu_table += cpu_rows(meter, pair, proxied, direct, ratio(a.median, b.median))

    with fcgiwrap_anchor(port + ANCHOR_PORT_OFFSET) as anchor:
        a, b = Pair(p50).run(rounds, f"{lab}/cgi/", f"{anchor}/cgi/")
        print(row("CGI p50 c1, lab / fcgiwrap", a, b, "ms", names), flush=True)
        a, b = Pair(rps(50, args.cgi_seconds, "cgi")).run(rounds, f"{lab}/cgi/", f"{anchor}/cgi/")
        print(row("CGI c50 ok req/s, lab / fcgiwrap", a, b, "req/s", names), flush=True)

    coffee = rps(100, seconds, "asgi", "wsgi")
    a, b = Pair(coffee).run(rounds, f"{lab}/asgi/coffee?ms=100", f"{lab}/wsgi/coffee?ms=100")
    print(row("coffee?ms=100 c100, ASGI / WSGI", a, b, "req/s", names), flush=True)

    print("\nCPU per request of the hello rounds (us, medians; CGI: the runner and its scripts):\n")
    print("| path | nginx | gateway | wrk | total | gateway switched out per request |")
    print("|---|---|---|---|---|---|")
    print("\n".join(cpu_table))
    print(
        "\nmodel: both sides CPU-bound on the same cores, so nginx / direct = direct's total"
        " / through nginx's total"
    )

    env = cgi_environment("/")
    floor = exec_ms(["/bin/true"], env, 50)
    bare = exec_ms([sys.executable, *PYTHON_FLAGS, "-c", "pass"], env, 30)
    alone = exec_ms([sys.executable, *PYTHON_FLAGS, str(CGI_SCRIPT)], env, 30)
    flags = " ".join(PYTHON_FLAGS)
    print(f"\nexec floor: /bin/true {floor:.2f} ms, python {flags} -c pass {bare:.1f} ms")
    print(f"the script alone (cgi_app.py, GET /): {alone:.1f} ms")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
