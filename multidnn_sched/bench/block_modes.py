"""``blocks`` and ``blocks+swap``: the workload on the shared BlockExecutor.

The models are partitioned into blocks and registered on ONE :class:`BlockExecutor` (LAG-driven policy); a
feeder thread submits every model's frames at their open-loop arrival instants — the same plan (warm-up, then
the timed window, one continuous stream) and queue depths as the static modes. ``blocks`` keeps the original
blocks (swap disabled: scheduling only); ``blocks+swap`` also registers the compressed variants of a manifest
and lets the policy swap them in. The variant set active when the first timed frame arrives is recorded: the
``+variants`` static modes run that set.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from multidnn_sched.bench.fixed_variants import Assignment, VariantCache
from multidnn_sched.bench.runs import DROP_QUEUE, ModelRun, RunPlan
from multidnn_sched.bench.tasks import TaskInputs, compact_output
from multidnn_sched.bench.workload import ExecutorSettings, ModelLoad
from multidnn_sched.exceptions import FrameDroppedError, MultiDnnError
from multidnn_sched.runtime.device import resolve_pool
from multidnn_sched.runtime.executor import BlockExecutor
from multidnn_sched.runtime.partition import partition_model
from multidnn_sched.runtime.policy import ORIGINAL, Policy, PolicyConfig
from multidnn_sched.runtime.variant_loader import attach_variants

log = logging.getLogger("multidnn_sched.bench")

RESULT_TIMEOUT_SEC = 60.0
"""How long the feeder waits for the last frames after the last arrival."""


@dataclass
class BlocksRun:
    """One run on the executor.

    Attributes:
        runs: per-model outcomes of the timed window.
        decisions_timed: policy decisions applied inside the timed window (as dicts, with reasons).
        assignment_at_timed_start: non-original variants active when the first timed frame arrived.
        assignment_at_end: the same after the last frame.
        modes_at_end: ``{model: {block: "parallel" | "sequential"}}`` after the last frame.
        homes_at_end: ``placement: pinned``: each model's home worker after the last frame (else empty).
        pool: the executor's workers, fixed intra-op threads per block (``None``: elastic), frames in flight
            per model, and a sequential block's intra-op threads (``None``: as parallel), as resolved.
        shed_probes: per model, frames run unshed to refresh stale predictions over the whole run, warm-up
            included (``runtime.shedding.SHED_PROBE_FRAMES``).
    """

    runs: dict[str, ModelRun]
    decisions_timed: list[dict[str, Any]] = field(default_factory=list)
    assignment_at_timed_start: Assignment = field(default_factory=dict)
    assignment_at_end: Assignment = field(default_factory=dict)
    modes_at_end: dict[str, dict[str, str]] = field(default_factory=dict)
    homes_at_end: dict[str, int] = field(default_factory=dict)
    pool: tuple[int, int | None, int, int | None] = (1, None, 1, None)
    shed_probes: dict[str, int] = field(default_factory=dict)


def build_executor(
    models: Mapping[str, nn.Module],
    tasks: Mapping[str, TaskInputs],
    loads: Mapping[str, ModelLoad],
    rates_hz: Mapping[str, float],
    settings: ExecutorSettings,
    *,
    variants: VariantCache | None,
    policy_config: PolicyConfig | None = None,
    clock: Any = time.monotonic,
) -> BlockExecutor:
    """Partition every model, register it (and, with ``variants``, its variants) and profile solo latencies."""
    config = policy_config or PolicyConfig()
    config.swap_enabled = variants is not None
    weight = {} if settings.priority_weight_ms is None else {"priority_weight_ms": settings.priority_weight_ms}
    # No executor keys = auto, the ROS container's default too: the partitioned pool on CPU (resolve_pool)
    num_workers, worker_threads = resolve_pool(settings.device, settings.num_workers, settings.worker_threads,
                                               len(loads))
    executor = BlockExecutor(settings.device, Policy(config), clock=clock, num_workers=num_workers,
                             worker_threads=worker_threads, frames_in_flight=settings.frames_in_flight,
                             sequential_threads=settings.sequential_threads,
                             queue_order=settings.queue_order,
                             placement=settings.placement, **weight)
    try:
        for name, load in loads.items():
            pm = partition_model(models[name], name)
            accuracy = None
            if variants is not None:
                attached = attach_variants(pm, variants.variants(pm))
                accuracy = variants.baseline_accuracy(name)
                log.info("model %s: %d variants attached", name, attached)
            executor.register_model(pm, deadline_ms=load.deadline_ms, priority=load.priority,
                                    queue_depth=load.queue_depth, accuracy=accuracy,
                                    example_input=tasks[name].inputs[0], expected_rate_hz=rates_hz[name])
        executor.profile_solo()
    except BaseException:
        executor.shutdown(timeout_sec=5.0)
        raise
    return executor


def _assignment(executor: BlockExecutor) -> tuple[Assignment, dict[str, dict[str, str]]]:
    assignment: Assignment = {}
    modes: dict[str, dict[str, str]] = {}
    for (model, block), stats in executor.stats().blocks.items():
        modes.setdefault(model, {})[block] = stats.mode
        if stats.variant != ORIGINAL:
            assignment.setdefault(model, {})[block] = stats.variant
    return assignment, modes


def run_blocks(
    models: Mapping[str, nn.Module],
    tasks: Mapping[str, TaskInputs],
    loads: Mapping[str, ModelLoad],
    plan: RunPlan,
    settings: ExecutorSettings,
    *,
    variants: VariantCache | None = None,
    policy_config: PolicyConfig | None = None,
) -> BlocksRun:
    """Serve ``plan`` on one BlockExecutor (``variants``: blocks+swap)."""
    clock = time.monotonic
    rates = {name: p.rate_hz for name, p in plan.models.items()}
    executor = build_executor(models, tasks, loads, rates, settings, variants=variants,
                              policy_config=policy_config, clock=clock)
    try:
        t0 = clock() + 0.3
        timed_start = plan.timed_start_sec(t0)
        runs = {name: ModelRun(name, first_timed=p.warmup_frames, offered=p.timed_frames)
                for name, p in plan.models.items()}
        snapshot: dict[str, Any] = {}
        _feed(executor, tasks, plan, t0, runs, clock, timed_start, snapshot)
        assignment_end, modes_end = _assignment(executor)
        homes_end = executor.homes()
        pool = (executor.num_workers, executor.worker_threads, executor.frames_in_flight,
                executor.sequential_threads)
        timed = [d.as_record() for d in executor.decisions if d.time_sec >= timed_start]
        probes = {name: stats.shed_probes for name, stats in executor.stats().models.items()}
    finally:
        executor.shutdown(timeout_sec=10.0)
    return BlocksRun(runs, timed, snapshot.get("assignment", {}), assignment_end, modes_end, homes_end, pool,
                     probes)


def _feed(
    executor: BlockExecutor,
    tasks: Mapping[str, TaskInputs],
    plan: RunPlan,
    t0: float,
    runs: dict[str, ModelRun],
    clock: Any,
    timed_start: float,
    snapshot: dict[str, Any],
) -> None:
    """Submit every model's frames at their arrivals (merged in time order); wait for every future."""
    lock = threading.Lock()
    # Same-instant arrivals are submitted in the workload's model order (as a camera callback would fan out).
    events = [(arrival, rank, name, index) for rank, (name, arrivals) in enumerate(plan.arrivals_sec(t0).items())
              for index, arrival in enumerate(arrivals)]
    heapq.heapify(events)
    futures: list[Future] = []
    while events:
        arrival, _rank, name, index = heapq.heappop(events)
        delay = arrival - clock()
        if delay > 0:
            time.sleep(delay)
        if "assignment" not in snapshot and arrival >= timed_start:
            snapshot["assignment"] = _assignment(executor)[0]
        try:
            future = executor.submit(name, tasks[name].input_for(index), arrival_time=arrival)
        except MultiDnnError as exc:
            log.error("submit %s frame %d failed: %s", name, index, exc)
            with lock:
                runs[name].record_failure(index)
            continue
        future.add_done_callback(_recorder(runs[name], tasks[name], index, arrival, lock, clock))
        futures.append(future)
    for future in futures:
        try:
            future.result(timeout=RESULT_TIMEOUT_SEC)
        except (MultiDnnError, RuntimeError, ValueError):
            pass  # recorded by the callback


def _recorder(run: ModelRun, task: TaskInputs, index: int, arrival: float, lock: threading.Lock, clock: Any) -> Any:
    def record(future: Future) -> None:
        done = clock()
        error = future.exception()
        with lock:
            if isinstance(error, FrameDroppedError):
                run.record_drop(index, getattr(error, "cause", DROP_QUEUE))
            elif error is not None:
                run.record_failure(index)
            elif run.record_done(index, (done - arrival) * 1e3):
                with torch.inference_mode():
                    run.keep_output(index % len(task.inputs), compact_output(task.name, future.result()))

    return record
