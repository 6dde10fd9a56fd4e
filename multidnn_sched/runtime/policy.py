"""The scheduling policy: observations in, decisions out, each with a reason.

Pure: no threads, no clocks (``now_sec`` is passed in), no torch. The executor builds :class:`Observations`
from its LAG tracker and latency windows, calls :meth:`Policy.decide`, applies the returned
:class:`Decision` values at block boundaries and logs them.

Per block the policy chooses

* a *mode*: ``"parallel"`` (runs beside other models' blocks, sharing the device) or ``"sequential"`` (an
  exclusive slot: the block runs alone with the whole device);
* a *variant*: ``"original"`` or one of the block's lighter variants.

Decision flow of one :meth:`Policy.decide` call (at most ``max_changes`` decisions):

1. A model is *late* when its recent latency exceeds its deadline, *comfortable* when it is at most
   ``deadline * (1 - hysteresis)``. Late models are served by priority (higher first), then by relative slack
   (most negative first).
2. Serialize: a late model's parallel block whose LAG is at least ``lag_serialize_ms`` and
   ``lag_serialize_ratio * solo`` goes sequential (largest LAG first). It costs no accuracy, so it comes first:
   a model that still has such a block does not swap — provided interference can explain the lateness: the
   sum of the model's positive parallel-block LAGs must be at least ``serialize_min_cover`` times its overshoot
   (latency − deadline). Otherwise the model is overloaded, not disturbed; serializing would only cut the
   device's throughput (one block with all threads is less efficient than two with one each), so it swaps.
3. Swap: otherwise the late model's block with the best latency gain per accuracy cost is swapped to a
   lighter variant, never pushing the model's estimated accuracy below ``accuracy_floor``. The estimate is the
   product over blocks of each active variant's *relative accuracy* (model accuracy with only that block
   swapped / original accuracy): a multiplicative model of independent drops. Variants whose accuracy or solo
   latency is unknown are never chosen.
4. Overload: the device's predicted utilization at the full arrival rates (sum over models of rate x the
   active blocks' solo latencies x the model's measured slowdown, see :func:`device_utilization`) is a
   figure no reordering can beat: above 1 every queue grows and the last model in line waits up to its
   deadline. While it exceeds
   ``swap_utilization`` the policy swaps (best gain/cost over every model, each above its floor) even before
   any model is late — several blocks in one round (``max_overload_swaps``), since the prediction needs no
   latency feedback — and relaxes nothing.
5. Admission: whatever utilization swaps leave above ``admission_utilization`` is removed by admitting only a
   fraction of some models' frames (the others are dropped on arrival and counted): the model with the largest
   demand (rate x run time) first, since dropping its frames frees the most device time per dropped frame, down to
   ``min_admit_fraction``, then the next; each fraction is rounded down to a regular frame pattern
   (:func:`quantize_fraction`). Fractions return to 1 as soon as the device fits again. They follow the
   predicted utilization (solo figures x a slowdown median over 32 frames), not the latencies they cause.
6. Relax: a model comfortable for ``min_dwell_sec`` first swaps a block back to the original (the one that
   costs the most accuracy first), then returns a sequential block to parallel — each only when the
   predicted latency after the change is still comfortable (the hysteresis band), so it does not flap.

A block is changed at most once per ``min_dwell_sec``; after any change to a model, the model waits
``settle_sec`` before its next change so that its latency figure reflects the change. Blocks marked
``locked`` (forced by an override) are never changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from multidnn_sched.runtime.decisions import (
    ADMIT,
    MODES,
    ORIGINAL,
    PARALLEL,
    SEQUENTIAL,
    Decision,
    DecisionKind,
    Mode,
)
from multidnn_sched.runtime.observations import (
    BlockObservation,
    DeviceObservation,
    ModelObservation,
    Observations,
    SchedulingPolicy,
    VariantOption,
)
from multidnn_sched.runtime.policy_config import PolicyConfig
from multidnn_sched.runtime.policy_math import (
    MAX_SKIP_PERIOD,
    SLOWDOWN_RANGE,
    admission_fractions,
    device_utilization,
    drain_ms,
    estimated_accuracy,
    fair_shares,
    option,
    predicted_run_ms,
    quantize_fraction,
    relative_accuracy,
    slowdown_factor,
    within_accuracy_floor,
)

__all__ = [
    "ADMIT", "MAX_SKIP_PERIOD", "MODES", "ORIGINAL", "PARALLEL", "SEQUENTIAL", "SLOWDOWN_RANGE", "BlockObservation",
    "Decision", "DecisionKind", "DeviceObservation", "Mode", "ModelObservation", "Observations", "Policy",
    "PolicyConfig", "SchedulingPolicy", "VariantOption", "admission_fractions", "device_utilization",
    "estimated_accuracy", "fair_shares", "option", "predicted_run_ms", "quantize_fraction", "relative_accuracy",
    "slowdown_factor", "within_accuracy_floor",
]
"""The policy's inputs (:mod:`~multidnn_sched.runtime.observations`) and arithmetic
(:mod:`~multidnn_sched.runtime.policy_math`) are importable from here too."""

ALL_BLOCKS = None
"""``Decision.block`` of a model-wide decision (kept for callers of the string era: it is ``None`` now)."""
LATE_DROPPED_FRACTION = 0.1
"""A model whose recent frames were more than 10 % not computed (dropped or shed) is late whatever its
computed frames' latency: its latency figure is the 90th percentile, so with over 10 % of the frames never
answered the 90th percentile over the offered frames is unbounded. (The executor used to invent a latency of
2x the deadline per dropped frame to get the same effect; the policy now sees the share itself.)"""

_COST_FLOOR = 1e-6
"""Accuracy cost used for a free variant (no measured drop), so its gain/cost ratio is large but finite."""


@dataclass
class _State:
    last_change_sec: dict[tuple[str, str], float] = field(default_factory=dict)
    model_change_sec: dict[str, float] = field(default_factory=dict)
    comfortable_since: dict[str, float] = field(default_factory=dict)
    lag_at_serialize_ms: dict[tuple[str, str], float] = field(default_factory=dict)
    serialized_for_throughput: dict[tuple[str, str], float] = field(default_factory=dict)
    """Blocks the efficiency rule made sequential -> when (re-probed in parallel after ``parallel_reprobe_sec``)."""


PARTITIONED_POOL_NO_SEQUENTIAL_NOTE = """In a partitioned CPU pool whose sequential blocks run at the parallel thread
count (``BlockExecutor(sequential_threads=worker_threads)``; the only partitioned pool before 2026-12-07's
``sequential_threads``, whose default is every core) no block is made sequential, neither for latency
(``_serialize_or_swap``) nor for device time (``_efficiency``): there a sequential block only sheds the interference of
the other workers' blocks, while it idles its worker until the running block ends and, behind strict key order, waits
for every more urgent request — a low-priority model's block can wait for ever. Measured on the 2-core VM, 2026-12-07
(reference convolution 1.8-2.1 ms), one run each: ``make demo`` 15 Hz ``blocks+swap`` dropped 128-157 of 300 detector
frames with the device-time rule on (container 107-115 % CPU), 94 with it corrected for the input size and the drain, 76
with no serialization (141 %); the bench's default workload gave the classifier 130 of 300 on time (165 shed) after its
0.2 ms ``avgpool+fc`` went sequential on one 66 ms contended sample. Where a sequential block gets every core (an
elastic pool, CUDA, or the partitioned pool's default ``sequential_threads``) the rules apply, with the block's solo at
that count (``BlockObservation.sequential_solo_ms``)."""


class Policy:
    """LAG- and deadline-driven choice of mode and variant per block (see the module docstring).

    The object keeps the memory that hysteresis needs (last change times, how long each model has been
    comfortable, the LAG a block had when it was serialized); it never reads a clock.

    Args:
        config: parameters; defaults when ``None``.
    """

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self._utilization: float | None = None
        self.config = config if config is not None else PolicyConfig()
        self._state = _State()

    def decide(self, observations: Observations, now_sec: float) -> list[Decision]:
        """Return the changes to apply now (possibly none), most urgent first."""
        cfg = self.config
        blocks_of: dict[str, list[BlockObservation]] = {}
        for block in observations.blocks:
            blocks_of.setdefault(block.model, []).append(block)
        informed = [
            m for m in observations.models
            if (m.latency_ms is not None or m.dropped_fraction > 0.0) and m.samples >= cfg.min_samples
        ]
        late: list[ModelObservation] = []
        comfortable: list[ModelObservation] = []
        for model in informed:
            latency = _latency(model)
            dropping = model.dropped_fraction > LATE_DROPPED_FRACTION
            if latency <= model.deadline_ms * (1.0 - cfg.hysteresis) and not dropping:
                self._state.comfortable_since.setdefault(model.name, now_sec)
                comfortable.append(model)
            else:
                self._state.comfortable_since.pop(model.name, None)
                if latency > model.deadline_ms or dropping:
                    late.append(model)
        late.sort(key=lambda m: (-m.priority, _relative_slack(m)))
        comfortable.sort(key=lambda m: (m.priority, -_relative_slack(m)))

        self._utilization = device_utilization(observations.models, blocks_of)
        load_floor = device_utilization(observations.models, blocks_of, lower_bound=True)
        admissions = self._admission(observations.models, blocks_of, now_sec)
        decisions: list[Decision] = self._efficiency(observations, now_sec)
        for model in late:
            if len(decisions) >= cfg.max_changes:
                break
            if not self._model_settled(model.name, now_sec):
                continue
            decision = self._serialize_or_swap(model, blocks_of, now_sec,
                                               observations.device.sequential_is_faster, observations.models)
            if decision is not None:
                decisions.append(self._record(decision, now_sec))
        overloaded = (
            load_floor is not None and cfg.swap_utilization is not None and load_floor > cfg.swap_utilization
        )
        if overloaded and cfg.swap_enabled:
            decisions.extend(self._overload_swaps(observations.models, blocks_of, now_sec))
        if overloaded or (cfg.relax_needs_all_comfortable and len(comfortable) < len(informed)):
            return admissions + decisions
        for model in comfortable:
            if len(decisions) >= cfg.max_changes:
                return decisions
            since = self._state.comfortable_since.get(model.name, now_sec)
            if now_sec - since < cfg.relax_dwell_sec or not self._model_settled(model.name, now_sec):
                continue
            decision = self._relax(model, blocks_of.get(model.name, []), now_sec)
            if decision is not None:
                decisions.append(self._record(decision, now_sec))
                self._state.comfortable_since[model.name] = now_sec
        return admissions + decisions

    def _overload_swaps(
        self, models: Sequence[ModelObservation], blocks_of: dict[str, list[BlockObservation]], now_sec: float
    ) -> list[Decision]:
        """Best gain/cost swaps until the predicted utilization is at most ``swap_utilization`` (at most
        ``max_overload_swaps`` per round). The prediction is model-based (solo figures x slowdown), not a latency
        feedback, so these swaps need not wait for ``settle_sec`` between them; each block still changes at most
        once per ``min_dwell_sec``."""
        cfg = self.config
        if cfg.swap_utilization is None:
            return []
        work = {name: list(blocks) for name, blocks in blocks_of.items()}
        utilization = device_utilization(models, work, lower_bound=True)
        decisions: list[Decision] = []
        while (utilization is not None and utilization > cfg.swap_utilization
               and len(decisions) < cfg.max_overload_swaps):
            head = (f"device overloaded: predicted utilization {utilization:.2f} at full frame rate "
                    f"> {cfg.swap_utilization:.2f}")
            decision = self._swap_any(work, now_sec, head)
            if decision is None:
                break
            decisions.append(self._record(decision, now_sec))
            work[decision.model] = [
                replace(b, variant=decision.value, solo_ms=_solo_of(b, decision.value)) if b.block == decision.block
                else b
                for b in work[decision.model]
            ]
            utilization = device_utilization(models, work, lower_bound=True)
        return decisions

    def _admission(
        self, models: Sequence[ModelObservation], blocks_of: dict[str, list[BlockObservation]], now_sec: float
    ) -> list[Decision]:
        """``admit`` decisions for models whose admitted fraction of frames should change (see step 5)."""
        cfg = self.config
        demands: dict[str, float] = {}
        runs_ms: dict[str, float] = {}
        for model in models:
            run_ms = predicted_run_ms(blocks_of.get(model.name, []))
            if model.rate_hz is not None and run_ms is not None:
                runs_ms[model.name] = run_ms * slowdown_factor(model)
                demands[model.name] = model.rate_hz * runs_ms[model.name] / 1000.0
        known = len(demands) == len(models)
        if cfg.admission_enabled and known:
            fractions = admission_fractions(demands, cfg.admission_utilization, cfg.min_admit_fraction)
        else:
            fractions = {m.name: 1.0 for m in models}
        total = sum(demands.values())
        decisions = []
        for model in models:
            new = quantize_fraction(fractions.get(model.name, 1.0), cfg.min_admit_fraction)
            current = model.admit_fraction
            if abs(new - current) < 1e-9:
                continue
            if new >= 1.0:
                why = (f"device fits: predicted utilization {total:.2f} at full frame rate <= "
                       f"{cfg.admission_utilization:.2f}" if cfg.admission_enabled and known
                       else "admission control off or load unknown")
                reason = f"{why}; {model.name} admits every frame"
            else:
                reason = (
                    f"device overloaded: predicted utilization {total:.2f} at full frame rate > "
                    f"{cfg.admission_utilization:.2f}; {model.name} ({runs_ms[model.name]:.1f} ms x "
                    f"{model.rate_hz:.1f} Hz = {demands[model.name]:.2f} of the device; max-min fair device time, "
                    f"cheapest models served first) admits {new:.0%} of frames, the rest are dropped on arrival"
                )
            decisions.append(Decision(model.name, None, ADMIT, new, reason, now_sec))
        return decisions

    # -- steps ---------------------------------------------------------------------------------------------

    def _efficiency(self, observations: Observations, now_sec: float) -> list[Decision]:
        """Step 0, every round, late or not: the per-block parallel/sequential choice by device time.

        In ``parallel`` a block holds one of the device's ``slots`` for its contended latency; in ``sequential``
        it holds every slot for its solo latency, after its worker's slot idled while the block running beside it
        drained (:func:`~multidnn_sched.runtime.policy_math.drain_ms`). When ``contended_ms > (slots x solo_ms +
        (slots - 1) x drain_ms) x (1 + hysteresis)`` the block's latency grows more in parallel than the
        throughput overlapping frees: it goes sequential.
        It returns to parallel after ``parallel_reprobe_sec`` (to re-measure), or at once when its solo figure
        has grown (e.g. a swap) so that the contended latency measured then no longer pays for sequential. At
        most one change per round; nothing where blocks cannot overlap (one worker or one slot), and nothing for a
        block whose solo figure is not at the input size its contended one comes from (``solo_at_input``).
        Measured before that rule (``make demo``, 15 Hz, 2026-12-07, crops models profiled at 4 crops, frames of
        8-16): embedder and classifier blocks "cost 4-6x solo in parallel" against the 4-crop solos, went
        sequential, and the container ran at 107-115 % CPU of 200 with 128-157 of 300 detector frames dropped;
        with serialization off, 141 % and 76 dropped. With solos at the right size the same blocks still went
        sequential (contended 2.4-4x solo; 141 of 300 dropped): sub-ms to 5 ms blocks waited for the detector's
        10-30 ms int8 blocks to end, their worker idle; with the drain term only the classifier's stem did (94
        dropped, 135 % CPU). Not in the partitioned pool at all: :data:`PARTITIONED_POOL_NO_SEQUENTIAL_NOTE`."""
        cfg = self.config
        device = observations.device
        if not (cfg.serialize_enabled and device.sequential_is_faster):
            return []  # see PARTITIONED_POOL_NO_SEQUENTIAL_NOTE
        band = 1.0 + cfg.hysteresis
        for block in observations.blocks:
            key = (block.model, block.block)
            alone_ms = block.alone_ms
            if block.locked or not self._dwell_ok(block, now_sec) or alone_ms is None or alone_ms <= 0:
                continue
            if block.mode == PARALLEL and not block.solo_at_input:
                continue  # contended at one input size vs solo at another: no measure of contention
            if block.mode == PARALLEL and key not in self._state.serialized_for_throughput:
                if block.contended_ms is None or block.contended_samples < cfg.min_samples:
                    continue
                wait_ms = drain_ms(observations.blocks, observations.models, block.model)
                alone_cost_ms = device.slots * alone_ms + (device.slots - 1) * wait_ms
                if block.contended_ms > alone_cost_ms * band:
                    self._state.serialized_for_throughput[key] = now_sec
                    reason = (
                        f"{block.model}/{block.block} costs more device time in parallel: {block.contended_ms:.1f} ms "
                        f"on one of {device.slots} slots beside other blocks > ({device.slots} x solo "
                        f"{alone_ms:.1f} ms + {device.slots - 1} x {wait_ms:.1f} ms waiting for the running "
                        f"block to end) x {band:.2f} alone -> sequential (frees throughput)"
                    )
                    return [self._record(Decision(block.model, block.block, DecisionKind.MODE, SEQUENTIAL,
                                                  reason), now_sec)]
            elif block.mode == SEQUENTIAL and key in self._state.serialized_for_throughput:
                since = self._state.serialized_for_throughput[key]
                if now_sec - since >= cfg.parallel_reprobe_sec:
                    del self._state.serialized_for_throughput[key]
                    reason = (f"{block.model}/{block.block} sequential for {now_sec - since:.0f} s -> parallel again "
                              f"to re-measure its contended latency (re-probe every {cfg.parallel_reprobe_sec:.0f} s)")
                    return [self._record(Decision(block.model, block.block, DecisionKind.MODE, PARALLEL,
                                                  reason), now_sec)]
        return []

    def _serialize_or_swap(
        self, model: ModelObservation, blocks_of: dict[str, list[BlockObservation]], now_sec: float,
        can_serialize: bool = True, models: Sequence[ModelObservation] = (),
    ) -> Decision | None:
        cfg = self.config
        blocks = blocks_of.get(model.name, [])
        latency = _latency(model)
        parallel = [b for b in blocks if b.mode == PARALLEL]
        # Partitioned pool with every core for sequential: a sequential block first waits for the other
        # worker's running block to end (the drain), which is part of what serializing costs the block itself
        # (measured without it, 2026-12-07, default workload `blocks`, 3 runs: embedder blocks saving 3-5 ms by
        # threads went sequential behind the detector's 1-thread blocks; on-time 0.628 against 0.667 with
        # sequential at one thread, heldout_20hz 0.375 against 0.522).
        wait_ms = 0.0
        if any(b.sequential_solo_ms is not None for b in parallel):
            wait_ms = drain_ms([b for group in blocks_of.values() for b in group], models, model.name)

        def gain(b: BlockObservation) -> float:
            return _serialize_gain_ms(b) - (wait_ms if b.sequential_solo_ms is not None else 0.0)

        interference_ms = sum(max(gain(b), 0.0) for b in parallel)
        if model.dropped_fraction > LATE_DROPPED_FRACTION:
            head = (f"{model.name} late: {model.dropped_fraction:.0%} of its recent frames not computed "
                    f"(queue or shed)")
            overshoot_ms = math.inf  # frames that never ran: an overload, not interference -> no serialize
        else:
            head = f"{model.name} late: latency {latency:.1f} ms > deadline {model.deadline_ms:.1f} ms"
            overshoot_ms = latency - model.deadline_ms
        # On a device where blocks never overlap (one worker or one slot) sequential changes nothing: no decision that
        # cannot change anything is emitted, and the model goes straight to a swap. Nor in a partitioned CPU pool whose
        # sequential blocks run at the parallel count (sequential_threads = worker_threads): there a sequential block
        # only sheds its LAG, while it holds every slot and idles the other workers for its whole run — measured
        # (default workload at 3 Hz, 2 workers x 1 thread, 2026-12-06): the classifier, 0.9 ms over its 90 ms deadline,
        # had block2-4 serialized for LAGs of 3-7 ms, and the detector, waiting for the exclusive slot, lost 13 of 36
        # frames (joint on-time 0.53; the 3 Hz sweep probe gave 0.08). The device-time rule (step 0) still applies
        # there: it weighs the slots a sequential block holds.
        # Frames that never ran are no measure of interference: a shed model is overloaded, not disturbed, and is
        # not serialized — even where sequential runs with more threads (partitioned pool). Measured with a rule
        # that serialized a shed model's block that every core shortens most (2026-12-07, 2-core VM,
        # `multidnn-bench --modes blocks --repeats 3`, medians): the default detector's blocks went sequential
        # (118-158 ms alone at one thread vs its 120 ms deadline, 71-79 ms at two), it still got 0 of 300 frames
        # on time, and the others lost: on-time 0.648 vs 0.667 with sequential at one thread (default),
        # 0.269 vs 0.522 (heldout_20hz).
        if (cfg.serialize_enabled and can_serialize
                and interference_ms >= cfg.serialize_min_cover * overshoot_ms):
            lagging = [b for b in parallel if not b.locked and self._high_lag(b, gain(b))]
            if lagging:
                ready = [b for b in lagging if self._dwell_ok(b, now_sec)]
                if not ready:
                    return None  # serialize comes first: wait for the dwell instead of swapping
                block = max(ready, key=gain)
                gain_ms = gain(block)
                self._state.lag_at_serialize_ms[(block.model, block.block)] = gain_ms
                if block.sequential_solo_ms is None:
                    what = f"LAG {block.lag_ms:.1f} ms over solo {block.solo_ms:.1f} ms"
                else:
                    parallel_ms = _serialize_gain_ms(block) + block.sequential_solo_ms
                    what = (f"{parallel_ms:.1f} ms in parallel vs {block.sequential_solo_ms:.1f} ms alone "
                            f"with every core + {wait_ms:.1f} ms waiting for the running block (saves "
                            f"{gain_ms:.1f} ms)")
                reason = (
                    f"{head}; block {block.block} {what} (model LAG {interference_ms:.1f} ms) -> sequential "
                    f"(no accuracy cost)"
                )
                return Decision(model.name, block.block, DecisionKind.MODE, SEQUENTIAL, reason)
        if cfg.swap_enabled:
            head = f"{head} (model LAG {interference_ms:.1f} ms)"
            if not cfg.shared_device_swaps:
                return self._swap(model, blocks, now_sec, head)
            candidates = {m: b for m, b in blocks_of.items() if m == model.name or self._model_settled(m, now_sec)}
            return self._swap_any(candidates, now_sec, head)
        return None

    def _swap_any(self, blocks_of: dict[str, list[BlockObservation]], now_sec: float, head: str) -> Decision | None:
        """The best gain/cost swap over every model's blocks (each model kept above its own floor)."""
        best: tuple[float, float, Decision] | None = None
        for blocks in blocks_of.values():
            found = self._best_swap(blocks, now_sec)
            if found is not None and (best is None or found[:2] > best[:2]):
                best = found
        if best is None:
            return None
        return replace(best[2], reason=f"{head}; {best[2].reason}")

    def _swap(
        self, model: ModelObservation, blocks: list[BlockObservation], now_sec: float, head: str
    ) -> Decision | None:
        found = self._best_swap(blocks, now_sec)
        if found is None:
            return None
        return replace(found[2], reason=f"{head}; {found[2].reason}")

    def _best_swap(
        self, blocks: list[BlockObservation], now_sec: float
    ) -> tuple[float, float, Decision] | None:
        """(score, gain_ms, decision) of the best gain/cost swap among one model's blocks, or None."""
        cfg = self.config
        accuracy = estimated_accuracy(blocks)
        best: tuple[float, float, BlockObservation, VariantOption, float] | None = None
        for block in blocks:
            if block.locked or not self._dwell_ok(block, now_sec):
                continue
            current = option(block, block.variant)
            if current is None or current.solo_ms is None:
                continue
            current_rel = current.relative_accuracy if block.variant != ORIGINAL else 1.0
            if current_rel is None or current_rel <= 0.0:
                continue
            for opt in block.options:
                if opt.name == block.variant or opt.solo_ms is None or opt.relative_accuracy is None:
                    continue
                gain_ms = current.solo_ms - opt.solo_ms
                if gain_ms < max(cfg.min_swap_gain_ms, 1e-9):
                    continue
                new_accuracy = accuracy / current_rel * opt.relative_accuracy
                if not within_accuracy_floor(new_accuracy, cfg.accuracy_floor):
                    continue
                cost = max(current_rel - opt.relative_accuracy, _COST_FLOOR)
                score = gain_ms / cost
                if best is None or (score, gain_ms) > (best[0], best[1]):
                    best = (score, gain_ms, block, opt, new_accuracy)
        if best is None:
            return None
        score, gain_ms, block, opt, new_accuracy = best
        reason = (
            f"nothing to serialize; swap {block.model}/{block.block} {block.variant} -> {opt.name}: "
            f"gain {gain_ms:.1f} ms, est. accuracy {accuracy:.3f} -> {new_accuracy:.3f} "
            f"(floor {cfg.accuracy_floor:.3f}), best gain/cost"
        )
        return score, gain_ms, Decision(block.model, block.block, DecisionKind.VARIANT, opt.name, reason)

    def _relax(
        self, model: ModelObservation, blocks: list[BlockObservation], now_sec: float
    ) -> Decision | None:
        cfg = self.config
        latency = _latency(model)
        comfort_ms = model.deadline_ms * min(1.0 - cfg.hysteresis, cfg.relax_latency_fraction)
        head = (
            f"{model.name} comfortable for >= {cfg.relax_dwell_sec:.1f} s: latency {latency:.1f} ms "
            f"<= {comfort_ms:.1f} ms"
        )
        swapped = [b for b in blocks if b.variant != ORIGINAL and not b.locked and self._dwell_ok(b, now_sec)]

        def rel(b: BlockObservation) -> float:
            opt = option(b, b.variant)
            return opt.relative_accuracy if opt is not None and opt.relative_accuracy is not None else 1.0

        for block in sorted(swapped, key=rel):
            current, original = option(block, block.variant), option(block, ORIGINAL)
            if original is None or original.solo_ms is None or current is None or current.solo_ms is None:
                continue
            predicted = latency + max(original.solo_ms - current.solo_ms, 0.0)
            if self._utilization is not None and model.rate_hz is not None:
                extra_ms = max(original.solo_ms - current.solo_ms, 0.0) * slowdown_factor(model)
                after = self._utilization + model.rate_hz * extra_ms / 1000.0
                if after > cfg.relax_max_utilization:
                    continue
            if predicted <= comfort_ms:
                reason = f"{head}; swap {block.block} back to original, predicted latency {predicted:.1f} ms"
                return Decision(model.name, block.block, DecisionKind.VARIANT, ORIGINAL, reason)
        sequential = [b for b in blocks if b.mode == SEQUENTIAL and not b.locked and self._dwell_ok(b, now_sec)
                      and (b.model, b.block) not in self._state.serialized_for_throughput]
        for block in sorted(sequential, key=lambda b: self._state.lag_at_serialize_ms.get((b.model, b.block), 0.0)):
            expected_lag = self._state.lag_at_serialize_ms.get((block.model, block.block), 0.0)
            predicted = latency + expected_lag
            if predicted <= comfort_ms:
                reason = (
                    f"{head}; {block.block} back to parallel, predicted latency {predicted:.1f} ms "
                    f"(LAG {expected_lag:.1f} ms when serialized)"
                )
                return Decision(model.name, block.block, DecisionKind.MODE, PARALLEL, reason)
        return None

    # -- helpers -------------------------------------------------------------------------------------------

    def _high_lag(self, block: BlockObservation, gain_ms: float | None = None) -> bool:
        """Serializing pays for this block: it saves at least ``lag_serialize_ms`` and ``lag_serialize_ratio``
        of its sequential latency (``gain_ms``, default :func:`_serialize_gain_ms`)."""
        cfg = self.config
        alone_ms = block.alone_ms
        if alone_ms is None or alone_ms <= 0.0:
            return False
        if gain_ms is None:
            gain_ms = _serialize_gain_ms(block)
        return gain_ms >= cfg.lag_serialize_ms and gain_ms >= cfg.lag_serialize_ratio * alone_ms

    def _dwell_ok(self, block: BlockObservation, now_sec: float) -> bool:
        last = self._state.last_change_sec.get((block.model, block.block))
        return last is None or now_sec - last >= self.config.min_dwell_sec

    def _model_settled(self, model: str, now_sec: float) -> bool:
        last = self._state.model_change_sec.get(model)
        return last is None or now_sec - last >= self.config.settle_sec

    def _record(self, decision: Decision, now_sec: float) -> Decision:
        self._state.last_change_sec[(decision.model, decision.block)] = now_sec
        self._state.model_change_sec[decision.model] = now_sec
        return Decision(decision.model, decision.block, decision.kind, decision.value, decision.reason, now_sec)


def _serialize_gain_ms(block: BlockObservation) -> float:
    """What making a parallel block sequential saves it, ms: its LAG (observed − solo) where sequential runs
    at the same thread count; in the partitioned pool, where it runs alone with every core, its observed
    latency (its solo until it ran) − its solo at ``sequential_threads`` (the interference it sheds plus the
    threads it gains)."""
    if block.sequential_solo_ms is not None:
        parallel_ms = block.ema_observed_ms if block.ema_observed_ms is not None else block.solo_ms
        if parallel_ms is not None:
            return parallel_ms - block.sequential_solo_ms
    return block.lag_ms


def _solo_of(block: BlockObservation, variant: str) -> float | None:
    opt = option(block, variant)
    return opt.solo_ms if opt is not None else block.solo_ms


def _latency(model: ModelObservation) -> float:
    """The model's latency figure over its computed frames (0 when none was computed: only drops)."""
    return float(model.latency_ms) if model.latency_ms is not None else 0.0


def _relative_slack(model: ModelObservation) -> float:
    latency = model.latency_ms if model.latency_ms is not None else 0.0
    if model.dropped_fraction > LATE_DROPPED_FRACTION:
        return -model.dropped_fraction - 1.0  # frames that never ran rank below any late latency
    return (model.deadline_ms - latency) / model.deadline_ms if model.deadline_ms > 0 else 0.0
