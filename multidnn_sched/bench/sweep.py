"""Sustainable camera rate (the ros2_benchmark methodology): the highest rate a mode serves on time.

Per mode, bisection over the camera rate between ``lo_hz`` and ``hi_hz`` to ``resolution_hz``: a probe at rate
r runs a short window and passes when its joint on-time rate is at least ``threshold`` (0.99). The result is the
highest passing rate found; ``None`` when even ``lo_hz`` fails, ``hi_hz`` (flagged ``at_upper_bound``) when the
upper end passes. Assumes the pass/fail outcome is monotone in the rate (more load never helps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

SWEEP_THRESHOLD = 0.99
"""Joint on-time rate a probe must reach to count the rate as sustainable (BENCHMARKING.md)."""


@dataclass
class SweepResult:
    sustainable_rate_hz: float | None
    at_upper_bound: bool
    probes: list[tuple[float, float]] = field(default_factory=list)
    """``[(rate_hz, joint on-time rate), ...]`` in probe order."""

    def as_dict(self) -> dict[str, object]:
        return {"sustainable_rate_hz": self.sustainable_rate_hz, "at_upper_bound": self.at_upper_bound,
                "probes": [{"rate_hz": r, "joint_on_time_rate": s} for r, s in self.probes]}


def find_sustainable_rate(
    probe: Callable[[float], float],
    *,
    lo_hz: float = 2.0,
    hi_hz: float = 60.0,
    resolution_hz: float = 0.5,
    threshold: float = SWEEP_THRESHOLD,
) -> SweepResult:
    """Bisection (see the module docstring); ``probe(rate_hz)`` returns the joint on-time rate at that rate."""
    if not 0 < lo_hz < hi_hz or resolution_hz <= 0:
        raise ValueError(f"expected 0 < lo_hz < hi_hz and resolution_hz > 0, got {lo_hz}, {hi_hz}, {resolution_hz}")
    probes: list[tuple[float, float]] = []

    def passes(rate: float) -> bool:
        score = probe(rate)
        probes.append((rate, score))
        return score >= threshold

    lo, hi = lo_hz, hi_hz  # invariant: rates <= lo assumed to pass until checked, rates >= hi fail
    lo_checked = hi_checked = False
    while hi - lo > resolution_hz:
        mid = round((lo + hi) / 2 / resolution_hz) * resolution_hz
        if mid <= lo or mid >= hi:
            break
        if passes(mid):
            lo, lo_checked = mid, True
        else:
            hi, hi_checked = mid, True
    if not hi_checked and passes(hi_hz):
        return SweepResult(hi_hz, True, probes)
    if not lo_checked and not passes(lo_hz):
        return SweepResult(None, False, probes)
    return SweepResult(lo, False, probes)
