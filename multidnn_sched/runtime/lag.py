"""LAG: how much slower a block runs under contention than alone.

For every block ``b`` the tracker keeps

* ``solo_ms``: the block's latency measured alone with the whole device (profiled at start-up, re-profiled
  when idle; it follows the active variant, see :meth:`LagTracker.set_solo`);
* ``ema_observed_ms``: an exponential moving average of the latency observed in service;
* ``lag_ms``: an EMA of ``observed - solo`` with the same ``alpha`` — the *predicted LAG* the policy reads.

The EMA update is ``ema <- alpha * x + (1 - alpha) * ema``; the first sample initialises it. The module is
pure: no threads, the clock is injected (only used to stamp updates), so it is unit-tested with numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace

BlockKey = tuple[str, str]
"""``(model_name, block_name)``."""


@dataclass
class BlockTiming:
    """Latency figures of one block.

    Attributes:
        solo_ms: latency alone with the whole device (``None`` until profiled).
        ema_observed_ms: EMA of observed latency in service (``None`` before the first sample).
        lag_ms: EMA of ``observed - solo``; 0.0 while ``solo_ms`` or samples are missing.
        last_observed_ms: the most recent observed latency.
        samples: number of observed latencies folded in.
        last_update_sec: clock time of the last update (``None`` before the first).
    """

    solo_ms: float | None = None
    ema_observed_ms: float | None = None
    lag_ms: float = 0.0
    last_observed_ms: float | None = None
    samples: int = 0
    last_update_sec: float | None = None


def ema(previous: float | None, sample: float, alpha: float) -> float:
    """One EMA step; ``previous is None`` starts the average at ``sample``."""
    if previous is None:
        return sample
    return alpha * sample + (1.0 - alpha) * previous


class LagTracker:
    """Per-block solo latency, EMA of observed latency, and LAG.

    Not thread-safe by itself; the executor calls it under its own lock.

    Args:
        alpha: EMA weight of the newest sample, in ``(0, 1]``.
        clock: seconds clock used to stamp updates (inject a fake one in tests).
    """

    def __init__(self, alpha: float = 0.2, clock: Callable[[], float] = time.perf_counter) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"LagTracker alpha must be in (0, 1], got {alpha!r}")
        self.alpha = alpha
        self._clock = clock
        self._timings: dict[Hashable, BlockTiming] = {}
        self._lag_seeded: set[Hashable] = set()

    def _get(self, key: Hashable) -> BlockTiming:
        timing = self._timings.get(key)
        if timing is None:
            timing = BlockTiming()
            self._timings[key] = timing
        return timing

    def set_solo(self, key: Hashable, solo_ms: float, *, keep_lag: bool = True) -> None:
        """Set the block's solo latency (after profiling, or when its active variant changes).

        With ``keep_lag`` the contention estimate survives the change and the observed EMA is moved to
        ``solo + lag`` so it does not carry the old variant's latency; otherwise both restart.
        """
        if solo_ms < 0.0:
            raise ValueError(f"solo latency of {key!r} must be >= 0 ms, got {solo_ms!r}")
        timing = self._get(key)
        timing.solo_ms = solo_ms
        if keep_lag and timing.ema_observed_ms is not None:
            timing.ema_observed_ms = solo_ms + timing.lag_ms
        elif not keep_lag:
            timing.ema_observed_ms = None
            timing.lag_ms = 0.0
            self._lag_seeded.discard(key)

    def update(self, key: Hashable, observed_ms: float) -> BlockTiming:
        """Fold one observed latency in and return a copy of the block's figures."""
        if observed_ms < 0.0:
            raise ValueError(f"observed latency of {key!r} must be >= 0 ms, got {observed_ms!r}")
        timing = self._get(key)
        timing.ema_observed_ms = ema(timing.ema_observed_ms, observed_ms, self.alpha)
        if timing.solo_ms is not None:
            lag_sample = observed_ms - timing.solo_ms
            seeded = key in self._lag_seeded
            timing.lag_ms = ema(timing.lag_ms if seeded else None, lag_sample, self.alpha)
            self._lag_seeded.add(key)
        timing.last_observed_ms = observed_ms
        timing.samples += 1
        timing.last_update_sec = self._clock()
        return replace(timing)

    def timing(self, key: Hashable) -> BlockTiming:
        """A copy of the block's figures (all ``None`` / 0 for an unknown block)."""
        return replace(self._timings.get(key, BlockTiming()))

    def snapshot(self) -> dict[Hashable, BlockTiming]:
        """Copies of all blocks' figures, keyed as they were updated."""
        return {key: replace(t) for key, t in self._timings.items()}
