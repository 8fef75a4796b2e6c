"""Where a CGI request's time goes, measured where the scripts run.

Standard library only: natively it runs with the gateway's interpreter; under
Docker the same text runs inside the CGI gateway's container (``python -c``, as
``lab.system.procfs`` does), so each part is measured with the interpreter,
the files and the CPU limit the runner's scripts get.

Each part is timed ``rounds`` times, one after the other:

* ``spawn_ms``: process creation alone, a non-Python program (``/bin/true``);
* ``interpreter_ms``: an empty interpreter, the real binary (symlinks resolved)
  with the runner's flags ``-I -S``;
* ``runner_interpreter_ms``: the same through the path the runner runs
  (a venv's ``python`` reads ``pyvenv.cfg`` first);
* ``imports_ms``: the demo script's imports, from ``-X importtime`` (the
  cumulative time of each top-level import);
* ``script_ms``: the whole script answering ``GET /`` as the runner runs it;
* ``major_faults``: major page faults of all those child processes (pages that
  had to come from disk; 0 means everything was already in memory).

Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

FLAGS = ("-I", "-S")  # gateway.cgi.runner.PYTHON_FLAGS


def timed(argv: list[str], rounds: int, env: dict[str, str] | None = None) -> list[float]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, check=True, timeout=60,
        )  # fmt: skip
        times.append((time.perf_counter() - t0) * 1000)
    return times


def import_ms(python: str, script: str, env: dict[str, str]) -> float:
    """Sum of the cumulative import times of the script's top-level imports."""
    proc = subprocess.run(
        [python, *FLAGS, "-X", "importtime", script], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True, timeout=60,
    )  # fmt: skip
    total_us = 0
    for line in proc.stderr.splitlines():
        # "import time:   self [us] | cumulative | imported package"; nested ones are indented
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        if parts[2].startswith("  "):  # nested: already in its parent's cumulative
            continue
        total_us += int(parts[1])
    return total_us / 1000


def measure(script: str, rounds: int) -> dict[str, object]:
    python = sys.executable
    real = os.path.realpath(python)
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "/cgi",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "cgi-probe",
        "REMOTE_ADDR": "127.0.0.1",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    faults_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_majflt
    result: dict[str, object] = {
        "python": python,
        "python_real": real,
        "spawn_ms": timed(["/bin/true"], rounds),
        "interpreter_ms": timed([real, *FLAGS, "-c", "pass"], rounds),
        "runner_interpreter_ms": timed([python, *FLAGS, "-c", "pass"], rounds),
        "imports_ms": [import_ms(python, script, env) for _ in range(rounds)],
        "script_ms": timed([python, *FLAGS, script], rounds, env),
    }
    result["major_faults"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_majflt - faults_before
    result["rounds"] = rounds
    return result


def main(argv: list[str]) -> int:
    script, rounds = argv[0], int(argv[1]) if len(argv) > 1 else 20
    print(json.dumps(measure(script, rounds)))
    return 0


def source() -> str:
    """This module's text, to run with ``python -c`` where the lab is not installed."""
    with open(__file__, encoding="utf-8") as fh:
        return fh.read()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
