"""What a claim's verdict is made of (pure): the levels, the ``Verdict``, and the
numbers helpers every rule uses: repeats as lists, their median and range,
paired ratios of interleaved repeats, and the checks that make a run
"inconclusive: rerun" (errors, a busy machine, an uneven split over processes).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

Level = Literal["holds", "holds with a caveat", "does not hold", "inconclusive: rerun"]
HOLDS: Final[Level] = "holds"
CAVEAT: Final[Level] = "holds with a caveat"
FAILS: Final[Level] = "does not hold"
INCONCLUSIVE: Final[Level] = "inconclusive: rerun"

Value = float | int | Sequence[float]
Numbers = Mapping[str, Value]

# A run whose least busy process served less than this share of what the busiest
# served is too uneven to compare process models (keep-alive pinning, accept races).
MIN_PID_BALANCE: Final = 0.33
# Percentiles count only completed requests: with fewer completions per client the
# slowest requests are still in flight at the end and the tail is a lower bound.
MIN_COMPLETIONS_PER_CLIENT: Final = 10.0


@dataclass(frozen=True)
class Verdict:
    level: Level
    why: str
    # measured / model: name -> (median, lowest, highest) over the repeats
    model: dict[str, tuple[float, float, float]] = field(default_factory=dict)


# -- numbers ------------------------------------------------------------------------------


def values(n: Numbers, key: str) -> list[float]:
    """Every repeat of ``key`` (a single number is one repeat)."""
    v = n[key]
    return [float(x) for x in v] if isinstance(v, Sequence) else [float(v)]


def med(n: Numbers, key: str) -> float:
    return statistics.median(values(n, key))


def paired(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """a[i] / b[i] for each interleaved repeat (0 where b[i] is 0)."""
    return [x / y if y else 0.0 for x, y in zip(a, b, strict=False)]


def spread(xs: Sequence[float]) -> tuple[float, float, float]:
    return (statistics.median(xs), min(xs), max(xs))


def straddles(xs: Sequence[float], threshold: float) -> bool:
    """The repeats fall on both sides of ``threshold``: the range overlaps it."""
    return min(xs) < threshold <= max(xs)


def fmt_spread(s: tuple[float, float, float], digits: int = 2) -> str:
    m, lo, hi = s
    if lo == hi:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def noise(n: Numbers, balance_keys: Sequence[str] = ()) -> list[str]:
    """Why these numbers cannot carry a verdict (empty: they can).

    Reads ``errors`` (failed requests over all runs), ``load_1m_start`` and
    ``machine_cpus`` (the machine's load average at the start against the CPUs it
    has) and each of ``balance_keys`` (least / most requests per process).
    """
    reasons = []
    errors = sum(values(n, "errors")) if "errors" in n else 0.0
    if errors > 0:
        reasons.append(f"{errors:.0f} requests failed")
    if "load_1m_start" in n and "machine_cpus" in n:
        load, cpus = med(n, "load_1m_start"), med(n, "machine_cpus")
        if load > cpus:
            reasons.append(f"the load average was {load:.1f} on {cpus:.0f} CPUs at the start")
    for key in balance_keys:
        if key in n and min(values(n, key)) < MIN_PID_BALANCE:
            reasons.append(
                f"requests were split very unevenly over processes ({key} "
                f"{min(values(n, key)):.2f} < {MIN_PID_BALANCE})"
            )
    return reasons


def rerun(reasons: Sequence[str], model: dict[str, tuple[float, float, float]]) -> Verdict:
    return Verdict(INCONCLUSIVE, "; ".join(reasons) + ".", model)
