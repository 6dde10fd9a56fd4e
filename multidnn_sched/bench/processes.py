"""``multiprocess``: one spawned OS process per model (one ROS node per process), kept for a whole bench run.

The processes are started once per bench invocation (model build, input pre-processing and a warm pass happen
there, untimed) and then serve one run after another — calibration probes, repeats, sweep probes — on command:
each command carries the run's arrival plan, the shared ``time.monotonic`` start instant and the process's
intra-op thread count. Results travel back as plain numpy (torch tensors would travel as shared-memory handles
that die with the process).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from multidnn_sched.bench.runs import ModelPlan, ModelRun, RunPlan
from multidnn_sched.bench.static_modes import START_LEAD_SEC, StaticConfig, run_model_loop
from multidnn_sched.bench.workload import ModelLoad
from multidnn_sched.exceptions import ConfigError

READY_TIMEOUT_SEC = 300.0
"""How long a model process may take to build its model and inputs (first run on a cold disk cache)."""


@dataclass(frozen=True)
class _Command:
    start_at: float
    plan: ModelPlan
    threads: int
    skip_stale: bool
    load: ModelLoad


def _child(name: str, random_init: bool, native_pointwise: bool, workload_path: str, commands: Any, out: Any
           ) -> None:
    from multidnn_sched.bench.tasks import build_model, build_task_inputs, on_device, render_truth_and_frames
    from multidnn_sched.bench.workload import load_workload

    try:
        workload = load_workload(workload_path)
        load = workload.model(name)
        device = workload.executor.device
        images, truth = render_truth_and_frames(workload.scene, workload.rate_hz)
        task = on_device(build_task_inputs(load, images, truth), device)
        model = build_model(load, random_init=random_init, native_pointwise=native_pointwise).to(device)
        with torch.inference_mode():
            for x in task.inputs[:3]:
                model(x)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        out.put(("error", name, repr(exc)))
        return
    out.put(("ready", name, None))
    while True:
        command = commands.get()
        if command is None:
            return
        torch.set_num_threads(command.threads)
        while time.monotonic() < command.start_at - 0.05:
            time.sleep(0.005)
        run = run_model_loop(model, task, command.load, command.plan, command.start_at,
                             skip_stale=command.skip_stale)
        run.outputs = {k: _to_numpy(v) for k, v in run.outputs.items()}
        out.put(("run", name, run))


def _to_numpy(value: object) -> object:
    if isinstance(value, tuple):
        return tuple(_to_numpy(v) for v in value)
    return value.numpy() if isinstance(value, torch.Tensor) else value


def _to_torch(value: object) -> object:
    if isinstance(value, tuple):
        return tuple(_to_torch(v) for v in value)
    return torch.from_numpy(value) if hasattr(value, "__array__") and not isinstance(value, torch.Tensor) else value


class ProcessPool:
    """One process per model; :meth:`run` serves one :class:`RunPlan` in all of them at once.

    Args:
        workload_path: the workload YAML (each process renders the same frames from it).
        loads: the workload's models.
        random_init: randomly initialised models instead of the shipped weights.
        native_pointwise: PyTorch's own kernel choice for 1x1 convolutions (see ``tasks.build_model``).
    """

    def __init__(self, workload_path: str, loads: Mapping[str, ModelLoad], *, random_init: bool,
                 native_pointwise: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self.loads = dict(loads)
        self._out = ctx.Queue()
        self._commands = {name: ctx.Queue() for name in loads}
        self._procs = [
            ctx.Process(target=_child, name=f"bench-{name}", daemon=True,
                        args=(name, random_init, native_pointwise, workload_path, self._commands[name], self._out))
            for name in loads
        ]
        for p in self._procs:
            p.start()
        try:
            pending = set(loads)
            deadline = time.monotonic() + READY_TIMEOUT_SEC
            while pending:
                kind, name, detail = self._out.get(timeout=max(1.0, deadline - time.monotonic()))
                if kind == "error":
                    raise ConfigError(f"multiprocess mode: the {name} process failed to start: {detail}")
                pending.discard(name)
        except queue.Empty as exc:
            self.close()
            raise ConfigError(f"multiprocess mode: model processes not ready within {READY_TIMEOUT_SEC:.0f} s") from exc
        except BaseException:
            self.close()
            raise

    def run(self, plan: RunPlan, config: StaticConfig) -> dict[str, ModelRun]:
        start_at = time.monotonic() + START_LEAD_SEC + 0.2
        for name, commands in self._commands.items():
            commands.put(_Command(start_at, plan.models[name], config.threads[name], config.skip_stale,
                                  self.loads[name]))
        longest = max(p.total_frames / p.rate_hz for p in plan.models.values())
        results: dict[str, ModelRun] = {}
        while len(results) < len(self._commands):
            try:
                kind, name, run = self._out.get(timeout=longest + 120.0)
            except queue.Empty as exc:
                raise ConfigError("multiprocess mode: a model process did not report its run") from exc
            if kind == "run":
                run.outputs = {k: _to_torch(v) for k, v in run.outputs.items()}
                results[name] = run
        return results

    def close(self) -> None:
        for commands in self._commands.values():
            commands.put(None)
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
