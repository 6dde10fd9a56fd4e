"""The three static baselines of the benchmark: how robot software runs several DNNs today.

* ``multiprocess`` — one OS process per model (one ROS node per process).
* ``threads``      — one process, one thread per model running the whole model (a MultiThreadedExecutor).
* ``sequential``   — one process, ONE thread serving every model, whole model after whole model, oldest
  pending frame first (a SingleThreadedExecutor, i.e. a global lock: models never overlap). One thread rather
  than a lock over three threads: measured here, three threads taking turns under a lock ran each forward
  30-90 % slower (three OpenMP teams throttle libgomp's spin-wait; see executor.ONE_OPENMP_TEAM_NOTE), so the
  single thread is the stronger — and the more faithful — baseline.

Every mode runs the original models with PyTorch eager fp32 on the CPU with torch's default intra-op threads,
gets the same frames at the same open-loop arrival instants (``time.monotonic``, shared by processes), and
keeps the same per-model queue: ``queue_depth`` pending frames, the OLDEST dropped when a new one arrives to a
full queue (newest wins) — the same drop policy as the BlockExecutor.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from multidnn_sched.bench.tasks import TaskInputs, compact_output

Clock = Callable[[], float]


@dataclass
class ModelRun:
    """What one model did in one mode.

    Attributes:
        name: model name.
        latencies_ms: completion − arrival of every completed frame, ms.
        completed: frame indices (in the run) that completed, in completion order.
        dropped: frame indices dropped by the queue policy (blocks modes: also shed, or skipped on arrival).
        skipped: the dropped frames that admission control skipped on arrival (blocks modes only).
        failed: frame indices whose computation raised.
        outputs: unique-frame index -> compact output (for the task metric).
    """

    name: str
    latencies_ms: list[float] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    outputs: dict[int, object] = field(default_factory=dict)


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


def run_model_loop(
    model: nn.Module,
    task: TaskInputs,
    arrivals_sec: list[float],
    queue_depth: int,
    *,
    lock: AbstractContextManager | None = None,
    clock: Clock = time.monotonic,
) -> ModelRun:
    """Serve one model open-loop: whole-model forwards, the queue policy above, optional global lock."""
    run = ModelRun(task.name)
    guard = lock if lock is not None else nullcontext()
    n = len(arrivals_sec)
    next_index = 0
    with torch.inference_mode():
        while next_index < n:
            now = clock()
            newest = _newest_arrived(arrivals_sec, now, next_index)
            dropped, index = pending_to_run(next_index, newest, queue_depth)
            if index is None:
                time.sleep(max(0.0, arrivals_sec[next_index] - now))
                continue
            run.dropped.extend(dropped)
            unique = index % len(task.inputs)
            try:
                with guard:
                    output = model(task.input_for(index))
            except (RuntimeError, ValueError):  # a bad frame fails alone, as in the executor
                run.failed.append(index)
            else:
                done = clock()
                run.latencies_ms.append((done - arrivals_sec[index]) * 1e3)
                run.completed.append(index)
                run.outputs.setdefault(unique, compact_output(task.name, output))
            next_index = index + 1
    return run


def _newest_arrived(arrivals_sec: list[float], now: float, start: int) -> int:
    """Index of the newest frame that has arrived by ``now`` (``start - 1`` if none since ``start``)."""
    i = start - 1
    while i + 1 < len(arrivals_sec) and arrivals_sec[i + 1] <= now:
        i += 1
    return i


def run_single_thread(
    models: dict[str, nn.Module],
    tasks: dict[str, TaskInputs],
    queue_depths: dict[str, int],
    arrivals_sec: list[float],
    *,
    clock: Clock = time.monotonic,
    threads: int | None = None,
) -> dict[str, ModelRun]:
    """``sequential``: one thread runs whole models one after another, the oldest pending frame first."""
    results = {name: ModelRun(name) for name in models}

    def serve() -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        n = len(arrivals_sec)
        next_index = dict.fromkeys(models, 0)
        with torch.inference_mode():
            while any(i < n for i in next_index.values()):
                now = clock()
                choice: tuple[float, str, int] | None = None
                for name in models:
                    if next_index[name] >= n:
                        continue
                    newest = _newest_arrived(arrivals_sec, now, next_index[name])
                    dropped, index = pending_to_run(next_index[name], newest, queue_depths[name])
                    results[name].dropped.extend(dropped)
                    if dropped:
                        next_index[name] = dropped[-1] + 1
                    if index is not None and (choice is None or arrivals_sec[index] < choice[0]):
                        choice = (arrivals_sec[index], name, index)
                if choice is None:
                    upcoming = min(arrivals_sec[i] for i in next_index.values() if i < n)
                    time.sleep(max(0.0, upcoming - now))
                    continue
                arrival, name, index = choice
                run, task = results[name], tasks[name]
                try:
                    output = models[name](task.input_for(index))
                except (RuntimeError, ValueError):
                    run.failed.append(index)
                else:
                    run.latencies_ms.append((clock() - arrival) * 1e3)
                    run.completed.append(index)
                    run.outputs.setdefault(index % len(task.inputs), compact_output(name, output))
                next_index[name] = index + 1

    worker = threading.Thread(target=serve, name="bench-sequential")
    worker.start()
    worker.join()
    return results


def run_threads(
    models: dict[str, nn.Module],
    tasks: dict[str, TaskInputs],
    queue_depths: dict[str, int],
    arrivals_sec: list[float],
    *,
    global_lock: bool,
    threads: int | None = None,
) -> dict[str, ModelRun]:
    """``threads``: one thread per model in this process, each with torch's default intra-op threads
    (``global_lock``: the same threads taking turns under one lock)."""
    lock = threading.Lock() if global_lock else None
    results: dict[str, ModelRun] = {}

    def serve(name: str) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        results[name] = run_model_loop(models[name], tasks[name], arrivals_sec, queue_depths[name], lock=lock)

    workers = [threading.Thread(target=serve, args=(name,), name=f"bench-{name}") for name in models]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return results


# ------------------------------------------------------------------------------------------ multiprocess


def _child(
    name: str,
    random_init: bool,
    workload_path: str,
    duration_sec: float,
    ready: mp.Event,
    start_at: mp.Value,
    out: mp.Queue,
) -> None:
    """One model in its own process: build model and inputs, report ready, wait for t0, serve, send results."""
    from multidnn_sched.bench.tasks import build_model, build_task_inputs, render_truth_and_frames
    from multidnn_sched.bench.workload import load_workload

    workload = load_workload(workload_path, duration_sec=duration_sec)
    load = next(m for m in workload.models if m.name == name)
    images, truth = render_truth_and_frames(workload.scene, workload.rate_hz)
    task = build_task_inputs(name, images, truth)
    model = build_model(name, random_init=random_init)
    with torch.inference_mode():
        for x in task.inputs[:3]:
            model(x)
    ready.set()
    while start_at.value <= 0.0:
        time.sleep(0.005)
    arrivals = workload.arrivals_sec(start_at.value)
    run = run_model_loop(model, task, arrivals, load.queue_depth)
    # Plain numpy across the process boundary: torch tensors would travel as shared-memory handles that die
    # with this process.
    run.outputs = {k: _to_numpy(v) for k, v in run.outputs.items()}
    out.put(run)


def _to_numpy(value: object) -> object:
    if isinstance(value, tuple):
        return tuple(_to_numpy(v) for v in value)
    return value.numpy() if isinstance(value, torch.Tensor) else value


def _to_torch(value: object) -> object:
    if isinstance(value, tuple):
        return tuple(_to_torch(v) for v in value)
    return torch.from_numpy(value) if hasattr(value, "__array__") and not isinstance(value, torch.Tensor) else value


def run_multiprocess(
    workload_path: str, duration_sec: float, names: list[str], *, random_init: bool, lead_sec: float = 1.0
) -> dict[str, ModelRun]:
    """``multiprocess``: one spawned process per model; all start on one shared ``time.monotonic`` instant."""
    ctx = mp.get_context("spawn")
    start_at = ctx.Value("d", 0.0)
    out: mp.Queue = ctx.Queue()
    readies = {name: ctx.Event() for name in names}
    procs = [
        ctx.Process(target=_child, args=(n, random_init, workload_path, duration_sec, readies[n], start_at, out),
                    name=f"bench-{n}", daemon=True)
        for n in names
    ]
    for p in procs:
        p.start()
    try:
        for name, ev in readies.items():
            if not ev.wait(timeout=300):
                raise RuntimeError(f"multiprocess mode: the {name} process did not get ready within 300 s")
        start_at.value = time.monotonic() + lead_sec
        results: dict[str, ModelRun] = {}
        for _ in names:
            run = out.get(timeout=duration_sec + 300)
            run.outputs = {k: _to_torch(v) for k, v in run.outputs.items()}
            results[run.name] = run
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    return results
