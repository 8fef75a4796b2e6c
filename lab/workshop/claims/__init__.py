"""``lab claims``: run the experiment behind each tutorial claim and judge it.

``catalog`` names the claims and sizes the experiments from the worker counts in
force; ``experiments`` measures (``cgi_probe`` where the CGI scripts run);
``lab.workshop.claims.verdicts`` judges against each claim's model; ``report`` writes
Markdown and JSON and re-judges a recording (``lab claims --rejudge FILE``).
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from gateway.config import default_workers
from lab.errors import UsageError
from lab.workshop.claims.catalog import CLAIM_IDS, CLAIMS, Claim, Sizes
from lab.workshop.claims.report import (
    ClaimResult,
    load_recording,
    notes_for,
    payload,
    rejudge,
    report_markdown,
)
from lab.workshop.claims.verdicts import RULES, judge
from lab.workshop.common import (
    SETTLE_DEADLINE_S,
    Guard,
    default_out_dir,
    lab_info,
    lab_url,
    machine_info,
    require_lab,
    settle_load,
)

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "CLAIMS",
    "CLAIM_IDS",
    "Claim",
    "ClaimResult",
    "Sizes",
    "register",
    "rejudge_file",
    "report_markdown",
    "run_claims",
    "sizes_from",
]

DEFAULT_DURATION_S: Final = 5.0  # per wrk run, at least
DEFAULT_REQUESTS: Final = 40  # per trace run (claim 1), over all repeats
DEFAULT_REPEATS: Final = 3
assert set(RULES) == set(CLAIM_IDS)


def sizes_from(lab: dict[str, Any]) -> Sizes:
    """The worker counts in force and the CPUs the WSGI and ASGI gateways may use, from
    ``lab_info`` (``lab status --json``); the gateways' own defaults when unknown."""
    from lab.system.procfs import cpu_limit

    gateway_cpus = lab.get("gateway_cpus") or {}
    known = [float(gateway_cpus[m]) for m in ("wsgi", "asgi") if gateway_cpus.get(m)]
    cpus = min(known) if known else cpu_limit()
    workers = lab.get("workers") or {}
    whole = max(1, math.ceil(cpus))
    return Sizes(
        cpus=cpus,
        wsgi_workers=int(workers.get("wsgi") or default_workers("wsgi", whole)),
        asgi_workers=int(workers.get("asgi") or default_workers("asgi", whole)),
    )


def run_claims(
    url: str | None = None,
    only: list[str] | None = None,
    duration_s: float = DEFAULT_DURATION_S,
    requests_total: int = DEFAULT_REQUESTS,
    out_dir: Path | None = None,
    console: Console | None = None,
    command: str = "lab claims",
    repeats: int = DEFAULT_REPEATS,
    settle_s: float = SETTLE_DEADLINE_S,
) -> tuple[list[ClaimResult], Path]:
    """Run each experiment, judge it, print and save ``claims.md`` and ``claims.json``.

    Before each experiment, wait up to ``settle_s`` for the load average to fall
    to the CPU count (0: start at once; a busy start is then judged as such).
    """
    from rich.console import Console
    from rich.markdown import Markdown

    from lab.workshop.claims.experiments import EXPERIMENTS, Context

    console = console or Console()
    base = (url or lab_url()).rstrip("/")
    require_lab(base)
    out = out_dir or default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    lab = lab_info()
    sizes = sizes_from(lab)
    meta = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "url": base,
        "machine": machine_info(),
        "lab": lab,
        "sizes": {
            "cpus": sizes.cpus,
            "wsgi_workers": sizes.wsgi_workers,
            "asgi_workers": sizes.asgi_workers,
            "crowd": sizes.crowd,
        },  # fmt: skip
        "command": command,
        "duration_s": duration_s,
        "requests": requests_total,
        "repeats": repeats,
    }
    servers = dict(lab.get("servers") or {})
    ctx = Context(base, sizes, lab.get("target"), repeats, duration_s, requests_total, servers)
    results = []
    for claim in CLAIMS:
        if only and claim.id not in only:
            continue
        settle_load(os.cpu_count() or 1, deadline_s=settle_s, say=console.print)
        machine = machine_info()  # the load just before this experiment
        with console.status(f"{claim.title}: {claim.experiment[:60]}..."):
            numbers = EXPERIMENTS[claim.id](ctx)
        numbers["load_1m_start"] = machine["load_average_1m"]
        numbers["machine_cpus"] = machine["cores"]
        verdict = judge(claim.id, numbers)
        results.append(ClaimResult(claim, numbers, verdict, notes_for(claim.id, numbers)))
        console.print(f"[bold]{claim.title}[/bold]: {verdict.level}")
    text = report_markdown(results, meta)
    (out / "claims.md").write_text(text, encoding="utf-8")
    data = json.dumps(payload(results, meta), indent=2) + "\n"
    (out / "claims.json").write_text(data, encoding="utf-8")
    console.print(Markdown(text))
    console.print(f"saved: {out / 'claims.md'}, {out / 'claims.json'}")
    return results, out


def rejudge_file(path: Path) -> tuple[list[ClaimResult], list[str], str]:
    """(results, changes against the recorded verdicts, the Markdown report)."""
    data = load_recording(path)
    results = rejudge(data, str(path))
    recorded = {c["id"]: c.get("verdict") for c in data["claims"]}
    changes = [
        f"{r.claim.id}: {recorded[r.claim.id]} -> {r.verdict.level}"
        for r in results
        if recorded[r.claim.id] != r.verdict.level
    ]
    meta: dict[str, Any] = data["meta"] if isinstance(data.get("meta"), dict) else {}
    return results, changes, report_markdown(results, meta)


def register(app: typer.Typer, guard: Guard) -> None:
    """Add ``lab claims`` to ``app``; ``guard`` is the CLI's error policy (lab.cli)."""

    @app.command()
    @guard
    def claims(
        only: Annotated[
            str, typer.Option(help=f"comma-separated claim ids ({', '.join(CLAIM_IDS)}), or all")
        ] = "all",
        duration: Annotated[
            float, typer.Option(help="seconds per wrk run, at least")
        ] = DEFAULT_DURATION_S,
        requests: Annotated[
            int, typer.Option(help="requests per trace run", min=5, max=2000)
        ] = DEFAULT_REQUESTS,
        repeats: Annotated[
            int, typer.Option(help="interleaved repeats of each comparison", min=1, max=20)
        ] = DEFAULT_REPEATS,
        url: Annotated[str | None, typer.Option(help="the lab (default LAB_URL or :8080)")] = None,
        out: Annotated[Path | None, typer.Option(help="results directory")] = None,
        rejudge: Annotated[
            Path | None,
            typer.Option(help="re-judge a recorded claims.json with today's rules; no lab needed"),
        ] = None,
    ) -> None:
        """Test each tutorial claim with an experiment; write a Markdown report with verdicts."""
        if rejudge is not None:
            from rich.console import Console
            from rich.markdown import Markdown

            console = Console()
            _results, changes, text = rejudge_file(rejudge)
            console.print(Markdown(text))
            console.print(
                "verdicts changed: " + "; ".join(changes)
                if changes
                else "every verdict is the one recorded"
            )
            return
        chosen = None if only.strip() in ("", "all") else [x.strip() for x in only.split(",")]
        unknown = [x for x in chosen or [] if x not in CLAIM_IDS]
        if unknown:
            raise UsageError(f"unknown claims: {', '.join(unknown)} (use {', '.join(CLAIM_IDS)})")
        command = (
            f"lab claims --only {only} --duration {duration:g} --requests {requests} "
            f"--repeats {repeats}"
        )
        run_claims(url, chosen, duration, requests, out, command=command, repeats=repeats)
