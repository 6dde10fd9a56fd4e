"""The executor's control loop: observations for the policy, decisions applied, overrides.

Mixed into :class:`~multidnn_sched.runtime.executor.BlockExecutor`: the policy decides, this only builds what
it sees and applies what it returns (at the next block boundary of each worker).
"""

from __future__ import annotations

import threading
from collections import deque
from fractions import Fraction

from multidnn_sched.exceptions import ConfigError
from multidnn_sched.runtime.decisions import ORIGINAL, Decision, DecisionKind, Mode
from multidnn_sched.runtime.observations import (
    BlockObservation,
    DeviceObservation,
    ModelObservation,
    Observations,
    SchedulingPolicy,
    VariantOption,
)
from multidnn_sched.runtime.policy_math import relative_accuracy
from multidnn_sched.runtime.state import ExecutorState
from multidnn_sched.runtime.stats import percentile, rate_hz

SLOWDOWN_MIN_FRAMES = 5
"""Frames a model needs before its slowdown figure is reported to the policy."""


class ControlMixin(ExecutorState):
    """Decisions and observations of :class:`BlockExecutor` (see the module docstring)."""

    _decisions: deque[Decision]
    _decision_count: int
    _stop_event: threading.Event
    policy: SchedulingPolicy | None
    _worker_threads: int | None
    _sequential_threads: int | None
    _mode_epoch: int

    def _on_variant_change(self, model: str, block: str, variant: str) -> None:
        """LAG is kept per implementation (:data:`LagKey`), so a swap needs no re-keying: the next run of the
        block is measured against the solo latency of the variant that ran."""
        self.log.debug("%s/%s now runs %s", model, block, variant)

    def apply(self, decision: Decision) -> None:
        """Apply one decision now (seen at the next block boundary) and log it with its reason."""
        model = self._model(decision.model)
        if decision.kind is DecisionKind.ADMIT:
            with self._cond:
                model.admit_fraction = model.stats.admit_fraction = float(decision.value)
                model.admit_credit = Fraction(0)
        else:
            if decision.block not in model.pm.block_names:
                raise ConfigError(f"decision for unknown block {decision.model}/{decision.block}")
            if decision.kind is DecisionKind.MODE:
                with self._stats_lock:  # the shedding check's cached predictions follow the mode's figures
                    model.modes[model.pm.block_names.index(decision.block)] = Mode(decision.value)
                    self._mode_epoch += 1
            else:
                switch_ms = self._registry.activate((decision.model, decision.block), str(decision.value))
                self._on_variant_change(decision.model, decision.block, str(decision.value))
                self.log.debug("variant switch %s/%s took %.3f ms", decision.model, decision.block, switch_ms)
        with self._stats_lock:
            self._decisions.append(decision)
            self._decision_count += 1
        self.log.info("decision %s: %s", decision.describe(), decision.reason)

    def set_override(self, model: str, block: str, *, mode: str | None = None, variant: str | None = None) -> None:
        """Force a block's mode and/or variant; the policy leaves it alone until :meth:`clear_override`."""
        now = self._clock()
        if mode is not None:
            self.apply(Decision(model, block, DecisionKind.MODE, mode, "override", now))
        if variant is not None:
            self.apply(Decision(model, block, DecisionKind.VARIANT, variant, "override", now))
        self._model(model).overridden.add(block)

    def clear_override(self, model: str, block: str | None = None) -> None:
        """Hand one block (or every block of the model) back to the policy."""
        overridden = self._model(model).overridden
        overridden.difference_update(overridden.copy() if block is None else {block})

    def _sequential_solo(self, model: str, block: str) -> float | None:
        """Partitioned pool: the active implementation's solo at ``sequential_threads`` at the input bucket it
        last ran on (the profile's figure at its own bucket where that has none); ``None`` when sequential runs
        at the parallel count (caller holds ``_stats_lock``)."""
        if self._sequential_threads is None:
            return None
        key, variant = self._active_lag_key(model, block)
        live = self._seq_lag.peek(key)
        if live is not None and live.solo_ms is not None:
            return live.solo_ms
        return self._seq_solo_ms.get((model, block, variant))

    @property
    def decisions(self) -> list[Decision]:
        """The most recent applied decisions (up to 1000), oldest first."""
        with self._stats_lock:
            return list(self._decisions)

    def observations(self) -> Observations:
        """What the policy sees now."""
        models, blocks = [], []
        with self._cond:
            recent = {name: list(m.recent) for name, m in self._models.items()}
            slowdowns = {name: list(m.slowdowns) for name, m in self._models.items()}
            arrivals_hz = {name: rate_hz(m.arrivals) for name, m in self._models.items()}
            for name, m in self._models.items():
                if arrivals_hz[name] is None:
                    arrivals_hz[name] = m.expected_rate_hz
        with self._stats_lock:
            snapshot = {
                name: [self._timing_at_input(name, b) for b in m.pm.block_names] for name, m in self._models.items()
            }
            sequential_solos = {
                name: [self._sequential_solo(name, b) for b in m.pm.block_names] for name, m in self._models.items()
            }
        for name, model in self._models.items():
            window = recent[name]
            completed = [latency for latency in window if latency is not None]
            dropped = (len(window) - len(completed)) / len(window) if window else 0.0
            ratios = slowdowns[name]
            slowdown = percentile(ratios, 50.0) if len(ratios) >= SLOWDOWN_MIN_FRAMES else None
            models.append(ModelObservation(name, model.deadline_ms, percentile(completed, 90.0), model.priority,
                                           len(window), arrivals_hz[name], model.admit_fraction, slowdown,
                                           dropped))
            for index, block in enumerate(model.pm.blocks):
                timing, solo_at_input = snapshot[name][index]
                variant = self._registry.active((name, block.name))[0]
                options = [VariantOption(ORIGINAL, self._solo_ms.get((name, block.name, ORIGINAL)), 1.0)]
                for v in self._registry.usable_variants((name, block.name)):
                    rel = relative_accuracy(v.accuracy, model.accuracy)  # the manifest's held-out figures
                    options.append(VariantOption(v.name, self._solo_ms.get((name, block.name, v.name)), rel))
                blocks.append(BlockObservation(
                    name, block.name, timing.solo_ms, timing.ema_observed_ms, timing.lag_ms, model.modes[index],
                    variant, tuple(options), block.name in model.overridden,
                    timing.ema_contended_ms, timing.contended_samples, solo_at_input,
                    sequential_solos[name][index],
                ))
        device = DeviceObservation("cuda" if self.device.is_cuda else "cpu", self._worker_count, self.device.slots,
                                   self._worker_threads, self._sequential_threads)
        return Observations(tuple(models), tuple(blocks), device)

    def decide_now(self) -> list[Decision]:
        """One policy round: observe, decide, apply; returns the applied decisions."""
        if self.policy is None:
            return []
        decisions = self.policy.decide(self.observations(), self._clock())
        for decision in decisions:
            self.apply(decision)
        return decisions

    def _decision_loop(self, interval_sec: float) -> None:
        while not self._stop_event.wait(interval_sec):
            try:
                self.decide_now()
                self._maybe_reprofile()
            except Exception:  # noqa: BLE001 - the decision thread must survive a bad round
                self.log.exception("BlockExecutor decision round failed")
