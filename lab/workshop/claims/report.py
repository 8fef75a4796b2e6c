"""The claims report: Markdown and JSON from judged results, and the re-judging of
a recorded ``claims.json`` (pure, apart from reading that one file)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.workshop.claims.catalog import CLAIM_IDS, CLAIMS, Claim
from lab.workshop.claims.evidence import Verdict, fmt_spread
from lab.workshop.claims.verdicts import judge

BY_ID = {c.id: c for c in CLAIMS}


@dataclass
class ClaimResult:
    claim: Claim
    numbers: dict[str, Any]
    verdict: Verdict
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.claim.id,
            "title": self.claim.title,
            "numbers": self.numbers,
            "verdict": self.verdict.level,
            "why": self.verdict.why,
            "model": {k: list(v) for k, v in self.verdict.model.items()},
            "notes": self.notes,
        }


def _med(v: Any) -> float:
    return float(statistics.median(v)) if isinstance(v, Sequence) else float(v)


def notes_for(claim_id: str, n: Mapping[str, Any]) -> list[str]:
    """Context a reader needs that is not part of the verdict."""
    if claim_id == "process-per-request":
        return [
            f"The runner starts scripts through {_med(n['runner_interpreter_ms']):.1f} ms of "
            f"interpreter (the path it runs, a venv's python reads pyvenv.cfg) against "
            f"{_med(n['interpreter_ms']):.1f} ms for the real binary; both were measured "
            "where the scripts run, under the load the machine had."
        ]
    if claim_id == "worker-formula":
        return [
            f"CPU-bound context: {n['cpu_rps_formula']:.0f} / {n['cpu_rps_4x']:.0f} req/s with "
            f"{n['workers_formula']} / {n['workers_4x']} workers: past the CPUs, more workers "
            f"cannot add CPU. Memory: {n['rss_mib_formula']:.0f} / {n['rss_mib_4x']:.0f} MiB "
            "resident per process (RSS counts shared pages in every process)."
        ]
    if claim_id == "asgi-wins-io":
        little = n["clients"] / _med(n["wsgi_rps"]) * 1000 if _med(n["wsgi_rps"]) else 0.0
        return [
            f"At one client neither queues: p50 {n['asgi_p50_c1_ms']:.0f} ms (ASGI) vs "
            f"{n['wsgi_p50_c1_ms']:.0f} ms (WSGI). Under load WSGI's p50 is "
            f"{_med(n['wsgi_p50_ms']):.0f} ms; Little's law predicts clients / throughput = "
            f"{little:.0f} ms."
        ]
    if claim_id == "cpu-little-difference":
        return [
            f"Each client completed {min(n['asgi_completions_per_client']):.1f} or more requests "
            f"(ASGI); {n['in_flight_at_end']} requests were still in flight at the end of each "
            "run and are in no percentile."
        ]
    if claim_id == "blocking-hurts-asgi":
        return [
            "Two fixes are measured: ASGI /coffee awaits asyncio.sleep, the non-blocking "
            "form of the same wait; /blocking-coffee?thread=1 keeps the blocking time.sleep "
            "and moves it to asyncio.to_thread, the fix for a call that cannot be rewritten. "
            f"That one is bounded by the default executor: {n['threads']} threads per loop "
            "(min(32, CPUs + 4)), so with more clients than that it queues again."
        ]
    return []


def _fmt(value: Any) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        xs = [float(x) for x in value]
        if not xs:
            return "-"
        return f"{fmt_spread((statistics.median(xs), min(xs), max(xs)), 1)} x{len(xs)}"
    v = float(value)
    if v.is_integer():
        return f"{v:,.0f}"
    return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.1f}"


def report_markdown(results: list[ClaimResult], meta: Mapping[str, Any]) -> str:
    machine = meta.get("machine", {})
    lab = meta.get("lab", {})
    lines = [
        "# Gateway Lab: the tutorial's claims, measured",
        "",
        f"- when: {meta.get('started', '')} (UTC)",
        f"- machine: {machine.get('host', '?')}, {machine.get('cores', '?')} CPUs "
        f"({machine.get('cpu', '?')}), load average {machine.get('load_average_1m', '?')} "
        "at the start",
        f"- lab: {meta.get('url', '')}, target {lab.get('target', '?')}; servers "
        f"{lab.get('servers') or '?'}; CPUs per gateway {lab.get('gateway_cpus') or '?'}; "
        f"workers {lab.get('workers') or '?'}",
        f"- command: `{meta.get('command', '')}`",
        f"- each comparison {meta.get('repeats', '?')} times, interleaved; numbers are "
        "median (lowest-highest) xrepeats. Throughput: wrk, at least "
        f"{meta.get('duration_s', '?')} s per run (saturated runs longer, so each client "
        "completes about 10 requests); per-request facts: the lab's own generator",
        "- each verdict compares measured with a one-line model: throughput = min(workers / "
        "service time, CPUs / CPU time); latency = clients / throughput (Little's law); a "
        "blocked loop serves loops / sleep, the same call on asyncio.to_thread "
        "min(clients, loops x threads) / sleep",
        "",
        "| # | claim | verdict | measured / model |",
        "|---|---|---|---|",
    ]
    for i, r in enumerate(results, 1):
        first = next(iter(r.verdict.model.items()), None)
        model = f"{first[0]}: {fmt_spread(first[1])}" if first else ""
        lines.append(f"| {i} | {r.claim.title} | **{r.verdict.level}** | {model} |")
    for i, r in enumerate(results, 1):
        lines += [
            "",
            f"## {i}. {r.claim.title}",
            "",
            f"**Claim.** {r.claim.claim}",
            "",
            f"**Experiment.** {r.claim.experiment}",
            "",
            "**Measured / model.**",
            "",
            "| ratio | median (range) |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {fmt_spread(v)} |" for k, v in r.verdict.model.items()]
        lines += ["", "**Numbers.**", "", "| measure | value |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in r.numbers.items()]
        lines += ["", f"**Verdict: {r.verdict.level}.** {r.verdict.why}"]
        lines += [f"\n_{note}_" for note in r.notes]
    return "\n".join(lines) + "\n"


def payload(results: list[ClaimResult], meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"meta": dict(meta), "claims": [r.as_dict() for r in results]}


def load_recording(path: Path) -> dict[str, Any]:
    """A recorded ``claims.json``; LabError (one line) when it is missing or not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"{path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise LabError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise LabError(f"{path}: not a claims.json (no list of claims)")
    return data


def rejudge(data: Mapping[str, Any], source: str = "the recording") -> list[ClaimResult]:
    """Judge the recorded numbers again with today's rules."""
    results = []
    for entry in data["claims"]:
        claim_id = entry.get("id") if isinstance(entry, dict) else None
        if claim_id not in BY_ID:
            raise LabError(f"{source}: unknown claim {claim_id!r} (known: {', '.join(CLAIM_IDS)})")
        numbers = entry.get("numbers")
        if not isinstance(numbers, dict):
            raise LabError(f"{source}: claim {claim_id} has no numbers")
        try:
            verdict = judge(claim_id, numbers)
            notes = notes_for(claim_id, numbers)
        except KeyError as exc:
            raise LabError(
                f"{source}: claim {claim_id} lacks the number {exc}; it was recorded by an "
                "older `lab claims` (rerun `make claims`)"
            ) from None
        except (TypeError, ValueError, ZeroDivisionError) as exc:
            raise LabError(f"{source}: claim {claim_id} has a bad number ({exc})") from None
        results.append(ClaimResult(BY_ID[claim_id], numbers, verdict, notes))
    return results
