"""The static baselines of the benchmark: how robot software runs several DNNs today, tuned and naive.

* ``threads``    — one process, one thread per model running the whole model (a MultiThreadedExecutor).
* ``sequential`` — one process, ONE thread serving every model, whole model after whole model (a
  SingleThreadedExecutor: models never overlap).
* ``multiprocess`` (:mod:`multidnn_sched.bench.processes`) — one OS process per model.

Tuned (what a competent engineer configures in five minutes, ``StaticConfig(skip_stale=True)``): intra-op
threads per model chosen by measurement (:mod:`multidnn_sched.bench.calibrate`), earliest-deadline-first
serving across models (sequential), and a frame that can no longer make its deadline is skipped before it starts
— the executor's own rule (:func:`multidnn_sched.runtime.shedding.is_hopeless`) with the model's service time
predicted by an EMA of its measured forward times. Naive (``-naive`` / ``-fifo`` modes): torch's default threads
(= cores) everywhere, oldest frame first, every frame computed however late.

Every mode gets the same frames at the same open-loop arrival instants (``time.monotonic``, shared by
processes) and keeps the same per-model queue: ``queue_depth`` pending frames, the OLDEST dropped when a new one
arrives to a full queue (newest wins) — the BlockExecutor's drop policy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from multidnn_sched.bench.runs import DROP_QUEUE, DROP_SHED, ModelPlan, ModelRun, RunPlan
from multidnn_sched.bench.tasks import TaskInputs, compact_output
from multidnn_sched.bench.workload import ModelLoad
from multidnn_sched.runtime.shedding import SHED_PROBE_FRAMES, is_hopeless, probe_due

Clock = Callable[[], float]

SERVICE_EMA_ALPHA = 0.2
"""Smoothing of a static mode's service-time prediction (the stale-frame rule): the same weight as the
executor's LAG EMA (``BlockExecutor(lag_alpha=0.2)``), so both modes predict from equally recent history."""

START_LEAD_SEC = 0.3
"""Arrivals start this long after a runner is called (threads started, nothing queued yet)."""

ORDERS = ("edf", "fifo")


@dataclass(frozen=True)
class StaticConfig:
    """How a static mode serves its models.

    Attributes:
        threads: intra-op threads per model (``torch.set_num_threads`` in the thread serving it; ORT variants
            follow it).
        skip_stale: skip a frame that can no longer make its deadline before computing it (tuned modes).
        order: ``sequential`` only: ``"edf"`` (arrival + deadline first, priority breaks ties) or ``"fifo"``
            (oldest arrival first).
    """

    threads: Mapping[str, int]
    skip_stale: bool = True
    order: str = "edf"

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"expected order in {ORDERS}, got {self.order!r}")
        bad = {k: v for k, v in self.threads.items() if v < 1}
        if bad:
            raise ValueError(f"expected intra-op threads >= 1 per model, got {bad}")


class StaleRule:
    """Predicts a model's service time (EMA of measured forwards) and says when a frame is hopeless.

    The executor's probe rule too (:data:`~multidnn_sched.runtime.shedding.SHED_PROBE_FRAMES`): after
    ``probe_frames`` skips in a row, the next frame that can make its deadline by the best forward measured so
    far (the static mode's solo figure) runs, so a stale EMA cannot skip a model for good here either."""

    def __init__(self, deadline_ms: float, enabled: bool, alpha: float = SERVICE_EMA_ALPHA,
                 probe_frames: int | None = SHED_PROBE_FRAMES) -> None:
        self.deadline_ms = deadline_ms
        self.enabled = enabled
        self.alpha = alpha
        self.probe_frames = probe_frames
        self.service_ms: float | None = None
        self.best_ms: float | None = None
        self.unrefuted_skips = 0

    def observe(self, service_ms: float) -> None:
        self.service_ms = service_ms if self.service_ms is None else (
            self.alpha * service_ms + (1.0 - self.alpha) * self.service_ms)
        self.best_ms = service_ms if self.best_ms is None else min(self.best_ms, service_ms)
        self.unrefuted_skips = 0

    def hopeless(self, waited_ms: float) -> bool:
        """True: skip this frame (counted as an unrefuted skip). Called again for a frame not yet served, it
        answers the same way until a forward is observed."""
        if not self.enabled or self.service_ms is None:
            return False
        if not is_hopeless(waited_ms, self.service_ms, self.service_ms, self.deadline_ms):
            return False
        if probe_due(self.unrefuted_skips, self.probe_frames, waited_ms, self.best_ms, self.deadline_ms):
            return False
        self.unrefuted_skips += 1
        return True


def pending_to_run(next_index: int, newest_arrived: int, queue_depth: int) -> tuple[list[int], int | None]:
    """Queue policy for a worker that just became free.

    Frames ``next_index..newest_arrived`` are pending. When more than ``queue_depth`` are pending the oldest ones
    are dropped (newest wins); the worker then runs the oldest survivor (FIFO within the queue).

    Returns:
        (dropped frame indices, frame index to run now or ``None`` if nothing is pending)
    """
    if newest_arrived < next_index:
        return [], None
    first_kept = max(next_index, newest_arrived - queue_depth + 1)
    return list(range(next_index, first_kept)), first_kept


def _newest_arrived(arrivals_sec: list[float], now: float, start: int) -> int:
    """Index of the newest frame that has arrived by ``now`` (``start - 1`` if none since ``start``)."""
    i = start - 1
    while i + 1 < len(arrivals_sec) and arrivals_sec[i + 1] <= now:
        i += 1
    return i


def _synchronize(output: object) -> None:
    """Wait for a CUDA forward to finish before the clock is read (CPU outputs: nothing to do)."""
    first = output
    while isinstance(first, tuple | list) and first:
        first = first[0]
    if isinstance(first, dict) and first:
        first = next(iter(first.values()))
    if isinstance(first, torch.Tensor) and first.is_cuda:
        torch.cuda.synchronize(first.device)


def _forward(model: nn.Module, task: TaskInputs, index: int, arrival: float, run: ModelRun, rule: StaleRule,
             clock: Clock, lock: AbstractContextManager) -> None:
    """Compute frame ``index`` and record its outcome (a raising frame fails alone, as in the executor)."""
    try:
        with lock:
            start = clock()
            output = model(task.input_for(index))
            _synchronize(output)
            done = clock()
    except (RuntimeError, ValueError):
        run.record_failure(index)
        return
    rule.observe((done - start) * 1e3)
    if run.record_done(index, (done - arrival) * 1e3):
        run.keep_output(index % len(task.inputs), compact_output(task.name, output))


def run_model_loop(
    model: nn.Module,
    task: TaskInputs,
    load: ModelLoad,
    plan: ModelPlan,
    t0: float,
    *,
    skip_stale: bool,
    lock: AbstractContextManager | None = None,
    clock: Clock = time.monotonic,
) -> ModelRun:
    """Serve one model open-loop from ``t0``: whole-model forwards, the queue policy, the optional stale rule."""
    arrivals = plan.arrivals_sec(t0)
    run = ModelRun(task.name, first_timed=plan.warmup_frames, offered=plan.timed_frames)
    rule = StaleRule(load.deadline_ms, skip_stale)
    guard = lock if lock is not None else nullcontext()
    next_index, n = 0, len(arrivals)
    with torch.inference_mode():
        while next_index < n:
            now = clock()
            dropped, index = pending_to_run(next_index, _newest_arrived(arrivals, now, next_index), load.queue_depth)
            for d in dropped:
                run.record_drop(d, DROP_QUEUE)
            if index is None:
                time.sleep(max(0.0, arrivals[next_index] - now))
                continue
            next_index = index + 1
            if rule.hopeless((now - arrivals[index]) * 1e3):
                run.record_drop(index, DROP_SHED)
                continue
            _forward(model, task, index, arrivals[index], run, rule, clock, guard)
    return run


def run_sequential(
    models: Mapping[str, nn.Module],
    tasks: Mapping[str, TaskInputs],
    loads: Mapping[str, ModelLoad],
    plan: RunPlan,
    config: StaticConfig,
    *,
    clock: Clock = time.monotonic,
) -> dict[str, ModelRun]:
    """``sequential``: one thread runs whole models one after another (EDF or FIFO across models)."""
    names = list(models)
    results: dict[str, ModelRun] = {}
    threads = max(config.threads[name] for name in names)

    def serve() -> None:
        torch.set_num_threads(threads)
        t0 = clock() + START_LEAD_SEC
        arrivals = plan.arrivals_sec(t0)
        for name in names:
            p = plan.models[name]
            results[name] = ModelRun(name, first_timed=p.warmup_frames, offered=p.timed_frames)
        rules = {name: StaleRule(loads[name].deadline_ms, config.skip_stale) for name in names}
        next_index = dict.fromkeys(names, 0)
        with torch.inference_mode():
            while any(next_index[name] < len(arrivals[name]) for name in names):
                now = clock()
                choice: tuple[tuple[float, ...], str, int] | None = None
                for rank, name in enumerate(names):
                    a, run = arrivals[name], results[name]
                    if next_index[name] >= len(a):
                        continue
                    dropped, index = pending_to_run(next_index[name], _newest_arrived(a, now, next_index[name]),
                                                    loads[name].queue_depth)
                    for d in dropped:
                        run.record_drop(d, DROP_QUEUE)
                    if index is None:
                        continue
                    next_index[name] = index
                    if rules[name].hopeless((now - a[index]) * 1e3):
                        run.record_drop(index, DROP_SHED)
                        next_index[name] = index + 1
                        continue
                    if config.order == "edf":
                        key = (a[index] + loads[name].deadline_ms / 1e3, -loads[name].priority, a[index], rank)
                    else:
                        key = (a[index], rank)
                    if choice is None or key < choice[0]:
                        choice = (key, name, index)
                if choice is None:
                    pending = [arrivals[n][next_index[n]] for n in names if next_index[n] < len(arrivals[n])]
                    if pending:
                        time.sleep(max(0.0, min(pending) - clock()))
                    continue
                _key, name, index = choice
                _forward(models[name], tasks[name], index, arrivals[name][index], results[name], rules[name],
                         clock, nullcontext())
                next_index[name] = index + 1

    worker = threading.Thread(target=serve, name="bench-sequential")
    worker.start()
    worker.join()
    return results


def run_threads(
    models: Mapping[str, nn.Module],
    tasks: Mapping[str, TaskInputs],
    loads: Mapping[str, ModelLoad],
    plan: RunPlan,
    config: StaticConfig,
    *,
    global_lock: bool = False,
    clock: Clock = time.monotonic,
) -> dict[str, ModelRun]:
    """``threads``: one thread per model in this process, each with its own intra-op thread count
    (``global_lock``: the same threads taking turns under one lock)."""
    lock = threading.Lock() if global_lock else None
    results: dict[str, ModelRun] = {}
    t0 = clock() + START_LEAD_SEC

    def serve(name: str) -> None:
        torch.set_num_threads(config.threads[name])
        results[name] = run_model_loop(models[name], tasks[name], loads[name], plan.models[name], t0,
                                       skip_stale=config.skip_stale, lock=lock, clock=clock)

    workers = [threading.Thread(target=serve, args=(name,), name=f"bench-{name}") for name in models]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return results
