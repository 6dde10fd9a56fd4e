"""CPU / CUDA abstraction for the executor: slots, intra-op threads, streams and block timing.

CPU. A *slot* is a core. A block in ``parallel`` mode takes one slot and runs with one intra-op thread beside
other models' blocks; a block in ``sequential`` mode takes every slot (an exclusive slot) and runs with all
intra-op threads. A parallel block that finds the device idle and nobody waiting also takes every slot and
all threads (work-conserving: one model alone runs as fast as a direct forward).
Measured here (torch 2.14.1, OpenMP backend, 2 cores): ``torch.set_num_threads(n)`` called in a worker thread
governs that thread's own OpenMP team only — a 64-channel 3x3 conv at 112x112 ran 16 ms in a thread that set 1
after another thread set 2, and 11.7 ms in a thread that set 2 after another set 1 (``torch.get_num_threads()``
still reports one process-wide value). A call costs ~0.2 us, so each worker sets its count before each block.

CUDA. Every model gets its own stream; blocks of different models overlap on the GPU. Timing uses a pair of
``torch.cuda.Event`` recorded on the model's stream; the worker waits for the end event (releasing the GIL), so
a slot is held until the block's kernels finished and a sequential block really runs alone.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from multidnn_sched.runtime.block import Carry

_NO_STREAM = contextlib.nullcontext()

RunTicket = tuple[int, bool]
"""A block run's ticket from :meth:`SlotGate.run_started`: (its start number, whether nothing else was running)."""

CUDA_PARALLEL_SLOTS = 1 << 16
"""Slots of a CUDA device: parallel blocks never wait for each other there (streams), sequential take all."""


class SlotGate:
    """Reader/writer-style admission of blocks to the device, in priority-key order.

    ``acquire(exclusive, key)`` waits until the caller is the most urgent waiter (smallest ``key``) and enough
    slots are free; strict order (no back-filling) so an exclusive request cannot starve. A shared request
    takes one slot, or all of them when the device is idle and nobody else waits (unless ``greedy=False``).

    Args:
        capacity: number of slots (CPU: cores; CUDA: :data:`CUDA_PARALLEL_SLOTS`).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"SlotGate capacity must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self._free = capacity
        self._cond = threading.Condition(threading.Lock())
        self._waiters: list[tuple[float | tuple[float, int], int]] = []
        self._seq = itertools.count()
        self._running = 0  # block runs between run_started and run_ended
        self._run_starts = 0

    def run_started(self) -> RunTicket:
        """Count a block run in: its ticket for :meth:`run_ended` (its start number, whether nothing else ran)."""
        with self._cond:
            return self._note_run_start()

    def run_ended(self, ticket: RunTicket) -> bool:
        """Count a block run out: True when it ran alone from start to end (no other run overlapped it)."""
        with self._cond:
            return self._note_run_end(ticket)

    def acquire_run(self, exclusive: bool, key: float | tuple[float, int], *, greedy: bool = True
                    ) -> tuple[int, RunTicket]:
        """:meth:`acquire` and :meth:`run_started` under one lock: the executor's block boundary takes one
        lock per block start and one per end instead of two each (its saving, a few us, was not separable from
        the host's noise in the stamps of 2026-12-02; the other cuts of that session were)."""
        with self._cond:
            return self._acquire_locked(exclusive, key, greedy), self._note_run_start()

    def release_run(self, slots: int, ticket: RunTicket) -> bool:
        """:meth:`run_ended` and :meth:`release` under one lock; returns whether the run was alone."""
        with self._cond:
            alone = self._note_run_end(ticket)
            self._release_locked(slots)
            return alone

    def _note_run_start(self) -> RunTicket:
        self._running += 1
        self._run_starts += 1
        return self._run_starts, self._running == 1

    def _note_run_end(self, ticket: RunTicket) -> bool:
        start_number, alone_at_start = ticket
        self._running -= 1
        return alone_at_start and self._run_starts == start_number

    def acquire(self, exclusive: bool, key: float | tuple[float, int], *, greedy: bool = True) -> int:
        """Block until admitted; return the number of slots granted (release exactly that many).

        ``key``: smaller is more urgent; one gate compares keys of one type (the executor's jobs pass
        ``(deadline, -priority)`` tuples).

        ``greedy=False``: a shared request never takes more than one slot, even on an idle device.
        """
        with self._cond:
            return self._acquire_locked(exclusive, key, greedy)

    def _acquire_locked(self, exclusive: bool, key: float | tuple[float, int], greedy: bool) -> int:
        ticket = (key, next(self._seq))
        heapq.heappush(self._waiters, ticket)
        while True:
            if self._waiters[0] == ticket:
                if exclusive and self._free == self.capacity:
                    granted = self.capacity
                    break
                if not exclusive and self._free >= 1:
                    alone = greedy and self._free == self.capacity and len(self._waiters) == 1
                    granted = self.capacity if alone else 1
                    break
            self._cond.wait()
        heapq.heappop(self._waiters)
        self._free -= granted
        if self._waiters:
            self._cond.notify_all()
        return granted

    def release(self, slots: int) -> None:
        """Give back ``slots`` granted by :meth:`acquire`."""
        with self._cond:
            self._release_locked(slots)

    def _release_locked(self, slots: int) -> None:
        self._free += slots
        if self._free > self.capacity:
            raise RuntimeError(f"SlotGate released more slots than granted: free {self._free} > {self.capacity}")
        if self._waiters:
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        """Whether any slot is held or anyone waits."""
        with self._cond:
            return self._free != self.capacity or bool(self._waiters)


class BlockTimer:
    """Times one block call: the clock on CPU, a CUDA event pair on the model's stream on CUDA."""

    def __init__(self, clock: Callable[[], float], stream: Any = None) -> None:
        self._clock = clock
        self._stream = stream
        self._t0 = 0.0
        self._events: tuple[Any, Any] | None = None

    def start(self) -> None:
        if self._stream is not None:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record(self._stream)
            self._events = (begin, end)
        else:
            self._t0 = self._clock()

    def stop(self) -> float:
        """Wait for the block to finish and return its latency in ms."""
        if self._events is not None:
            begin, end = self._events
            end.record(self._stream)
            end.synchronize()
            return float(begin.elapsed_time(end))
        return (self._clock() - self._t0) * 1000.0


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware): the default intra-op budget of an exclusive block.

    Not ``torch.get_num_threads()``: that is the *calling thread's* setting, which callers lower on purpose
    (e.g. to 1 in a main thread that must not own an OpenMP team)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def partitioned_cpu_pool(cores: int, models: int) -> tuple[int, int]:
    """Workers and intra-op threads per block of the partitioned CPU pool that fits ``cores``: one worker per
    model up to the cores (a model runs one block at a time, so more workers than models only idle), and the
    cores split evenly between them (``workers x threads <= cores``: one fixed OpenMP team per worker, never
    more OpenMP threads than cores, see ``executor.ONE_OPENMP_TEAM_NOTE``). No tuned constant: both figures
    follow from the core and model counts.

    The CPU default of the bench and the ROS container, through :func:`resolve_pool`. Measured in ``make demo``'s
    ``blocks+swap`` replay (2-core VM, 3 models -> 2 workers x 1 thread; 2026-12-07, three interleaved replays
    each): classifier end-to-end p99 169 / 472 / 240 ms against 522 / 489 / 484 ms for one elastic worker,
    detector stage p50 39 / 47 / 38 against 58 / 51 / 43 ms, the runtime queue wait p50 0.7-0.9 ms against
    6-17 ms, frames processed 300 / 297 / 300 against 294 / 295 / 297 (docs/results.md, make demo).

    Raises:
        ValueError: ``cores`` or ``models`` below 1.
    """
    if cores < 1 or models < 1:
        raise ValueError(f"partitioned_cpu_pool needs cores >= 1 and models >= 1, got {cores!r}, {models!r}")
    workers = min(models, cores)
    return workers, max(1, cores // workers)


def resolve_pool(device: str, num_workers: int | None, worker_threads: int | None, models: int,
                 cores: int | None = None) -> tuple[int | None, int | None]:
    """``BlockExecutor``'s ``(num_workers, worker_threads)`` for requested values where ``None`` means auto —
    the one default of the bench (a workload without ``executor:`` keys) and the ROS container (``workers`` /
    ``worker_threads`` 0). CUDA: auto workers = one per model (``None``), no thread budget. CPU, both auto: the
    partitioned pool of :func:`partitioned_cpu_pool` (2 cores, 3 models: 2 workers x 1 thread, with its
    measurement); a thread budget with auto workers: as many workers as fit the cores (at most one per model);
    workers given and threads auto: the elastic pool (a block takes the slots it is granted up to its profiled
    best count; ``num_workers=1`` is the default before 2026-12-07)."""
    if device.startswith("cuda"):
        return num_workers, None
    cores = usable_cores() if cores is None else cores
    if num_workers is None and worker_threads is None:
        return partitioned_cpu_pool(cores, models)
    if num_workers is None and worker_threads is not None:
        return max(1, min(models, cores // worker_threads)), worker_threads
    return num_workers, worker_threads


class Device:
    """The device all blocks run on.

    Args:
        spec: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        cpu_threads: intra-op threads a sequential (or lone) block gets on CPU; default: :func:`usable_cores`
            (not the constructing thread's torch setting).
        clock: seconds clock for CPU timing.
    """

    def __init__(
        self, spec: str = "cpu", *, cpu_threads: int | None = None, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.torch_device = torch.device(spec)
        if self.torch_device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {spec!r}")
        if self.torch_device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} asked for but torch.cuda.is_available() is False")
        self.cpu_threads = cpu_threads if cpu_threads is not None else usable_cores()
        if self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1, got {self.cpu_threads!r}")
        self._clock = clock
        self._is_cuda = self.torch_device.type == "cuda"  # read at every block boundary: a plain attribute
        self._streams: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._thread_state = threading.local()

    @property
    def is_cuda(self) -> bool:
        return self._is_cuda

    @property
    def slots(self) -> int:
        """Capacity of the device's :class:`SlotGate`."""
        return CUDA_PARALLEL_SLOTS if self.is_cuda else self.cpu_threads

    def stream_for(self, model: str) -> Any:
        """The model's own CUDA stream (created on first use); ``None`` on CPU."""
        if not self._is_cuda:
            return None
        with self._lock:
            stream = self._streams.get(model)
            if stream is None:
                stream = torch.cuda.Stream(device=self.torch_device)
                self._streams[model] = stream
            return stream

    def stream_context(self, model: str) -> contextlib.AbstractContextManager[Any]:
        """Make the model's stream current (no-op on CPU: one shared ``nullcontext``, no generator per
        block — the executor enters this twice per block)."""
        stream = self.stream_for(model)
        if stream is None:
            return _NO_STREAM
        return torch.cuda.stream(stream)

    def set_threads(self, granted_slots: int) -> None:
        """Set the calling thread's intra-op threads for a block granted ``granted_slots`` slots (CPU only)."""
        if self.is_cuda:
            return
        threads = min(granted_slots, self.cpu_threads)
        if getattr(self._thread_state, "threads", None) != threads:
            torch.set_num_threads(threads)
            self._thread_state.threads = threads

    def timer(self, model: str) -> BlockTimer:
        """A timer for one block of ``model``."""
        return BlockTimer(self._clock, self.stream_for(model))

    def to_device(self, carry: Carry) -> Carry:
        """Move a carry's tensors to this device (no copy when already there)."""
        if isinstance(carry, torch.Tensor):
            return carry.to(self.torch_device, non_blocking=True) if carry.device != self.torch_device else carry
        if isinstance(carry, tuple):
            return tuple(self.to_device(c) for c in carry)
        if isinstance(carry, list):
            return [self.to_device(c) for c in carry]
        if isinstance(carry, dict):
            return {k: self.to_device(v) for k, v in carry.items()}
        return carry

    def synchronize(self, model: str | None = None) -> None:
        """Wait for the model's stream (or the whole device) to finish; no-op on CPU."""
        if not self.is_cuda:
            return
        if model is None:
            torch.cuda.synchronize(self.torch_device)
        else:
            self.stream_for(model).synchronize()
