"""The policy's pure arithmetic on observations: predicted run times, device utilization, admission fractions
and accuracy estimates (also used by the compression report and the executor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from multidnn_sched.runtime.decisions import ORIGINAL
from multidnn_sched.runtime.observations import BlockObservation, ModelObservation, VariantOption

MAX_SKIP_PERIOD = 10
"""The mildest admission cut: skip every 10th frame."""
SLOWDOWN_RANGE = (0.5, 3.0)
"""Clamp of a model's measured slowdown (observed / solo device time per frame)."""
_ACCURACY_EPS = 1e-9


def option(block: BlockObservation, name: str) -> VariantOption | None:
    """The block's option called ``name`` (``None`` if absent)."""
    for opt in block.options:
        if opt.name == name:
            return opt
    return None


def predicted_run_ms(blocks: Sequence[BlockObservation]) -> float | None:
    """Solo run time of one frame through the model's active blocks (``None`` if a block is unprofiled)."""
    run_ms = 0.0
    for block in blocks:
        current = option(block, block.variant)
        solo = current.solo_ms if current is not None and current.solo_ms is not None else block.solo_ms
        if solo is None:
            return None
        run_ms += solo
    return run_ms


def drain_ms(
    blocks: Sequence[BlockObservation], models: Sequence[ModelObservation], exclude_model: str
) -> float:
    """Expected wait of an exclusive (``sequential``) request for the block running beside it to end: the
    residual run time of the other models' block in progress at a random instant. A block of latency ``L`` that
    runs ``r`` times a second is in progress ``r L`` of the time and then has ``L / 2`` left on average, so the
    expected residual is ``sum(r L^2) / (2 sum(r L))`` (renewal theory), with ``L`` each block's EMA-observed
    latency and ``r`` its model's arrival rate (1 Hz where unknown: the weights only compare models). 0.0 when no
    other model's block has figures. While a sequential request waits, its own worker's slot idles and the gate
    admits nobody behind it (strict key order): that idle time is part of what ``sequential`` costs."""
    rate_of = {m.name: (m.rate_hz if m.rate_hz else 1.0) for m in models}
    busy = 0.0
    weighted = 0.0
    for block in blocks:
        if block.model == exclude_model or block.ema_observed_ms is None or block.ema_observed_ms <= 0.0:
            continue
        share = rate_of.get(block.model, 1.0) * block.ema_observed_ms
        busy += share
        weighted += share * block.ema_observed_ms
    return weighted / (2.0 * busy) if busy > 0.0 else 0.0


def slowdown_factor(model: ModelObservation) -> float:
    """The model's measured slowdown among the other models (1.0 when unknown), clamped to [0.5, 3]."""
    if model.slowdown is None:
        return 1.0
    return min(max(model.slowdown, SLOWDOWN_RANGE[0]), SLOWDOWN_RANGE[1])


def device_utilization(
    models: tuple[ModelObservation, ...] | list[ModelObservation] | Sequence[ModelObservation],
    blocks_of: dict[str, list[BlockObservation]],
    *,
    lower_bound: bool = False,
) -> float | None:
    """Predicted busy fraction of the shared device at the FULL arrival rates (every frame admitted): sum over
    models of rate_hz x solo run time of the active blocks x the model's measured slowdown. ``None`` when a
    model's rate or a block's solo latency is unknown — or, with ``lower_bound``, the sum over the models whose
    figures are known (``None`` if none is): at start-up a pipeline's later models get no frames until the first
    model's results come, yet the first model alone may already overload the device.

    Solo x slowdown rather than solo alone: among the other models' blocks (cold caches, memory bandwidth) the
    default models ran 10-40 % slower than their solo profile here, and a utilization built on solo figures
    admitted too much. Rather than the blocks' observed latencies alone: the slowdown is a per-frame ratio, so
    right after a swap the new variant's solo figure counts at once.
    """
    total = 0.0
    known = 0
    for model in models:
        run_ms = predicted_run_ms(blocks_of.get(model.name, []))
        if model.rate_hz is None or run_ms is None:
            if lower_bound:
                continue
            return None
        total += model.rate_hz * run_ms * slowdown_factor(model) / 1000.0
        known += 1
    return total if known else None


def quantize_fraction(fraction: float, min_fraction: float) -> float:
    """Round an admitted fraction DOWN to a regular frame pattern: ``1/k`` (every k-th frame) below one half,
    ``(k-1)/k`` (skip every k-th, k <= ``MAX_SKIP_PERIOD``) above, never below ``min_fraction``.

    Regular patterns keep admitted frames apart: at 0.55 some admitted frames would follow each other, and
    the second one waits for the first one's spill-over (measured: detector p99 80 -> 106 ms at 0.40-0.55).
    They also give the fraction a natural dead band, so estimation noise does not flip it every round.
    """
    if fraction >= 1.0:
        return 1.0
    if fraction >= 0.5:
        skip_every = min(max(2, math.floor(1.0 / (1.0 - fraction))), MAX_SKIP_PERIOD)
        return (skip_every - 1) / skip_every
    every = math.ceil(1.0 / max(fraction, 1e-9) - 1e-9)
    return max(1.0 / every, min_fraction)


def fair_shares(demands: dict[str, float], capacity: float = 1.0) -> dict[str, float]:
    """Max-min fair device time: each model is granted ``min(its demand, an equal split of what is left)``,
    cheapest first, and the rest goes to the models that want more (water-filling). 1.0 for every model when
    the demand fits.

    Returns the fraction of each model's frames that fits its grant. Every model gets at least
    ``min(demand, capacity / n)`` of the device, so none is starved, and a cheap model is served completely
    before an expensive one takes more — what a static deadline-ordered loop does too (measured on the default
    workload, 15 Hz, 2 cores: `sequential` served 86 / 86 / 87 % of the embedder's and classifier's frames but
    48 % of the detector's). A proportional cut (every model losing the same share) lost 25 % of the cheap
    models' frames there and gave fewer on-time frames than the loop.
    """
    fractions = dict.fromkeys(demands, 1.0)
    wanting = {name: max(d, 0.0) for name, d in demands.items()}
    if sum(wanting.values()) <= capacity:
        return fractions
    left = capacity
    pending = sorted(wanting, key=lambda n: wanting[n])
    while pending:
        split = left / len(pending)
        name = pending[0]
        if wanting[name] <= split:
            left -= wanting[name]
            pending.pop(0)
            continue
        for rest in pending:
            fractions[rest] = split / wanting[rest]
        break
    return fractions


def admission_fractions(
    demands: dict[str, float],
    target: float,
    min_fraction: float,
) -> dict[str, float]:
    """Share of frames to admit per model so that the summed demand fits ``target`` (the device's capacity).

    Args:
        demands: model -> busy fraction it asks for at its full rate (rate x run time).
        target: utilization the admitted demand must not exceed (the device's capacity).
        min_fraction: lowest fraction any model is cut to.

    The max-min fair grant of device time (:func:`fair_shares`), never below ``min_fraction``: admission
    control shapes an overload (drops on arrival, in a regular pattern, what would be computed and then miss)
    without starving any model. Returns 1.0 for every model when the demand already fits.
    """
    return {name: max(min_fraction, f) if f < 1.0 else 1.0 for name, f in fair_shares(demands, target).items()}


def relative_accuracy(variant_accuracy: float | None, original_accuracy: float | None) -> float | None:
    """A variant's relative accuracy as the policy uses it: the model's metric with only that block swapped,
    divided by the original model's metric on the same frames (the variant manifest's held-out figures).
    ``None`` when either is unknown or the original's is not positive (such a variant is never chosen)."""
    if variant_accuracy is None or original_accuracy is None or original_accuracy <= 0.0:
        return None
    return variant_accuracy / original_accuracy


def within_accuracy_floor(estimated: float, accuracy_floor: float) -> bool:
    """Whether an estimated relative model accuracy satisfies the floor (the test every swap must pass)."""
    return estimated >= accuracy_floor - _ACCURACY_EPS


def estimated_accuracy(blocks: Sequence[BlockObservation]) -> float:
    """Relative model accuracy: product of the active variants' relative accuracies (unknown counts as 1)."""
    accuracy = 1.0
    for block in blocks:
        opt = option(block, block.variant)
        if block.variant != ORIGINAL and opt is not None and opt.relative_accuracy is not None:
            accuracy *= opt.relative_accuracy
    return accuracy
