"""Tuned baselines: choose the intra-op thread count per model by measurement, once per bench run.

A competent engineer does not leave three models at torch's default threads (= cores) each on a shared CPU:
the project's own notes measure a 3-10x collapse from that oversubscription (``docs/runtime.md``). So the bench
probes each static mode briefly and keeps the configuration with the best on-time rate:

1. the same count for every model, each of :func:`candidate_counts`;
2. then one greedy pass over the models: each model's count alone changed to every other candidate, kept when
   the probe's on-time rate improves.

Probes are short runs at the workload's rate (their figures are recorded in the JSON, not scored).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


def candidate_counts(cores: int) -> list[int]:
    """1..cores on small machines; powers of two up to cores (and cores itself) beyond 4 cores."""
    if cores <= 4:
        return list(range(1, cores + 1))
    counts, c = [], 1
    while c < cores:
        counts.append(c)
        c *= 2
    return counts + [cores]


@dataclass
class Calibration:
    """The chosen threads per model and every probe that led there (``[(threads, score), ...]``)."""

    threads: dict[str, int]
    score: float
    probes: list[tuple[dict[str, int], float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"threads_per_model": self.threads, "probe_on_time_rate": self.score,
                "probes": [{"threads_per_model": t, "on_time_rate": s} for t, s in self.probes]}


def calibrate_threads(
    probe: Callable[[dict[str, int]], float], names: Sequence[str], cores: int
) -> Calibration:
    """Search thread counts per model (see the module docstring); ``probe`` returns an on-time rate."""
    counts = candidate_counts(cores)
    probes: list[tuple[dict[str, int], float]] = []

    seen: dict[tuple[int, ...], float] = {}

    def measure(config: dict[str, int]) -> float:
        key = tuple(config[n] for n in names)
        if key not in seen:  # a configuration is probed once
            seen[key] = probe(dict(config))
            probes.append((dict(config), seen[key]))
        return seen[key]

    best, best_score = None, -1.0
    for c in counts:
        config = dict.fromkeys(names, c)
        score = measure(config)
        if score > best_score:
            best, best_score = config, score
    assert best is not None
    if len(names) > 1:
        for name in names:
            for c in counts:
                if c == best[name]:
                    continue
                config = {**best, name: c}
                score = measure(config)
                if score > best_score:  # strictly better: ties keep the earlier (simpler) configuration
                    best, best_score = config, score
    return Calibration(best, best_score, probes)
