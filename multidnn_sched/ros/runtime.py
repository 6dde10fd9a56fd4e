"""What the ROS nodes need from the model runtime, as a small interface the tests can fake.

The nodes only ``submit(model, carry) -> Future`` and read a :class:`RuntimeStatus` for ``/diagnostics``; the
container also pushes :class:`RuntimeSettings` and forced variants / modes into it. Two implementations:

* :class:`DirectRuntime` (``baseline``): each model runs whole, synchronously, in the node callback that
  submits it -- what a ROS user does today. No shared executor, no swap.
* ``SharedRuntime`` (:mod:`multidnn_sched.ros.shared_runtime`): the one shared ``BlockExecutor``.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from multidnn_sched.exceptions import ConfigError, ExecutorShutdownError
from multidnn_sched.runtime.frame_times import FrameTimes, attach_frame_times
from multidnn_sched.runtime.policy import PolicyConfig

Carry = Any


@dataclass
class BlockStatus:
    """State of one block, as ``/diagnostics`` shows it.

    Attributes:
        model: model name.
        block: block name.
        lag_ms: predicted LAG (EMA of observed minus solo latency), ``None`` when not measured.
        mode: ``"parallel"``, ``"sequential"`` or ``"whole"`` (baseline: the model is not cut).
        variant: active variant name (``"original"`` for the uncompressed block).
    """

    model: str
    block: str
    lag_ms: float | None
    mode: str
    variant: str


@dataclass
class DecisionRecord:
    """One scheduling decision: what changed on which block, and why.

    Attributes:
        time_sec: when it was applied (runtime clock, seconds).
        model: model name.
        block: block name.
        action: e.g. ``"serialize"``, ``"parallel"``, ``"swap:int8"``, ``"forced variant int8"``.
        reason: the policy's reason string.
    """

    time_sec: float
    model: str
    block: str
    action: str
    reason: str


@dataclass
class RuntimeStatus:
    """Snapshot of the runtime for ``/diagnostics``.

    Attributes:
        blocks: one entry per block of every model.
        decisions: most recent decisions, oldest first.
        dropped: frames dropped by the runtime's queues, per model.
        workers: the shared executor's worker threads (0: no shared executor, e.g. baseline mode).
        worker_threads: intra-op threads of every block (the partitioned CPU pool); 0: elastic, CUDA or none.
        frames_in_flight: frames of one model dispatched at once (0: no shared executor).
        sequential_threads: intra-op threads of a sequential block of the partitioned CPU pool (alone, every core
            by default); 0: the same as ``worker_threads`` (or elastic, CUDA, none).
    """

    blocks: list[BlockStatus] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    workers: int = 0
    worker_threads: int = 0
    frames_in_flight: int = 0
    sequential_threads: int = 0


@dataclass
class RuntimeSettings:
    """Live-tunable runtime knobs (the container's ``lag.*``, ``policy.*`` and ``models.*`` parameters).

    Attributes:
        policy: the scheduling policy's configuration.
        ema_alpha: EMA weight of the newest latency / LAG sample.
        deadlines_ms: per-model latency target.
        priorities: per-model priority (higher first).
    """

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ema_alpha: float = 0.2
    deadlines_ms: dict[str, float] = field(default_factory=dict)
    priorities: dict[str, int] = field(default_factory=dict)


class ModelRuntime(Protocol):
    """The runtime as the nodes see it."""

    def submit(self, model: str, carry: Carry) -> Future:
        """Queue one frame's input for ``model``; the future resolves to the model output.

        The future fails with ``FrameDroppedError`` when the frame is dropped by the queue policy and with
        ``ExecutorShutdownError`` after shutdown.
        """
        ...

    def status(self) -> RuntimeStatus: ...

    def configure(self, settings: RuntimeSettings) -> None: ...

    def set_override(
        self, model: str, block: str, mode: str | None = None, variant: str | None = None
    ) -> None:
        """Force a block's mode and / or variant (``None``: leave as is; ``"auto"``: back to the policy)."""
        ...

    def shutdown(self, timeout_sec: float = 5.0) -> bool: ...


DECISION_LOG_SIZE = 50
"""Decisions kept for ``/diagnostics``."""


class DirectRuntime:
    """Baseline: each model whole, run synchronously in the submitting thread (the node's callback).

    Args:
        models: model name -> callable ``carry -> output`` (an ``nn.Module`` or a ``PartitionedModel``).
        clock: seconds, for decision timestamps.
    """

    def __init__(
        self, models: Mapping[str, Callable[[Carry], Carry]], clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._models = dict(models)
        self._clock = clock
        self._closed = False
        self._lock = threading.Lock()
        self._decisions: list[DecisionRecord] = []
        self._forced: dict[tuple[str, str], str] = {}

    @property
    def model_names(self) -> list[str]:
        return list(self._models)

    def submit(self, model: str, carry: Carry) -> Future:
        future: Future = Future()
        if self._closed:
            future.set_exception(ExecutorShutdownError(f"DirectRuntime is shut down; cannot run {model!r}"))
            return future
        fn = self._models.get(model)
        if fn is None:
            future.set_exception(ConfigError(f"expected a model in {sorted(self._models)}, got {model!r}"))
            return future
        try:
            started = self._clock()
            with torch.inference_mode():
                output = fn(carry)
            attach_frame_times(future, FrameTimes(started, started, self._clock()))
            future.set_result(output)
        except Exception as error:  # noqa: BLE001 - handed to the caller through the future
            if error.__traceback__ is not None:
                traceback.clear_frames(error.__traceback__)  # no cycle through this frame's locals (the input)
            future.set_exception(error)
        return future

    def status(self) -> RuntimeStatus:
        blocks = []
        for name, fn in self._models.items():
            block_names = getattr(fn, "block_names", None) or ["whole"]
            blocks.extend(BlockStatus(name, block, None, "whole", "original") for block in block_names)
        with self._lock:
            return RuntimeStatus(blocks=blocks, decisions=list(self._decisions), dropped={})

    def configure(self, settings: RuntimeSettings) -> None:
        del settings  # the baseline has no scheduler

    def set_override(
        self, model: str, block: str, mode: str | None = None, variant: str | None = None
    ) -> None:
        with self._lock:
            self._decisions.append(
                DecisionRecord(
                    self._clock(),
                    model,
                    block,
                    "ignored",
                    f"baseline runs models whole (mode={mode}, variant={variant})",
                )
            )
            del self._decisions[:-DECISION_LOG_SIZE]

    def shutdown(self, timeout_sec: float = 5.0) -> bool:
        del timeout_sec
        self._closed = True
        return True
