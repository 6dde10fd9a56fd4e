"""LAG: how much slower a block runs under contention than alone.

For every block ``b`` the tracker keeps

* ``solo_ms``: the block's latency measured alone with the whole device (profiled at start-up, re-profiled
  when idle; it follows the active variant, see :meth:`LagTracker.set_solo`);
* ``ema_observed_ms``: an exponential moving average of the latency observed in service;
* ``lag_ms``: an EMA of ``observed - solo`` with the same ``alpha`` — the *predicted LAG* the policy reads.

The EMA update is ``ema <- alpha * x + (1 - alpha) * ema``; the first sample initialises it. The tracker is
pure: no threads, the clock is injected (only used to stamp updates), so it is unit-tested with numbers.

:func:`profile_model` measures the solo latencies: every block (and usable variant) alone on the device.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from multidnn_sched.runtime.block import Carry, PartitionedModel
from multidnn_sched.runtime.decisions import ORIGINAL
from multidnn_sched.runtime.device import Device, SlotGate
from multidnn_sched.runtime.variants import VariantRegistry, carry_signature

BlockKey = tuple[str, str]
"""``(model_name, block_name)``."""
LagKey = tuple[str, str, str, int]
"""``(model_name, block_name, variant, input_bucket)``: what a LAG figure is measured against — the solo
latency of the implementation that actually ran, at the input size it ran on."""


def input_bucket(carry: Carry) -> int:
    """Power-of-two bucket of the carry's batch size (leading dimension of its first tensor; 1 for none).

    Crops batches vary frame to frame (1-32 crops for the embedder and classifier): a block's latency at 32
    crops is not contention over its latency at 4. Buckets 1, 2, 4, 8, ... keep the solo figures apart.
    """
    tensor = _first_tensor(carry)
    if tensor is None or tensor.dim() == 0:
        return 1
    n = max(int(tensor.shape[0]), 1)
    return 1 << (n - 1).bit_length()


def _first_tensor(carry: Carry) -> torch.Tensor | None:
    if isinstance(carry, torch.Tensor):
        return carry
    if isinstance(carry, (tuple, list)):
        for item in carry:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(carry, dict):
        for item in carry.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None

PROFILE_MAX_BUCKET: int = 32
"""Largest input bucket profiled at start-up for batch inputs (crops): the node side cuts at most a frame's
detections, and the default scenes show 4-10 objects plus false positives (buckets 4-16); 32 leaves margin. A
frame in a larger bucket gets its solo figure from its first run alone, until then no LAG."""


def bucket_carries(carry: Carry, max_bucket: int = PROFILE_MAX_BUCKET) -> list[Carry]:
    """The example input in every other power-of-two bucket up to ``max_bucket``: its rows, cut or repeated, to
    the middle of each bucket (bucket ``b`` holds batches ``b/2 + 1 .. b``; timed at ``3b/4``, so frames spread
    over the bucket see a LAG of ~0 alone, not a negative one). Only a plain tensor with a batch of crops
    (leading dimension > 1) has buckets: a frame-sized input (batch 1) or a structured carry gives ``[]``."""
    if not isinstance(carry, torch.Tensor) or carry.dim() < 2 or carry.shape[0] < 2:
        return []
    own = input_bucket(carry)
    out: list[Carry] = []
    bucket = 1
    while bucket <= max_bucket:
        if bucket != own:
            size = bucket if bucket <= 2 else (3 * bucket) // 4
            reps = -(-size // carry.shape[0])
            out.append(carry.repeat(reps, *([1] * (carry.dim() - 1)))[:size].contiguous())
        bucket *= 2
    return out


MULTI_THREAD_MAX_RATIO = 0.9
"""At profiling a CPU block keeps all intra-op threads only if they cut its solo latency to <= 0.9x one thread's.
Measured here with the machine shared (load average ~9 on 2 cores): the default detector ran 0.31-0.43 s with
1 thread but 1.1-4.0 s with 2 (OpenMP spin-waiting threads descheduled; with OMP_WAIT_POLICY=PASSIVE 2 threads
were no faster than 1). On an idle machine large convolution blocks gain ~1.7x from 2 threads and keep them."""


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
        ema_contended_ms: EMA of the latencies of runs that overlapped another block (``None``: none yet) —
            what the block costs in ``parallel`` beside other models' blocks.
        contended_samples: number of such runs.
    """

    solo_ms: float | None = None
    ema_observed_ms: float | None = None
    lag_ms: float = 0.0
    last_observed_ms: float | None = None
    samples: int = 0
    last_update_sec: float | None = None
    ema_contended_ms: float | None = None
    contended_samples: int = 0


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

    def update(self, key: Hashable, observed_ms: float, *, alone: bool = False) -> BlockTiming:
        """Fold one observed latency in and return the block's LIVE figures (see :meth:`peek`).

        ``alone``: no other block ran at any moment of this run, so the sample IS a solo latency: it refines
        ``solo_ms`` (EMA; it starts it for an input bucket that was never profiled). The LAG sample is taken
        against the solo figure from before this sample, so a contention-free stream keeps LAG ~0 and the solo
        figure follows slow drifts (thermal, other processes) without an idle re-profile.
        """
        if observed_ms < 0.0:
            raise ValueError(f"observed latency of {key!r} must be >= 0 ms, got {observed_ms!r}")
        timing = self._get(key)
        timing.ema_observed_ms = ema(timing.ema_observed_ms, observed_ms, self.alpha)
        if timing.solo_ms is None and alone:
            timing.solo_ms = observed_ms
        if timing.solo_ms is not None:
            lag_sample = observed_ms - timing.solo_ms
            seeded = key in self._lag_seeded
            timing.lag_ms = ema(timing.lag_ms if seeded else None, lag_sample, self.alpha)
            self._lag_seeded.add(key)
        if alone and timing.solo_ms is not None:
            timing.solo_ms = ema(timing.solo_ms, observed_ms, self.alpha)
        if not alone:
            timing.ema_contended_ms = ema(timing.ema_contended_ms, observed_ms, self.alpha)
            timing.contended_samples += 1
        timing.last_observed_ms = observed_ms
        timing.samples += 1
        timing.last_update_sec = self._clock()
        return timing

    def timing(self, key: Hashable) -> BlockTiming:
        """A copy of the block's figures (all ``None`` / 0 for an unknown block)."""
        return replace(self._timings.get(key, BlockTiming()))

    def peek(self, key: Hashable) -> BlockTiming | None:
        """The block's LIVE figures (``None`` for an unknown block), for the executor's per-block hot path.

        No copy: the caller holds the executor's stats lock and must not modify or keep the object.
        ``timing()`` copies a dataclass per call; the shedding check reads every block of a model at every
        block boundary, so copies there cost O(blocks^2) per frame.
        """
        return self._timings.get(key)

    def snapshot(self) -> dict[Hashable, BlockTiming]:
        """Copies of all blocks' figures, keyed as they were updated."""
        return {key: replace(t) for key, t in self._timings.items()}


@dataclass
class BlockProfile:
    """Solo figures of one block from :func:`profile_model`.

    Attributes:
        solo_ms: median solo latency per implementation (``"original"`` and every valid variant).
        bucket: :func:`input_bucket` of the example input the block was timed on.
        threads_alone: CPU intra-op threads the block runs with when it has the device (``None`` on CUDA).
        sequential_solo_ms: median solo latency per implementation at the partitioned pool's
            ``sequential_threads`` (a sequential block runs alone with every core there); empty where no such
            count was asked for.
    """

    solo_ms: dict[str, float]
    threads_alone: int | None
    bucket: int = 1
    sequential_solo_ms: dict[str, float] = field(default_factory=dict)


def profile_model(
    pm: PartitionedModel, carry: Carry, device: Device, gate: SlotGate, registry: VariantRegistry, *,
    repeats: int = 5, warmup: int = 2, compare_threads: bool = True, fixed_threads: int | None = None,
    set_variant_solo: bool = True, sequential_threads: int | None = None,
) -> dict[str, BlockProfile]:
    """Time every block of ``pm`` (registered in ``registry`` under ``pm.name``) alone, keyed by block name.

    Each block runs under the gate's exclusive slot with key +inf (behind every queued frame), on the model's
    stream on CUDA. On CPU the original is timed with 1 and with all granted threads, interleaved; it keeps all
    threads only if they cut its median to <= :data:`MULTI_THREAD_MAX_RATIO` x one thread's, and its solo
    latency is that of the kept count. Variants are timed with the kept count; one that raises or whose output
    signature differs from the original's is disabled. The original's output signature is recorded. Leaves
    the calling thread's intra-op thread count changed (the caller restores it). ``compare_threads=False``
    (one CPU worker: nobody to share cores with) times and keeps all granted threads only. ``fixed_threads``
    (CPU, the executor's ``worker_threads``): every block runs with exactly that many threads, so it is timed
    with that count only — and, with ``sequential_threads`` (the count a sequential block of that pool runs
    with, every core), with that count too, interleaved, into :attr:`BlockProfile.sequential_solo_ms`.
    ``set_variant_solo=False`` leaves the variants' own ``solo_latency_ms`` (the figure
    the swap decisions compare, kept at the model's profiled input size) as it is: for profiles of other input
    sizes.
    """
    profiles: dict[str, BlockProfile] = {}
    carry = device.to_device(carry)
    with torch.inference_mode(), device.stream_context(pm.name):
        for block in pm.blocks:
            key = (pm.name, block.name)
            granted = gate.acquire(True, (math.inf, 0))
            try:
                in_sig = carry_signature(carry)
                seq_threads = (sequential_threads if fixed_threads is not None and not device.is_cuda
                               and sequential_threads is not None and sequential_threads != fixed_threads else None)
                if fixed_threads is not None and not device.is_cuda:
                    counts = [fixed_threads] if seq_threads is None else [fixed_threads, seq_threads]
                elif device.is_cuda or not compare_threads:
                    counts = [granted]
                else:
                    counts = sorted({1, granted})
                out, by_count = _time(pm.name, block.module, carry, device, counts, repeats, warmup)
                threads = fixed_threads if fixed_threads is not None and not device.is_cuda else max(counts)
                scales = by_count[threads] <= MULTI_THREAD_MAX_RATIO * by_count.get(1, math.inf)
                if fixed_threads is None and 1 in by_count and threads > 1 and not scales:
                    threads = 1
                registry.record_original(key, in_sig, carry_signature(out))
                profile = BlockProfile({ORIGINAL: by_count[threads]}, None if device.is_cuda else threads,
                                       input_bucket(carry))
                if seq_threads is not None:
                    profile.sequential_solo_ms[ORIGINAL] = by_count[seq_threads]
                variant_counts = [threads] if seq_threads is None else [threads, seq_threads]
                for variant in registry.usable_variants(key):
                    try:
                        v_out, v_by = _time(pm.name, variant.module, carry, device, variant_counts, repeats,
                                            warmup)
                        problem = registry.check_output(key, in_sig, v_out)
                    except Exception as exc:  # noqa: BLE001 - a broken variant is disabled, not fatal
                        problem = f"raised {type(exc).__name__}: {exc}"
                    if problem is not None:
                        registry.disable(key, variant.name, f"at profiling: {problem}")
                        continue
                    if set_variant_solo:
                        variant.solo_latency_ms = v_by[threads]
                    profile.solo_ms[variant.name] = v_by[threads]
                    if seq_threads is not None:
                        profile.sequential_solo_ms[variant.name] = v_by[seq_threads]
                profiles[block.name] = profile
            finally:
                gate.release(granted)
            carry = out
    return profiles


def _time(
    model: str, module: Any, carry: Carry, device: Device, thread_counts: list[int], repeats: int, warmup: int
) -> tuple[Carry, dict[int, float]]:
    """Median latency (ms) of ``module(carry)`` per intra-op thread count, the counts interleaved."""
    times: dict[int, list[float]] = {n: [] for n in thread_counts}
    out: Carry = None
    for i in range(warmup + max(1, repeats)):
        for threads in thread_counts:
            device.set_threads(threads)
            timer = device.timer(model)
            timer.start()
            out = module(carry)
            elapsed_ms = timer.stop()
            if i >= warmup:
                times[threads].append(elapsed_ms)
    return out, {n: statistics.median(ts) for n, ts in times.items()}
