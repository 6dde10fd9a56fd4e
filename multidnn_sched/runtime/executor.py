"""The one shared BlockExecutor: every model's blocks run as jobs on one device.

Thread model (details and defaults in docs/runtime.md):

* ``submit(model, carry)`` puts a frame in the model's bounded pending queue and returns a ``Future``. A model
  has at most ``frames_in_flight`` frames *dispatched* (handed to the workers) at a time (one by default; more
  lets consecutive frames of a model overlap on different workers); frames of one model finish in order (a
  result that is ready before an older frame's waits for it).
  When the pending queue is full the OLDEST pending frame is dropped (newest wins, the camera-stream policy):
  its future fails with :class:`FrameDroppedError` and the model's ``dropped`` count grows. A dispatched frame
  is never dropped.
* Dispatched frames are jobs in one ready heap ordered by key: EDF (arrival + deadline) by default, or FIFO
  (arrival); ``priority * priority_weight_ms`` is subtracted from the key (higher priority = more urgent). The
  default weight, 1 s per level, makes priority strict for deadlines below a second: a more important model's
  frame always goes first, EDF orders models of equal priority (10 ms gives a mild bias instead).
* Worker threads (CPU: one by default, :data:`CPU_DEFAULT_WORKERS`; CUDA: one per model) pop the most urgent
  job and run its blocks one after another without re-queueing; at each block boundary a worker hands its job
  back if a more urgent one waits for a worker. Before each block the worker asks the device's
  :class:`SlotGate` for a slot — exclusive for a ``sequential`` block, shared for a ``parallel`` one — in key
  order, sets its intra-op thread count to the slots granted, capped by the count profiling chose for the block
  (CPU), or makes the model's stream current (CUDA), reads the block's active variant once (a swap is a
  reference switch, never a torn block), runs and times it, and feeds the latency to the LAG tracker.
* A decision thread calls the policy every ``decision_interval_sec`` and applies its decisions; the next
  block boundary sees them. It also re-profiles solo latencies after ``reprofile_idle_sec`` of idleness.

A running block cannot be interrupted: ``shutdown(timeout_sec)`` fails every pending and dispatched frame with
:class:`ExecutorShutdownError` (running frames at their next block boundary), joins the threads, and returns
``False`` if some did not join in time. Threads are daemons, so the process can still exit.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from multidnn_sched.exceptions import (
    ConfigError,
    ExecutorShutdownError,
)
from multidnn_sched.runtime.block import BlockVariant, Carry, PartitionedModel
from multidnn_sched.runtime.control import ControlMixin
from multidnn_sched.runtime.decisions import ORIGINAL, PARALLEL, SEQUENTIAL, Decision
from multidnn_sched.runtime.device import Device, RunTicket, SlotGate
from multidnn_sched.runtime.frame_times import FrameTimes, attach_frame_times
from multidnn_sched.runtime.jobs import Frame, Job, Model, Outcome, fail
from multidnn_sched.runtime.lag import LagKey, LagTracker, input_bucket
from multidnn_sched.runtime.placement import PLACEMENTS
from multidnn_sched.runtime.policy import (
    Policy,
    SchedulingPolicy,
)
from multidnn_sched.runtime.prediction import PredictionMixin
from multidnn_sched.runtime.profiling import ProfilingMixin
from multidnn_sched.runtime.queueing import QueueingMixin
from multidnn_sched.runtime.shedding import SHED_PROBE_FRAMES, probe_due
from multidnn_sched.runtime.stats import BlockStats, ExecutorStats, ModelStats, percentile
from multidnn_sched.runtime.variants import VariantRegistry, carry_signature

SCHEDULES = ("policy", "parallel", "sequential")

CPU_DEFAULT_WORKERS = 1
"""Worker threads on CPU when ``num_workers`` is None (CUDA: one per model, one stream each). ``None`` would
mean one per registered model up to the usable cores: then a ``parallel`` block runs with one intra-op thread
beside another model's block and a ``sequential`` block waits for the whole device and runs with every core —
the per-block choice the policy makes from measured LAG (policy step 0). Measured on the 2-core dev/CI machine
(default workload, 15 Hz, quiet, 12 s timed after 6 s warm-up, 2026-12-02): ``blocks`` with 2 workers 0.439
of offered frames on time (joint 0.028), with 1 worker 0.635 (joint 0.528) — the second OpenMP team costs more
than overlapping frees (the solo detector measured 54 ms afterwards instead of 49). So one worker on CPU by
default; ``num_workers=2`` (``executor: {num_workers: 2}`` in a workload, ``workers`` in ROS) enables the
per-block choice, for many-core CPUs where it has to be measured again. With one worker the policy never
serializes (it would change nothing). That measurement was of the *elastic* pool (a block takes the slots it is
granted). The bench and the ROS container do not use this default since 2026-12-07: they pass the partitioned
pool of ``runtime.device.resolve_pool`` (2 cores, 3 models: 2 workers x 1 fixed thread), which they can size
because they know the models before the executor starts; ``BlockExecutor()`` on its own cannot.

ONE_OPENMP_TEAM_NOTE (the history of this default) — measured on the 2-core dev/CI machine (torch 2.14 CPU,
libgomp): every Python thread that runs a multi-threaded torch op owns an OpenMP team. As soon as the process has
more OpenMP threads than cores, libgomp throttles its spin-wait and every parallel region pays a wake-up: the
default detector, embedder and classifier took 61 / 19 / 56 ms per frame in a second thread vs 42 / 10 / 19 ms in
one thread (whole-model lock over three threads: 75 / 19 / 37 ms). Two single-threaded workers side by side gained
no throughput over one two-threaded worker (the convolutions scale ~1.9x on 2 cores). That is a per-block property:
blocks that scale well with threads (large convolutions) lose from sharing the cores and belong in ``sequential``;
small or Python-bound blocks (heads, crops, NMS) gain from overlapping. The policy decides per block from LAG
measured against each block's solo latency (see :mod:`multidnn_sched.runtime.lag`)."""
QUEUE_ORDERS = ("edf", "fifo", "lst")
"""Ready-heap orders. ``edf``: absolute deadline (arrival + deadline). ``fifo``: arrival. ``lst``: latest start
time, arrival + deadline - the model's predicted run time (sum of its blocks' EMA-observed latencies, solo where
none was observed; plain EDF while a block has no figure) - least laxity first, taken when the frame is
dispatched. The weighting comes from deadlines and measured costs alone: a long model with a loose deadline (the
default detector: ~70-100 ms of work at one thread, 120 ms deadline) is not queued behind short models whose
deadline is nearer but whose slack is larger."""
PRIORITY_WEIGHT_MS = 0.0
"""Default key bias per priority level: none. The ready heap is pure EDF (earliest absolute deadline first);
priority only breaks ties between equal deadlines, and acts where a choice must be made under overload (which
late model the policy helps first). EDF is optimal on one processor: if any order meets every deadline, EDF
does (Liu & Layland 1973; Dertouzos 1974), so a priority bias can only make a feasible load miss — and a strict
priority can starve the lowest model of an overloaded device. No per-workload constant is needed (the
default workload's former 33 ms and seed_heterogeneous's 100 ms were tuned on those workloads alone); a user
who wants a bias still passes ``priority_weight_ms``."""
LOGGER_NAME = "multidnn_sched.executor"


FRAMES_IN_FLIGHT = 1
"""Default frames of one model dispatched at once: one. More (pipelining: consecutive frames of a model on
different workers, results released in arrival order) lets a model whose one-thread forward is longer than its
frame period use the pool's other workers, but measured on the 2-core machine (2026-12-07, slow host: reference
convolution 1.88-1.90 ms) it lost wherever the device was loaded: ``multidnn-bench`` default workload, ``blocks``
fp32, partitioned pool 2 x 1, one run each: 0.333 of offered frames on time with 2 in flight vs 0.582 with 1
(two detector frames held both workers and were then shed as hopeless, the classifier got 0 of 300 against 223);
``make demo`` replay (``blocks+swap``, 15 Hz), two interleaved pairs: detector drops 29 / 22 vs 21 / 42, but the
tracker's and classifier's queue wait p50 rose from 13-15 / 5-7 ms to 79-87 / 76-84 ms (stage p50 127-143 /
148-150 ms vs 64 / 76 ms): the detector's next frames, earlier in EDF order than the downstream stages' frames,
took both workers. On a CPU that is already saturated, a second frame only reorders the work. Opt in with
``frames_in_flight`` (workload ``executor:`` key, ROS parameter) where a model is alone or the device has idle
cores."""


SEQUENTIAL_ALL_CORES_NOTE = """Partitioned CPU pool: a ``sequential`` block runs alone (the exclusive slot) with
``sequential_threads`` intra-op threads, every core by default, while ``parallel`` blocks keep the fixed
``worker_threads``. Two workers' OpenMP teams that never run at the same time cost nothing: measured on the 2-core
VM (torch 2.14.1, libgomp, 2026-12-07), the default detector's forward at 2 threads, medians of 20, took
79.2 / 70.8 ms when one thread ran it every time and 78.7-78.9 / 71.2-71.6 ms when two threads took turns (two
processes each); the exclusive slot guarantees the turns. It makes a model whose run at one thread cannot meet its
deadline feasible (the default detector: 118-158 ms alone at one thread that day, 71-79 ms at two, deadline 120
ms). Runs at ``sequential_threads`` keep their own solo and LAG figures (``_seq_lag``). ``sequential_threads =
worker_threads`` is the earlier meaning ("alone at the parallel count",
``policy.PARTITIONED_POOL_NO_SEQUENTIAL_NOTE``); the A/B of both is in docs/results.md."""


_DONE, _HANDED_BACK, _SHED = "done", "handed back", "shed"
"""Outcomes of ``BlockExecutor._run_job``."""


class BlockExecutor(QueueingMixin, ControlMixin, ProfilingMixin, PredictionMixin):
    """Runs the blocks of every registered model on one device, LAG-scheduled. See the module docstring.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a :class:`Device`.
        policy: decides modes/variants when ``schedule="policy"`` (any :class:`SchedulingPolicy`); default
            :class:`Policy()`.
        schedule: ``"policy"`` (the policy decides), or static ``"parallel"`` / ``"sequential"`` for every
            block with no policy (benchmark baselines on the same code).
        num_workers: worker threads; ``None``: one per registered model (on CPU at most one per usable core).
        clock: seconds clock for arrivals, latencies and CPU block timing.
        lag_alpha: EMA weight of the LAG tracker.
        decision_interval_sec: policy period; ``None`` disables the decision thread (call :meth:`decide_now`).
        queue_order: ``"edf"`` (arrival + deadline), ``"fifo"`` (arrival) or ``"lst"`` (latest start time:
            arrival + deadline - predicted run time, see :data:`QUEUE_ORDERS`).
        placement: ``"shared"`` (default: any worker runs any model's block, global scheduling) or
            ``"pinned"`` (each model runs on one home worker, placed by measured utilization: partitioned
            scheduling, see :mod:`multidnn_sched.runtime.placement`); ``"pinned"`` needs ``num_workers >= 2``.
        priority_weight_ms: key bias per priority level (default ``PRIORITY_WEIGHT_MS`` = 0: pure EDF,
            priority breaks ties).
        cpu_threads: intra-op threads of an exclusive block on CPU (default: torch's count = cores).
        worker_threads: CPU only: every block on every worker runs with exactly this many intra-op threads,
            parallel or sequential, and a parallel block never takes idle slots beyond its one ("partitioned"
            pool: with ``num_workers x worker_threads <= cores`` there is one fixed OpenMP team per worker and
            the process never holds more OpenMP threads than cores, see :data:`ONE_OPENMP_TEAM_NOTE`);
            ``sequential`` means "alone with ``sequential_threads``" (no other block overlaps it). ``None``
            (default): elastic, a block gets the slots it is granted up to its profiled best count.
        sequential_threads: CPU, partitioned pool only: intra-op threads of a ``sequential`` block, which runs
            alone (an exclusive slot); ``None`` (default): every core (``cpu_threads``), the issue's "sequential
            = it runs alone with all cores". Pass ``worker_threads`` for "alone at the parallel count" (the
            behaviour before 2026-12-07's change, for A/B). See :data:`SEQUENTIAL_ALL_CORES_NOTE`.
        latency_window: frames in the policy's latency figure (90th percentile of the last N).
        max_latency_samples: latencies kept per model for :meth:`stats`.
        reprofile_idle_sec: re-profile solo latencies after this long idle (needs an example input);
            ``None`` disables. At most once per ``reprofile_interval_sec`` per model.
        reprofile_interval_sec: minimum time between two profiles of one model.
        shed_late_frames: a frame whose time since arrival plus its remaining blocks' predicted latency (EMA
            observed) already exceeds the deadline — checked before it starts and at every block boundary — is
            dropped (``FrameDroppedError``, counted in ``dropped``) instead of being computed late, leaving the
            device to frames that can still make it (firm deadlines: a late result is a miss either way). Only
            when the model could meet its deadline if started at once (never sheds everything).
        shed_probe_frames: after this many frames of a model in a row were shed before their first block, the
            next frame that can make its deadline by solo figures runs unshed to refresh the predictions
            (:data:`~multidnn_sched.runtime.shedding.SHED_PROBE_FRAMES`); ``None``: never (a stale prediction
            can then shed a model for good).
        frames_in_flight: how many frames of one model may be dispatched at once (their blocks run on
            different workers, results are released in arrival order); ``None``: :data:`FRAMES_IN_FLIGHT` (one,
            with the measurement against more).
        logger: defaults to ``logging.getLogger("multidnn_sched.executor")``.
    """

    def __init__(
        self,
        device: str | Device = "cpu",
        policy: SchedulingPolicy | None = None,
        *,
        schedule: str = "policy",
        num_workers: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
        lag_alpha: float = 0.2,
        decision_interval_sec: float | None = 0.5,
        queue_order: str = "edf",
        placement: str = "shared",
        priority_weight_ms: float = PRIORITY_WEIGHT_MS,
        cpu_threads: int | None = None,
        worker_threads: int | None = None,
        sequential_threads: int | None = None,
        latency_window: int = 32,
        max_latency_samples: int = 100_000,
        reprofile_idle_sec: float | None = 10.0,
        reprofile_interval_sec: float = 60.0,
        shed_late_frames: bool = True,
        frames_in_flight: int | None = None,
        shed_probe_frames: int | None = SHED_PROBE_FRAMES,
        logger: logging.Logger | None = None,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ConfigError(f"BlockExecutor schedule must be one of {SCHEDULES}, got {schedule!r}")
        if queue_order not in QUEUE_ORDERS:
            raise ConfigError(f"BlockExecutor queue_order must be one of {QUEUE_ORDERS}, got {queue_order!r}")
        if num_workers is not None and num_workers < 1:
            raise ConfigError(f"BlockExecutor num_workers must be >= 1 or None, got {num_workers!r}")
        if placement not in PLACEMENTS:
            raise ConfigError(f"BlockExecutor placement must be one of {PLACEMENTS}, got {placement!r}")
        self.device = device if isinstance(device, Device) else Device(device, cpu_threads=cpu_threads, clock=clock)
        if worker_threads is not None and not 1 <= worker_threads <= self.device.cpu_threads:
            raise ConfigError(f"BlockExecutor worker_threads must be None or in 1..{self.device.cpu_threads} "
                              f"(the device's CPU threads), got {worker_threads!r}")
        self._worker_threads = None if self.device.is_cuda else worker_threads
        if sequential_threads is not None and not 1 <= sequential_threads <= self.device.cpu_threads:
            raise ConfigError(f"BlockExecutor sequential_threads must be None or in 1..{self.device.cpu_threads} "
                              f"(the device's CPU threads), got {sequential_threads!r}")
        seq = self.device.cpu_threads if sequential_threads is None else sequential_threads
        self._sequential_threads = (seq if self._worker_threads is not None and seq != self._worker_threads
                                    else None)
        self.schedule = schedule
        self.policy = (policy if policy is not None else Policy()) if schedule == "policy" else None
        self.queue_order = queue_order
        self.placement = placement
        self._homes: dict[str, int] = {}
        self.priority_weight_ms = priority_weight_ms
        self.latency_window = latency_window
        self.max_latency_samples = max_latency_samples
        self.reprofile_idle_sec = reprofile_idle_sec
        self.reprofile_interval_sec = reprofile_interval_sec
        self.shed_late_frames = shed_late_frames
        if shed_probe_frames is not None and shed_probe_frames < 1:
            raise ConfigError(f"BlockExecutor shed_probe_frames must be >= 1 or None, got {shed_probe_frames!r}")
        self.shed_probe_frames = shed_probe_frames
        self.log = logger if logger is not None else logging.getLogger(LOGGER_NAME)
        self._clock = clock
        self._gate = SlotGate(self.device.slots)
        self._lag = LagTracker(lag_alpha, clock)
        self._seq_lag = LagTracker(lag_alpha, clock)
        """Figures of runs at ``sequential_threads`` (partitioned pool, sequential blocks): their own solo and
        LAG, so a run is always measured against the solo at the thread count it ran with."""
        self._mode_epoch = 0
        self._registry = VariantRegistry()
        self._models: dict[str, Model] = {}
        self._solo_ms: dict[tuple[str, str, str], float] = {}
        self._seq_solo_ms: dict[tuple[str, str, str], float] = {}
        self._variant_failures: dict[tuple[str, str], int] = {}
        self._alone_threads: dict[tuple[str, str], int] = {}
        self._last_key: dict[tuple[str, str], LagKey] = {}
        self._profiled_bucket: dict[tuple[str, str], int] = {}
        self._profile_epoch = 0
        self._worker_count = 0
        self._decisions: deque[Decision] = deque(maxlen=1000)
        self._decision_count = 0
        self._cond = threading.Condition(threading.Lock())
        self._stats_lock = threading.Lock()
        self._ready: list[Job] = []
        self._seq = itertools.count()
        self._stopping = False
        self._last_activity_sec = clock()
        self._stop_event = threading.Event()
        if num_workers is None and not self.device.is_cuda:
            num_workers = CPU_DEFAULT_WORKERS
        self._fixed_workers = num_workers
        if placement == "pinned" and (num_workers is None or num_workers < 2):
            raise ConfigError(f"BlockExecutor placement='pinned' needs a fixed num_workers >= 2 (one home worker "
                              f"per model group), got num_workers={num_workers!r}")
        if self._worker_threads is not None and (num_workers or 1) * self._worker_threads > self.device.cpu_threads:
            self.log.warning("worker_threads %d x %d workers > %d CPU threads: the workers' OpenMP teams "
                             "oversubscribe the cores", self._worker_threads, num_workers or 1,
                             self.device.cpu_threads)
        if frames_in_flight is not None and frames_in_flight < 1:
            raise ConfigError(f"BlockExecutor frames_in_flight must be >= 1 or None, got {frames_in_flight!r}")
        self.frames_in_flight = frames_in_flight if frames_in_flight is not None else FRAMES_IN_FLIGHT
        self._max_workers = None if self.device.is_cuda else self.device.slots
        self._threads: list[threading.Thread] = []
        for _ in range(num_workers or 0):
            self._start_worker()
        if self.policy is not None and decision_interval_sec is not None:
            self._start_thread(lambda: self._decision_loop(decision_interval_sec), "blockexec-decide")

    @property
    def num_workers(self) -> int:
        """Worker threads started so far (fixed pools: all of them from construction)."""
        return self._worker_count

    @property
    def worker_threads(self) -> int | None:
        """Intra-op threads of every parallel block (the partitioned CPU pool), ``None``: elastic, or CUDA."""
        return self._worker_threads

    @property
    def sequential_threads(self) -> int | None:
        """Intra-op threads of a sequential block of the partitioned CPU pool when they differ from
        :attr:`worker_threads` (every core by default); ``None``: a sequential block runs at the same count (or
        the pool is elastic, or CUDA)."""
        return self._sequential_threads

    # -- lifetime ------------------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        index = self._worker_count
        self._worker_count += 1
        self._start_thread(functools.partial(self._worker_loop, index), "blockexec-worker")

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=f"{name}-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def __enter__(self) -> BlockExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def shutdown(self, timeout_sec: float = 5.0) -> bool:
        """Stop: fail pending/dispatched frames, join every thread; ``False`` if some did not join in time."""
        failed: list[Frame] = []
        with self._cond:
            self._stopping = True
            for model in self._models.values():
                failed.extend(model.pending)
                model.pending.clear()
            for job in self._ready:
                failed.append(job.frame)
                job.model.in_flight = deque(f for f in job.model.in_flight if f is not job.frame)
            self._ready.clear()
            self._cond.notify_all()
        self._stop_event.set()
        for frame in failed:
            fail(frame, ExecutorShutdownError("BlockExecutor shut down before this frame ran"))
        end = time.monotonic() + timeout_sec
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join(max(0.0, end - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive() and t is not current]
        if alive:
            self.log.warning("BlockExecutor.shutdown: threads %s did not join within %.1f s", alive, timeout_sec)
        return not alive

    # -- registration --------------------------------------------------------------------------------------

    def register_model(
        self,
        pm: PartitionedModel,
        *,
        deadline_ms: float,
        priority: int = 0,
        queue_depth: int = 1,
        accuracy: float | None = None,
        example_input: Carry | None = None,
        expected_rate_hz: float | None = None,
    ) -> None:
        """Add a model. ``accuracy``: its original task metric (variants' accuracies are relative to it);
        ``example_input``: a sample carry for :meth:`profile_solo` and idle re-profiling;
        ``expected_rate_hz``: the frame rate it will get (e.g. the camera's), which the policy uses until
        frames have arrived — so an overloaded configuration is fixed before the first frame, not after a
        backlog has built up."""
        if pm.name in self._models:
            raise ConfigError(f"model {pm.name!r} is already registered")
        if not pm.blocks:
            raise ConfigError(f"model {pm.name!r} has no blocks")
        if len(set(pm.block_names)) != len(pm.blocks):
            raise ConfigError(f"model {pm.name!r} has duplicate block names: {pm.block_names}")
        if expected_rate_hz is not None and expected_rate_hz <= 0:
            raise ConfigError(f"model {pm.name!r}: expected_rate_hz must be > 0 or None, got {expected_rate_hz!r}")
        if deadline_ms <= 0 or queue_depth < 1:
            raise ConfigError(
                f"model {pm.name!r}: deadline_ms must be > 0 and queue_depth >= 1, got {deadline_ms!r}, {queue_depth!r}"
            )
        mode = SEQUENTIAL if self.schedule == "sequential" else PARALLEL
        for block in pm.blocks:
            self._registry.add_block(pm.name, block)
            self._variant_failures[(pm.name, block.name)] = 0
            for variant in block.variants.values():
                self._remember_variant_solo(pm.name, block.name, variant)
        model = Model(
            pm, deadline_ms, priority, queue_depth, accuracy, example_input, [mode] * len(pm.blocks),
            ModelStats(pm.name, deadline_ms, priority), deque(maxlen=self.max_latency_samples),
            deque(maxlen=self.latency_window),
        )
        model.expected_rate_hz = expected_rate_hz
        model.max_in_flight = self.frames_in_flight
        with self._cond:
            if self._stopping:
                raise ExecutorShutdownError(f"cannot register {pm.name!r}: BlockExecutor is shut down")
            self._models[pm.name] = model
        if self._fixed_workers is None and (self._max_workers is None or self._worker_count < self._max_workers):
            self._start_worker()

    def configure_model(
        self, name: str, *, deadline_ms: float | None = None, priority: int | None = None,
        queue_depth: int | None = None,
    ) -> None:
        """Change a registered model's deadline, priority or queue depth live (next dispatched frame)."""
        model = self._model(name)
        if (deadline_ms is not None and deadline_ms <= 0) or (queue_depth is not None and queue_depth < 1):
            raise ConfigError(f"model {name!r}: deadline_ms must be > 0 and queue_depth >= 1, "
                              f"got {deadline_ms!r}, {queue_depth!r}")
        with self._cond:
            if deadline_ms is not None:
                model.deadline_ms = model.stats.deadline_ms = deadline_ms
            if priority is not None:
                model.priority = model.stats.priority = priority
            if queue_depth is not None:
                model.queue_depth = queue_depth

    def set_lag_alpha(self, alpha: float) -> None:
        """Change the LAG EMA weight live; raises ``ConfigError`` outside (0, 1]."""
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"lag alpha must be in (0, 1], got {alpha!r}")
        with self._stats_lock:
            self._lag.alpha = alpha

    def register_variant(self, model: str, block: str, variant: BlockVariant) -> None:
        """Add a pre-loaded variant to a registered block (validated at the next :meth:`profile_solo`)."""
        self._registry.register((model, block), variant)
        self._remember_variant_solo(model, block, variant)

    def _remember_variant_solo(self, model: str, block: str, variant: BlockVariant) -> None:
        if variant.solo_latency_ms is not None:
            with self._stats_lock:
                self._solo_ms[(model, block, variant.name)] = variant.solo_latency_ms
                self._profile_epoch += 1

    def _model(self, name: str) -> Model:
        try:
            return self._models[name]
        except KeyError:
            raise ConfigError(f"unknown model {name!r}; registered: {sorted(self._models)}") from None

    # -- workers -------------------------------------------------------------------------------------------

    def _worker_loop(self, worker: int) -> None:
        # One inference-mode guard for the worker's life, not one per frame: entering it cost ~55 us per frame
        # here (scripts/executor_overhead.py stamps, embedder, 2026-12-02), 0.3 % of the embedder's forward.
        # Futures' done-callbacks therefore run in inference mode too (they only queue results and count).
        with torch.inference_mode():
            while True:
                with self._cond:
                    while (job := self._take_job(worker)) is None and not self._stopping:
                        self._cond.wait()
                    if job is None:
                        return
                try:
                    outcome = self._run_job(job, worker)
                except Exception as exc:  # noqa: BLE001 - a frame's failure must never kill the worker
                    self._finish(job, None, exc)
                    continue
                if outcome == _DONE:
                    self._finish(job, job.carry, None)
                elif outcome == _SHED:
                    self._shed(job)

    def _run_job(self, job: Job, worker: int = 0) -> str:
        """Run the job's remaining blocks: ``_DONE``, ``_HANDED_BACK`` to the ready heap (a more urgent job
        waits), or ``_SHED`` (with ``shed_late_frames``: at a block boundary, it can no longer make its
        deadline)."""
        model, blocks = job.model, job.model.pm.blocks
        name = model.pm.name
        if job.block_index == 0:
            if job.frame.started_sec is None:
                job.frame.started_sec = self._clock()
            with self.device.stream_context(name):  # copy on the model's stream: ordered before its blocks
                job.carry = self.device.to_device(job.carry)
        while job.block_index < len(blocks):
            if self._stopping:
                raise ExecutorShutdownError(f"BlockExecutor shut down while {name!r} frame was between blocks")
            if self.shed_late_frames and not job.probe and self._hopeless(job):
                if job.block_index > 0 or not self._probe_instead(job):
                    return _SHED
            if job.block_index > 0 and self._ready:
                waiting = self._head(worker)  # peek; re-checked under the lock
                if waiting is not None and waiting.key < job.key and self._preemption_pays(job, waiting):
                    with self._cond:
                        if self._head(worker) is waiting:
                            heapq.heappush(self._ready, job)  # a more urgent job waits for a worker: hand over
                            self._wake_workers()
                            return _HANDED_BACK
            block = blocks[job.block_index]
            exclusive = model.modes[job.block_index] == SEQUENTIAL
            fixed = self._worker_threads
            wide = exclusive and self._sequential_threads is not None
            if wide:
                fixed = self._sequential_threads
            best_threads = self._alone_threads.get((name, block.name))
            greedy = not self.device.is_cuda and fixed is None and (best_threads is None or best_threads > 1)
            bucket = input_bucket(job.carry)
            granted, ticket = self._gate.acquire_run(exclusive, job.key, greedy=greedy)
            try:
                if fixed is not None:
                    self.device.set_threads(fixed)
                else:
                    self.device.set_threads(granted if best_threads is None else min(granted, best_threads))
                with self.device.stream_context(name):
                    out, observed_ms, ran = self._run_block(name, block, job.carry)
            finally:
                alone = self._gate.release_run(granted, ticket)
            lag_key: LagKey = (name, block.name, ran, bucket)
            tracker = self._seq_lag if wide else self._lag
            with self._stats_lock:
                model.unrefuted_sheds = 0
                if observed_ms is not None:
                    tracker.update(lag_key, observed_ms, alone=alone)
                    self._last_key[(name, block.name)] = lag_key
                live = tracker.peek(lag_key)
                self._note_block_run(job, job.block_index, live)
                solo_ms = live.solo_ms if live is not None else None
                if solo_ms is None:
                    solo_ms = (self._seq_solo_ms if wide else self._solo_ms).get((name, block.name, ran))
            if observed_ms is None or solo_ms is None or job.solo_ms is None:
                job.solo_ms = None  # not comparable (a variant failed, or unprofiled)
            else:
                job.observed_ms += observed_ms
                job.solo_ms += solo_ms
            job.carry = out
            job.block_index += 1
        return _DONE

    def _probe_instead(self, job: Job) -> bool:
        """The frame is hopeless before its first block: count the shed (False), or run it unshed as a probe
        (True) when :func:`~multidnn_sched.runtime.shedding.probe_due` says so (see :data:`SHED_PROBE_FRAMES`)."""
        model = job.model
        waited_ms = (self._clock() - job.frame.arrival_sec) * 1000.0
        with self._stats_lock:
            limit = self.shed_probe_frames
            due = limit is not None and model.unrefuted_sheds >= limit
            if not (due and probe_due(model.unrefuted_sheds, limit, waited_ms, self._solo_run_ms(model),
                                      model.deadline_ms)):
                model.unrefuted_sheds += 1
                return False
        job.probe = True
        with self._cond:
            model.stats.shed_probes += 1
        return True

    def _block_started(self) -> RunTicket:
        """Count a block run in (the gate counts the runs; a worker's block does this with its acquire)."""
        return self._gate.run_started()

    def _block_ended(self, ticket: RunTicket) -> bool:
        """Count a block run out; True when it ran alone from start to end (no other block overlapped it)."""
        return self._gate.run_ended(ticket)

    def _run_block(self, model: str, block: Any, carry: Carry) -> tuple[Carry, float | None, str]:
        """Run the block's active implementation once; fall back to the original if a variant misbehaves.
        Returns (output, observed ms or ``None`` when a variant failed, the implementation that produced it)."""
        key = (model, block.name)
        variant, module = self._registry.active(key)
        in_sig = carry_signature(carry) if block.variants else None
        timer = self.device.timer(model)
        timer.start()
        if variant == ORIGINAL:
            out = module(carry)
            observed_ms = timer.stop()
            if in_sig is not None and self._registry.expected_output(key, in_sig) is None:
                self._registry.record_original(key, in_sig, carry_signature(out))
            return out, observed_ms, ORIGINAL
        try:
            out = module(carry)
            problem = self._registry.check_output(key, in_sig, out)
        except Exception as exc:  # noqa: BLE001 - any variant failure disables it; the original re-runs
            problem = f"raised {type(exc).__name__}: {exc}"
        if problem is None:
            return out, timer.stop(), variant
        timer.stop()
        self._variant_failures[key] += 1
        self._registry.disable(key, variant, problem)
        self._on_variant_change(model, block.name, ORIGINAL)
        return block.module(carry), None, ORIGINAL

    def _finish(self, job: Job, result: Carry, error: BaseException | None, *, shed: bool = False) -> None:
        """The job ended (a result, an error, or ``shed``): keep its outcome, release the model's frames that are
        now next in order, dispatch its next pending frames, then resolve the released futures (outside the
        lock, oldest first)."""
        model = job.model
        with self._cond:  # the outcome is set under the lock that every _release reads it under
            job.frame.outcome = Outcome(result, error, shed, job.observed_ms, job.solo_ms)
            self._last_activity_sec = self._clock()
            released = self._release(model)
            if self._stopping:
                failed = list(model.pending)
                model.pending.clear()
            else:
                failed = []
                self._dispatch_next(model)
        for frame, end_sec in released:
            self._resolve(model, frame, end_sec)
        for frame in failed:
            fail(frame, ExecutorShutdownError("BlockExecutor shut down before this frame ran"))

    def _release(self, model: Model) -> list[tuple[Frame, float]]:
        """Pop the model's dispatched frames whose jobs ended, oldest first, up to the first still running (all
        that ended while stopping), and count each in the stats at the moment it is released: the latency a
        consumer sees includes waiting for an older frame (caller holds ``_cond``)."""
        released: list[tuple[Frame, float]] = []
        if self._stopping:
            ended = [frame for frame in model.in_flight if frame.outcome is not None]
            model.in_flight = deque(frame for frame in model.in_flight if frame.outcome is None)
        else:
            ended = []
            while model.in_flight and model.in_flight[0].outcome is not None:
                ended.append(model.in_flight.popleft())
        now = self._clock()
        stats = model.stats
        for frame in ended:
            outcome = frame.outcome
            if outcome.shed:
                stats.dropped += 1
                model.recent.append(None)
            elif outcome.error is None:
                latency_ms = (now - frame.arrival_sec) * 1000.0
                stats.frames_done += 1
                if outcome.solo_ms:
                    model.slowdowns.append(outcome.observed_ms / outcome.solo_ms)
                model.latencies.append(latency_ms)
                model.recent.append(latency_ms)
                if latency_ms > model.deadline_ms:
                    stats.deadline_misses += 1
            else:
                stats.failed += 1
            released.append((frame, now))
        return released

    def _resolve(self, model: Model, frame: Frame, end_sec: float) -> None:
        """Resolve a released frame's future with its outcome (caller holds no lock)."""
        outcome = frame.outcome
        frame.outcome = None  # the result / error now lives in the future only
        error = outcome.error
        if error is None:
            started = frame.started_sec
            attach_frame_times(frame.future, FrameTimes(
                frame.arrival_sec, frame.arrival_sec if started is None else started, end_sec))
            frame.future.set_result(outcome.result)
            return
        if not outcome.shed and not isinstance(error, ExecutorShutdownError):
            self.log.warning("model %s: frame failed: %s: %s", model.pm.name, type(error).__name__, error)
        if error.__traceback__ is not None:
            # The traceback's finished frames hold this job (its future holds the error): a reference cycle
            # that kept every failed frame's tensors until a full GC. Their locals go; file/line stay.
            traceback.clear_frames(error.__traceback__)
        fail(frame, error)

    # -- statistics ----------------------------------------------------------------------------------------

    def stats(self) -> ExecutorStats:
        """A snapshot of per-model counters/latencies and per-block LAG figures and settings."""
        models: dict[str, ModelStats] = {}
        with self._cond:  # copy only; percentiles are computed outside the lock the workers need
            for name, model in self._models.items():
                s = model.stats
                models[name] = ModelStats(name, s.deadline_ms, s.priority, s.submitted, s.frames_done, s.dropped,
                                          s.failed, s.deadline_misses, list(model.latencies), s.skipped,
                                          shed_probes=s.shed_probes, admit_fraction=s.admit_fraction)
        for summary in models.values():
            ordered = sorted(summary.latency_ms)
            summary.p50_ms = percentile(ordered, 50.0, ordered=True)
            summary.p99_ms = percentile(ordered, 99.0, ordered=True)
        blocks: dict[tuple[str, str], BlockStats] = {}
        with self._stats_lock:
            for name, model in self._models.items():
                for index, block in enumerate(model.pm.blocks):
                    key = (name, block.name)
                    t = self._timing_of(name, block.name)
                    blocks[key] = BlockStats(
                        name, block.name, t.solo_ms, t.ema_observed_ms, t.lag_ms, t.samples, model.modes[index],
                        self._registry.active(key)[0], block.name in model.overridden, self._variant_failures[key],
                        self._alone_threads.get(key),
                    )
            count = self._decision_count
        return ExecutorStats(models, blocks, count)
