"""The executor's statistics records and the percentile they are computed with.

``ModelStats`` / ``BlockStats`` / ``ExecutorStats`` are what :meth:`BlockExecutor.stats` returns and what the
ROS layer puts on ``/diagnostics``; :func:`percentile` is numpy's default (linear) on plain lists.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass
class ModelStats:
    """Per-model counters and end-to-end latency (arrival to result), ms. ``dropped`` counts every frame that
    was not computed (queue policy, shedding, admission); ``skipped`` the share of it that admission control
    dropped on arrival while admitting only ``admit_fraction`` of the frames."""

    name: str
    deadline_ms: float
    priority: int
    submitted: int = 0
    frames_done: int = 0
    dropped: int = 0
    failed: int = 0
    deadline_misses: int = 0
    latency_ms: list[float] = field(default_factory=list)
    skipped: int = 0
    shed_probes: int = 0
    """Frames run, though predicted late, to refresh predictions that had shed ``shed_probe_frames`` frames in
    a row before any block ran (``BlockExecutor``: shedding must stay refutable)."""
    admit_fraction: float = 1.0
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass
class BlockStats:
    """Per-block LAG figures and current settings (what the ROS layer puts on /diagnostics)."""

    model: str
    block: str
    solo_ms: float | None
    ema_observed_ms: float | None
    lag_ms: float
    samples: int
    mode: str
    variant: str
    overridden: bool
    variant_failures: int
    threads_alone: int | None = None


@dataclass
class ExecutorStats:
    """A snapshot of :meth:`BlockExecutor.stats`."""

    models: dict[str, ModelStats]
    blocks: dict[tuple[str, str], BlockStats]
    decisions: int


def percentile(values: list[float], q: float, *, ordered: bool = False) -> float | None:
    """Linear-interpolated percentile (``q`` in [0, 100]) as numpy's default; ``None`` for no values.
    ``ordered=True``: ``values`` is already sorted ascending."""
    if not values:
        return None
    ordered_values = values if ordered else sorted(values)
    pos = (len(ordered_values) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered_values) - 1)
    return ordered_values[low] + (ordered_values[high] - ordered_values[low]) * (pos - low)


def rate_hz(arrivals: deque) -> float | None:
    """Frames per second from a window of arrival instants: 1 / the median interval, so one pause in the
    stream (a camera hiccup, a bag loop) does not read as a lower rate for a whole window (None with fewer
    than 2 arrivals or no time span)."""
    if len(arrivals) < 2:
        return None
    values = list(arrivals)
    interval = percentile([b - a for a, b in zip(values[:-1], values[1:], strict=True)], 50.0)
    if interval is None or interval <= 0.0:
        return None
    return 1.0 / interval
