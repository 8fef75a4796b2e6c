"""The pure parts of benchmarks/proxied_path.py: round order, medians, the anchor's config,
the CPU table."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.proxied_path import (
    CpuMeter,
    Side,
    alternate,
    cpu_rows,
    fcgiwrap_nginx_conf,
    ratio,
    row,
    wrapper_script,
)
from gateway.cgi.runner import PYTHON_FLAGS


def test_rounds_alternate() -> None:
    order: list[str] = []
    alternate(3, lambda: order.append("A"), lambda: order.append("B"))
    assert order == ["A", "B", "A", "B", "A", "B"]


def test_sides_compare_by_median() -> None:
    a, b = Side((10.0, 100.0, 12.0)), Side((20.0, 24.0, 1.0))
    assert a.median == 12.0 and b.median == 20.0
    assert ratio(a.median, b.median) == 0.6
    assert math.isnan(ratio(1.0, 0.0))
    line = row("x", a, b, "req/s", ("A", "B"))
    assert "| 0.60 |" in line and "refused" not in line
    assert "refused/failed: A 0/0, B 3/9" in row("x", a, Side((1.0,), 3, 9), "ms", ("A", "B"))


def test_anchor_runs_the_same_script_the_same_way() -> None:
    script = Path("/srv/apps/cgi_app.py")
    wrapper = wrapper_script("/venv/bin/python", script)
    assert wrapper.startswith("#!/bin/sh\n")
    assert f'exec /venv/bin/python {" ".join(PYTHON_FLAGS)} {script} "$@"' in wrapper
    conf = fcgiwrap_nginx_conf(
        state=Path("/tmp/s"), port=1234, socket_path=Path("/tmp/s/f.sock"), script=script
    )
    assert "listen 127.0.0.1:1234;" in conf
    assert "fastcgi_pass unix:/tmp/s/f.sock;" in conf
    assert f"fastcgi_param SCRIPT_FILENAME {script};" in conf
    assert "fastcgi_param SCRIPT_NAME /cgi;" in conf


def test_the_cpu_table_predicts_the_ratio_from_the_totals() -> None:
    """Three rounds a side: each part's median per row, and the model from the median
    of the rounds' totals (direct 130 us, not 100 + 40; through nginx 210: 0.62), so a slow round's
    gateway does not add up with a fast round's nginx. nginx's CPU during the direct
    rounds is left out (it idles then)."""
    meter = CpuMeter.__new__(CpuMeter)
    meter.samples = {
        (("asgi", "gunicorn"), "p", "nginx"): [60.0, 90.0, 50.0],
        (("asgi", "gunicorn"), "p", "gateway"): [120.0, 180.0, 130.0],
        (("asgi", "gunicorn"), "p", "wrk"): [30.0, 40.0, 30.0],
        (("asgi", "gunicorn"), "p", "switched"): [1.4, 1.5, 1.3],
        (("asgi", "gunicorn"), "d", "nginx"): [5.0, 5.0, 5.0],
        (("asgi", "gunicorn"), "d", "gateway"): [100.0, 150.0, 90.0],
        (("asgi", "gunicorn"), "d", "wrk"): [30.0, 40.0, 40.0],
        (("asgi", "gunicorn"), "d", "switched"): [0.8, 0.9, 0.7],
        # Another server of the mode, through nginx at the same URL: not mixed in.
        (("asgi", "uvicorn"), "p", "gateway"): [900.0, 900.0, 900.0],
    }
    rows = cpu_rows(meter, ("asgi", "gunicorn"), "p", "d", 0.61)
    assert rows == [
        "| ASGI/gunicorn nginx | 60 | 130 | 30 | 210 | 1.40 |",
        "| ASGI/gunicorn direct | 0 | 100 | 40 | 130 | 0.80 |",
        "| ASGI/gunicorn model / measured | | | | 0.62 / 0.61 | |",
    ]
