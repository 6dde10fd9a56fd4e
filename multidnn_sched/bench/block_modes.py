"""``blocks`` and ``blocks+swap``: the workload on the shared BlockExecutor.

The models are partitioned into blocks and registered on ONE :class:`BlockExecutor` (LAG-driven policy); a
feeder thread submits every model's frame at its open-loop arrival instant (the same instants and queue policy
as the static modes). ``blocks`` keeps the original blocks (swap disabled: scheduling only); ``blocks+swap``
also registers the compressed variants of a manifest and lets the policy swap them in.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multidnn_sched.bench.static_modes import ModelRun
from multidnn_sched.bench.tasks import TaskInputs, compact_output
from multidnn_sched.bench.workload import Workload
from multidnn_sched.exceptions import ConfigError, FrameDroppedError, FrameSkippedError, MultiDnnError
from multidnn_sched.runtime.executor import BlockExecutor
from multidnn_sched.runtime.partition import partition_model
from multidnn_sched.runtime.policy import Policy, PolicyConfig

log = logging.getLogger("multidnn_sched.bench")

DEFAULT_VARIANTS_MANIFEST = Path("runs/variants/manifest.json")
"""Where ``multidnn-compress build-defaults`` writes the default variants (also what ``make demo`` uses)."""


def build_executor(
    models: dict[str, nn.Module],
    tasks: dict[str, TaskInputs],
    workload: Workload,
    *,
    swap: bool,
    variants_manifest: str | Path | None = None,
    policy_config: PolicyConfig | None = None,
    clock: Any = time.monotonic,
) -> BlockExecutor:
    """Partition every model, register it (and, with ``swap``, its variants) and profile solo latencies."""
    config = policy_config or PolicyConfig()
    config.swap_enabled = swap
    settings = workload.executor
    weight = {} if settings.priority_weight_ms is None else {"priority_weight_ms": settings.priority_weight_ms}
    executor = BlockExecutor("cpu", Policy(config), clock=clock, num_workers=settings.num_workers,
                             queue_order=settings.queue_order, **weight)
    try:
        for load in workload.models:
            pm = partition_model(models[load.name], load.name)
            example = tasks[load.name].inputs[0]
            accuracy = _attach_variants(pm, variants_manifest) if swap else None
            executor.register_model(pm, deadline_ms=load.deadline_ms, priority=load.priority,
                                    queue_depth=load.queue_depth, accuracy=accuracy, example_input=example,
                                    expected_rate_hz=workload.rate_hz)
        executor.profile_solo()
    except BaseException:
        executor.shutdown(timeout_sec=5.0)
        raise
    return executor


def _attach_variants(pm: Any, manifest: str | Path | None) -> float | None:
    """Attach the manifest's variants of ``pm``; returns the model's baseline accuracy in the manifest (the
    reference the variants' accuracies are relative to; without it the policy never swaps)."""
    from compression_tools.manifest import read_manifest
    from multidnn_sched.runtime.variant_loader import attach_variants, load_variants

    path = Path(manifest) if manifest is not None else DEFAULT_VARIANTS_MANIFEST
    if not path.is_file():
        raise ConfigError(f"blocks+swap needs a variant manifest: {path} does not exist "
                          f"(build the default variants with `multidnn-compress build-defaults`)")
    attached = attach_variants(pm, load_variants(path, pm))
    baseline = read_manifest(path).models.get(pm.name)
    log.info("model %s: %d variants attached from %s", pm.name, attached, path)
    return baseline.accuracy if baseline is not None else None


def run_blocks(
    models: dict[str, nn.Module],
    tasks: dict[str, TaskInputs],
    workload: Workload,
    *,
    swap: bool,
    variants_manifest: str | Path | None = None,
    warmup_sec: float | None = None,
) -> tuple[dict[str, ModelRun], int, list[dict[str, Any]]]:
    """Serve the workload on one BlockExecutor; returns per-model runs, #decisions and the decision log.

    A warm-up of ``workload.warmup_sec`` at the real rate first lets the LAG figures and the policy settle
    (also done, untimed, for the static modes' kernels); the measured run starts after it.
    """
    clock = time.monotonic
    executor = build_executor(models, tasks, workload, swap=swap, variants_manifest=variants_manifest, clock=clock)
    names = [m.name for m in workload.models]
    runs = {name: ModelRun(name) for name in names}
    lock = threading.Lock()
    try:
        warm = workload.warmup_sec if warmup_sec is None else warmup_sec
        if warm > 0:
            _feed(executor, tasks, names, [clock() + i / workload.rate_hz
                                           for i in range(int(warm * workload.rate_hz))], None, None, clock)
        decisions_before = executor.stats().decisions
        arrivals = workload.arrivals_sec(clock() + 0.2)
        _feed(executor, tasks, names, arrivals, runs, lock, clock)
        stats = executor.stats()
        decisions = [asdict(d) for d in executor.decisions]
        n_decisions = stats.decisions - decisions_before
    finally:
        executor.shutdown(timeout_sec=10.0)
    for run in runs.values():
        run.completed.sort()
    return runs, n_decisions, decisions


def _feed(
    executor: BlockExecutor,
    tasks: dict[str, TaskInputs],
    names: list[str],
    arrivals: list[float],
    runs: dict[str, ModelRun] | None,
    lock: threading.Lock | None,
    clock: Any,
) -> None:
    """Submit every model's frame at each arrival; wait until every future is resolved."""
    futures: list[Future] = []
    for index, arrival in enumerate(arrivals):
        delay = arrival - clock()
        if delay > 0:
            time.sleep(delay)
        for name in names:
            try:
                future = executor.submit(name, tasks[name].input_for(index), arrival_time=arrival)
            except MultiDnnError as exc:
                log.error("submit %s frame %d failed: %s", name, index, exc)
                continue
            if runs is not None and lock is not None:
                future.add_done_callback(_recorder(runs[name], tasks[name], index, arrival, lock, clock))
            futures.append(future)
    for future in futures:
        try:
            future.result(timeout=60.0)
        except (FrameDroppedError, MultiDnnError, RuntimeError, ValueError):
            pass  # recorded by the callback


def _recorder(run: ModelRun, task: TaskInputs, index: int, arrival: float, lock: threading.Lock, clock: Any) -> Any:
    def record(future: Future) -> None:
        done = clock()
        error = future.exception()
        with lock:
            if isinstance(error, FrameDroppedError):
                run.dropped.append(index)
                if isinstance(error, FrameSkippedError):
                    run.skipped.append(index)
            elif error is not None:
                run.failed.append(index)
            else:
                run.latencies_ms.append((done - arrival) * 1e3)
                run.completed.append(index)
                unique = index % len(task.inputs)
                if unique not in run.outputs:
                    with torch.inference_mode():
                        run.outputs[unique] = compact_output(task.name, future.result())

    return record
