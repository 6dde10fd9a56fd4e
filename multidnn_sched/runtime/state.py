"""The state :class:`~multidnn_sched.runtime.executor.BlockExecutor` shares with its concept mixins.

``ControlMixin`` (runtime/control.py), ``ProfilingMixin`` (runtime/profiling.py) and ``PredictionMixin``
(runtime/prediction.py: remaining-work predictions, lazy preemption, shedding) group the executor's methods by
concept; this base declares, once, the attributes they read (set in ``BlockExecutor.__init__``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from multidnn_sched.runtime.decisions import Mode
from multidnn_sched.runtime.device import Device
from multidnn_sched.runtime.jobs import Model
from multidnn_sched.runtime.lag import BlockTiming, LagKey, LagTracker
from multidnn_sched.runtime.variants import VariantRegistry


class ExecutorState:
    """Attribute declarations only (no behaviour)."""

    _models: dict[str, Model]
    _registry: VariantRegistry
    _stats_lock: threading.Lock
    _cond: threading.Condition
    _lag: LagTracker
    _seq_lag: LagTracker
    _solo_ms: dict[tuple[str, str, str], float]
    _seq_solo_ms: dict[tuple[str, str, str], float]
    _sequential_threads: int | None
    _mode_epoch: int
    _clock: Callable[[], float]
    _worker_count: int
    log: logging.Logger
    device: Device

    def _model(self, name: str) -> Model:  # pragma: no cover - provided by BlockExecutor
        raise NotImplementedError

    def _figures_of(self, model: str, block: str) -> tuple[LagTracker, dict[tuple[str, str, str], float]]:
        """The LAG tracker and solo table of the thread count the block's current mode runs at: the
        ``sequential_threads`` figures for a sequential block of the partitioned CPU pool, else the parallel
        ones (caller holds ``_stats_lock``)."""
        if self._sequential_threads is not None:
            entry = self._models[model]
            if entry.modes[entry.pm.block_names.index(block)] == Mode.SEQUENTIAL:
                return self._seq_lag, self._seq_solo_ms
        return self._lag, self._solo_ms

    def _active_lag_key(self, model: str, block: str) -> tuple[LagKey, str]:  # pragma: no cover - Prediction's
        raise NotImplementedError

    def _timing_of(self, model: str, block: str) -> BlockTiming:  # pragma: no cover - PredictionMixin's
        raise NotImplementedError

    def _timing_at_input(self, model: str, block: str) -> tuple[BlockTiming, bool]:  # pragma: no cover - same
        raise NotImplementedError
