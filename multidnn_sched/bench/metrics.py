"""Scoring one benchmark run: every offered frame is on time, late, dropped (by cause) or failed.

The headline is the on-time rate over *offered* frames, per model and jointly (every model of a camera frame on
time), as ``../shared/BENCHMARKING.md`` asks: dropping a frame is never free. Latency percentiles of completed
frames are kept as secondary figures and labelled "completed only"; ``p99_offered_ms`` counts every dropped or
failed frame as +inf and is ``None`` (printed ∞) when that makes it infinite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from multidnn_sched.bench.runs import ModelRun
from multidnn_sched.runtime.executor import percentile


def percentile_offered(latencies_ms: list[float], lost: int, q: float) -> float | None:
    """The ``q`` percentile (linear interpolation, as :func:`percentile`) over completed latencies plus ``lost``
    frames at +inf; ``None`` when the result is infinite (or there are no frames)."""
    values = sorted(latencies_ms) + [math.inf] * lost
    if not values:
        return None
    pos = (len(values) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(values) - 1)
    if math.isinf(values[low]) or (math.isinf(values[high]) and pos > low):
        return None
    return values[low] + (values[high] - values[low]) * (pos - low)


@dataclass
class ModelSummary:
    """One model in one run (see the module docstring)."""

    frames_offered: int
    frames_on_time: int
    frames_late: int
    frames_dropped: int
    dropped_by_cause: dict[str, int]
    frames_failed: int
    on_time_rate: float
    goodput_hz: float
    p50_ms: float | None
    """completed frames only"""
    p99_ms: float | None
    """completed frames only"""
    p99_offered_ms: float | None
    """over offered frames, every dropped / failed frame at +inf; ``None`` = infinite"""
    accuracy_answered: float | None
    """the task metric on the frames it answered (``None``: not scorable for this model)"""
    coverage: float
    """answered (completed, on time or late) / offered"""
    deadline_ms: float

    @staticmethod
    def of(run: ModelRun, deadline_ms: float, duration_sec: float, accuracy: float | None) -> ModelSummary:
        offered = run.offered
        latencies = run.latencies_ms
        on_time = sum(1 for lat in latencies if lat <= deadline_ms)
        completed = len(latencies)
        dropped = len(run.dropped)
        failed = len(run.failed)
        missing = run.unaccounted()
        if missing:
            raise RuntimeError(f"model {run.name}: {len(missing)} timed frames have no outcome "
                               f"(first {missing[:5]}): a runner bug")
        return ModelSummary(
            frames_offered=offered,
            frames_on_time=on_time,
            frames_late=completed - on_time,
            frames_dropped=dropped,
            dropped_by_cause=run.dropped_by_cause(),
            frames_failed=failed,
            on_time_rate=on_time / offered if offered else 0.0,
            goodput_hz=on_time / duration_sec if duration_sec > 0 else 0.0,
            p50_ms=percentile(latencies, 50.0),
            p99_ms=percentile(latencies, 99.0),
            p99_offered_ms=percentile_offered(latencies, offered - completed, 99.0),
            accuracy_answered=accuracy,
            coverage=completed / offered if offered else 0.0,
            deadline_ms=deadline_ms,
        )


@dataclass
class ModeSummary:
    """All models of one mode in one run.

    Attributes:
        joint_on_time_rate: share of camera frames on which every model delivered on time; ``None`` when the
            models do not share one camera (different rates).
        decisions_timed: policy decisions applied inside the timed window (blocks modes; 0 for static modes).
    """

    models: dict[str, ModelSummary]
    total_on_time: int
    total_offered: int
    on_time_rate: float
    joint_on_time_rate: float | None
    decisions_timed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        extra = out.pop("extra")
        out.update(extra)
        return out


def joint_on_time_rate(runs: Mapping[str, ModelRun], deadlines_ms: Mapping[str, float]) -> float | None:
    """Share of the timed camera frames on which every model was on time (``None`` if they differ in frames)."""
    items = list(runs.values())
    if not items or any((r.first_timed, r.offered) != (items[0].first_timed, items[0].offered) for r in items):
        return None
    first, offered = items[0].first_timed, items[0].offered
    if offered == 0:
        return None
    joint = sum(1 for i in range(first, first + offered)
                if all(run.on_time(i, deadlines_ms[name]) for name, run in runs.items()))
    return joint / offered


def summarize(
    runs: Mapping[str, ModelRun],
    deadlines_ms: Mapping[str, float],
    duration_sec: float,
    accuracies: Mapping[str, float | None],
    *,
    shared_camera: bool,
    decisions_timed: int = 0,
) -> ModeSummary:
    """Score one run of one mode."""
    models = {name: ModelSummary.of(run, deadlines_ms[name], duration_sec, accuracies.get(name))
              for name, run in runs.items()}
    on_time = sum(s.frames_on_time for s in models.values())
    offered = sum(s.frames_offered for s in models.values())
    return ModeSummary(
        models=models,
        total_on_time=on_time,
        total_offered=offered,
        on_time_rate=on_time / offered if offered else 0.0,
        joint_on_time_rate=joint_on_time_rate(runs, deadlines_ms) if shared_camera else None,
        decisions_timed=decisions_timed,
    )
