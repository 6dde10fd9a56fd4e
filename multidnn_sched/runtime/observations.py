"""What a scheduling policy sees and the interface it implements (:class:`SchedulingPolicy`).

Frozen records the executor builds from its LAG tracker, latency windows and device, one snapshot per
:meth:`SchedulingPolicy.decide` call. Pure data: no threads, no clocks, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from multidnn_sched.runtime.decisions import ORIGINAL, PARALLEL, Decision, Mode


@dataclass(frozen=True)
class VariantOption:
    """One implementation a block can run.

    Attributes:
        name: ``"original"`` or the variant name.
        solo_ms: latency alone on this device (``None``: unknown, never chosen).
        relative_accuracy: model accuracy with only this block swapped, divided by the original model
            accuracy (1.0 for the original; ``None``: unknown, never chosen).
    """

    name: str
    solo_ms: float | None
    relative_accuracy: float | None


@dataclass(frozen=True)
class BlockObservation:
    """What the executor knows about one block.

    Attributes:
        model: model name.
        block: block name.
        solo_ms: solo latency of the active variant (``None``: not profiled).
        ema_observed_ms: EMA of observed latency.
        lag_ms: EMA of observed − solo.
        mode: ``"parallel"`` or ``"sequential"``.
        variant: active variant name.
        options: every usable implementation of the block, the original included.
        locked: forced by an override; the policy leaves it alone.
        contended_ms: EMA of the block's latency in runs that overlapped another block (``None``: none yet).
        contended_samples: how many such runs are behind ``contended_ms``.
        solo_at_input: ``solo_ms`` was measured at the input size (crops per frame, the LAG bucket) the block's
            observed and contended figures come from; ``False``: it is the profile's figure at another size, which
            says nothing about contention (the parallel/sequential choice skips such a block).
        sequential_solo_ms: partitioned CPU pool: the active variant's solo latency at the pool's
            ``sequential_threads`` (what the block takes in ``sequential``: alone, every core); ``None`` where
            sequential runs at the parallel thread count (then ``solo_ms`` is its figure). For a block in
            ``sequential`` mode there, ``solo_ms`` / ``ema_observed_ms`` / ``lag_ms`` are its figures at
            ``sequential_threads`` already.
    """

    model: str
    block: str
    solo_ms: float | None
    ema_observed_ms: float | None
    lag_ms: float
    mode: Mode = PARALLEL
    variant: str = ORIGINAL
    options: tuple[VariantOption, ...] = ()
    locked: bool = False
    contended_ms: float | None = None
    contended_samples: int = 0
    solo_at_input: bool = True
    sequential_solo_ms: float | None = None

    @property
    def alone_ms(self) -> float | None:
        """What the block takes in ``sequential``: the solo at the sequential thread count where it differs,
        else the solo latency."""
        return self.sequential_solo_ms if self.sequential_solo_ms is not None else self.solo_ms


@dataclass(frozen=True)
class ModelObservation:
    """What the executor knows about one model.

    Attributes:
        name: model name.
        deadline_ms: per-frame deadline (arrival to result).
        latency_ms: recent end-to-end latency figure (the executor passes a high percentile of a short
            window); ``None`` when there are no samples.
        priority: larger is more important.
        samples: number of frames behind ``latency_ms``.
        rate_hz: recent frame arrival rate (``None``: unknown).
        admit_fraction: share of arriving frames the executor currently admits (1.0: every frame).
        slowdown: median over recent frames of (device time the frame's blocks took) / (their solo
            latencies): how much slower the model runs among the others than alone (``None``: unknown).
        dropped_fraction: share of the recent frames (``samples``) that were not computed — dropped by the
            queue policy or shed; ``latency_ms`` is over the computed ones only (``None`` if none was).
    """

    name: str
    deadline_ms: float
    latency_ms: float | None
    priority: int = 0
    samples: int = 0
    rate_hz: float | None = None
    admit_fraction: float = 1.0
    slowdown: float | None = None
    dropped_fraction: float = 0.0


@dataclass(frozen=True)
class DeviceObservation:
    """The device the blocks share, as far as scheduling can change anything on it.

    Attributes:
        kind: ``"cpu"`` or ``"cuda"``.
        workers: executor worker threads (blocks that can run at the same time).
        slots: shares of the device (CPU: cores; CUDA: effectively unlimited streams).
        fixed_block_threads: the partitioned CPU pool's intra-op threads of every parallel block
            (``BlockExecutor(worker_threads=N)``); ``None``: elastic (a sequential block gets every slot).
        sequential_threads: the partitioned pool's intra-op threads of a sequential block (every core by
            default, ``BlockExecutor.sequential_threads``); ``None``: the same as ``fixed_block_threads``.
    """

    kind: str = "cpu"
    workers: int = 1
    slots: int = 1
    fixed_block_threads: int | None = None
    sequential_threads: int | None = None

    @property
    def can_overlap(self) -> bool:
        """True when two blocks can really run at once: only then is ``sequential`` different from
        ``parallel`` (one worker or one slot runs every block alone anyway)."""
        return self.workers >= 2 and self.slots >= 2

    @property
    def sequential_is_faster(self) -> bool:
        """True when ``sequential`` can shorten a block beyond removing interference: it runs with more threads
        than in ``parallel``: every slot of an elastic pool, or the partitioned pool's ``sequential_threads``
        above its fixed count."""
        if not self.can_overlap:
            return False
        if self.fixed_block_threads is None:
            return True
        return self.sequential_threads is not None and self.sequential_threads > self.fixed_block_threads


@dataclass(frozen=True)
class Observations:
    """One snapshot handed to :meth:`SchedulingPolicy.decide`."""

    models: tuple[ModelObservation, ...]
    blocks: tuple[BlockObservation, ...]
    device: DeviceObservation = field(default_factory=DeviceObservation)


class SchedulingPolicy(Protocol):
    """What the executor needs of a policy: observations in, typed decisions out, no clock, no threads.

    The executor calls :meth:`decide` from its decision thread and applies every returned decision at the next
    block boundary; ``config`` may be read for logging (``None`` is fine).
    """

    def decide(self, observations: Observations, now_sec: float) -> list[Decision]:
        """The changes to apply now (possibly none), most urgent first."""
        ...
