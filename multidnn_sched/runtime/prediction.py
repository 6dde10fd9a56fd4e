"""Predictions of a frame's remaining work, and the two scheduling choices made from them at a block boundary:
lazy preemption (hand the running frame back only when the more urgent one cannot wait) and shedding (drop a
frame that can no longer make its deadline, :func:`~multidnn_sched.runtime.shedding.is_hopeless`).

Mixed into :class:`~multidnn_sched.runtime.executor.BlockExecutor`. Predictions are the blocks' EMA-observed
latencies of their ACTIVE implementation (the solo figure until a block ran), read live from the LAG tracker.
"""

from __future__ import annotations

from collections.abc import Callable

from multidnn_sched.exceptions import FrameShedError
from multidnn_sched.runtime.jobs import Job, Model
from multidnn_sched.runtime.lag import BlockTiming, LagKey
from multidnn_sched.runtime.shedding import is_hopeless
from multidnn_sched.runtime.state import ExecutorState


class PredictionMixin(ExecutorState):
    """Remaining-work predictions, lazy preemption and shedding of :class:`BlockExecutor` (module docstring)."""

    _last_key: dict[tuple[str, str], LagKey]
    _profile_epoch: int
    _profiled_bucket: dict[tuple[str, str], int]
    _finish: Callable[..., None]

    def _predicted_run_ms(self, model: Model, first_block: int = 0) -> tuple[float, float] | None:
        """(all blocks, blocks from ``first_block`` on): sums of the EMA-observed latencies (solo where not
        observed yet), in one pass under the stats lock; None if a block has neither."""
        total = remaining = 0.0
        name = model.pm.name
        with self._stats_lock:
            for index, block in enumerate(model.pm.blocks):
                value = self._predicted_block_ms(name, block.name)
                if value is None:
                    return None
                total += value
                if index >= first_block:
                    remaining += value
        return total, remaining

    def _active_lag_key(self, model: str, block: str) -> tuple[LagKey, str]:
        """(LAG key of the block's ACTIVE implementation, that implementation); caller holds ``_stats_lock``.
        The input bucket it last ran on, or — right after a swap, before the new variant ran — the profiled one."""
        variant = self._registry.active((model, block))[0]
        key = self._last_key.get((model, block))
        if key is None or key[2] != variant:
            key = (model, block, variant, self._profiled_bucket.get((model, block), 1))
        return key, variant

    def _predicted_block_ms(self, model: str, block: str) -> float | None:
        """The active implementation's EMA-observed latency, else its solo figure (caller holds
        ``_stats_lock``). The shedding check's hot path: reads the live LAG figures, copies nothing."""
        key, variant = self._active_lag_key(model, block)
        tracker, solos = self._figures_of(model, block)
        live = tracker.peek(key)
        if live is not None and live.ema_observed_ms is not None:
            return live.ema_observed_ms
        if live is not None and live.solo_ms is not None:
            return live.solo_ms
        return solos.get((model, block, variant))

    def _solo_run_ms(self, model: Model) -> float | None:
        """Sum of the model's active implementations' solo latencies (caller holds ``_stats_lock``); None if a
        block has none."""
        total = 0.0
        for block in model.pm.blocks:
            solo_ms = self._timing_of(model.pm.name, block.name).solo_ms
            if solo_ms is None:
                return None
            total += solo_ms
        return total

    def _timing_of(self, model: str, block: str) -> BlockTiming:
        """LAG figures of the block's ACTIVE implementation (caller holds ``_stats_lock``): at the input bucket
        it last ran on, or — right after a swap, before the new variant ran — at the profiled bucket; the solo
        figure falls back to the profile of that implementation."""
        return self._timing_at_input(model, block)[0]

    def _timing_at_input(self, model: str, block: str) -> tuple[BlockTiming, bool]:
        """:meth:`_timing_of` and whether its solo figure was measured at the input bucket its observed figures
        come from (``False``: the profile's fallback at another input size, or none)."""
        key, variant = self._active_lag_key(model, block)
        tracker, solos = self._figures_of(model, block)
        timing = tracker.timing(key)
        if timing.solo_ms is not None:
            return timing, True
        timing.solo_ms = solos.get((model, block, variant))
        return timing, False

    def _preemption_pays(self, job: Job, urgent: Job) -> bool:
        """Hand ``job`` back at this block boundary for the more urgent ``urgent`` job only when ``urgent``
        cannot wait: when it would miss its deadline behind ``job``'s remaining blocks (lazy preemption). An
        urgent job with enough slack waits, so ``job`` keeps its finished blocks instead of being preempted and
        then shed at its next boundary with its work thrown away (measured before this rule, default workload,
        15 Hz, 2 cores: ``blocks`` shed 143 of 300 detector frames, most after they had been preempted, where the
        non-preemptive ``sequential`` loop shed 1). ``urgent`` still meets its deadline by the same
        predictions, so nothing that EDF would make is given up. Predictions are the blocks' EMA-observed
        latencies, the figures shedding uses; unknown figures: plain EDF (hand back). No tuned constant."""
        mine = self._predicted_run_ms(job.model, job.block_index)
        theirs = self._predicted_run_ms(urgent.model, urgent.block_index)
        if mine is None or theirs is None:
            return True
        theirs_waited_ms = (self._clock() - urgent.frame.arrival_sec) * 1000.0
        return theirs_waited_ms + mine[1] + theirs[1] > urgent.model.deadline_ms

    def _prediction_epoch(self) -> tuple[int, int]:
        """Changes whenever a prediction can change other than by a block's own run: a variant registered,
        activated or disabled (the registry's version), a solo profile taken (``_profile_epoch``), or a block's mode
        changed (``_mode_epoch``: a sequential block of the partitioned pool runs at another thread count)."""
        return self._registry.version, self._profile_epoch + self._mode_epoch

    def _job_predictions(self, job: Job) -> list[float] | None:
        """The frame's per-block predictions (see :attr:`Job.predicted_ms`), re-read from the LAG tracker only
        when the epoch moved; None while a block has no figure.

        Valid between re-reads: this frame's own blocks update the model's figures, and :meth:`_note_block_run`
        folds each one in as it happens; another dispatched frame of the same model (``frames_in_flight`` > 1)
        moves them too, by one EMA step per block, which the cache misses until the next epoch. The shedding check then
        costs two float sums per block boundary instead of a locked walk over every block."""
        epoch = self._prediction_epoch()
        if job.predicted_ms is None or job.predicted_epoch != epoch:
            name = job.model.pm.name
            with self._stats_lock:
                values = [self._predicted_block_ms(name, block.name) for block in job.model.pm.blocks]
            job.predicted_ms = None if any(v is None for v in values) else [float(v) for v in values if v is not None]
            job.predicted_epoch = epoch
        return job.predicted_ms

    @staticmethod
    def _note_block_run(job: Job, index: int, live: BlockTiming | None) -> None:
        """Fold block ``index``'s new EMA-observed latency (its LIVE figures, just updated) into the frame's
        predictions: the value :meth:`_predicted_block_ms` would now read for it."""
        if job.predicted_ms is not None and live is not None and live.ema_observed_ms is not None:
            job.predicted_ms[index] = live.ema_observed_ms

    def _hopeless(self, job: Job) -> bool:
        """True if the frame can no longer meet its deadline (time since arrival + its remaining blocks'
        predicted latency) but a fresh frame of the model could."""
        predicted = self._job_predictions(job)
        if predicted is None:
            return False
        waited_ms = (self._clock() - job.frame.arrival_sec) * 1000.0
        return is_hopeless(waited_ms, sum(predicted[job.block_index:]), sum(predicted), job.model.deadline_ms)

    def _shed(self, job: Job) -> None:
        model = job.model
        self._finish(job, None, FrameShedError(
            f"model {model.pm.name!r}: frame shed, it could no longer meet its {model.deadline_ms:.0f} ms deadline"
        ), shed=True)
