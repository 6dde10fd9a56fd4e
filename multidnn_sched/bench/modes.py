"""The benchmark's modes: one table of what each mode is, and one entry point that runs a mode on a plan.

| mode | serving | threads | stale frames | variants |
|---|---|---|---|---|
| ``multiprocess`` | one process per model | calibrated per model | skipped | — |
| ``threads`` | one thread per model | calibrated per model | skipped | — |
| ``sequential`` | one thread, EDF across models | all cores | skipped | — |
| ``sequential+variants`` / ``threads+variants`` | as above | calibrated | skipped | blocks+swap's set |
| ``blocks`` | BlockExecutor (policy, no swap) | the executor's | shed | — |
| ``blocks+swap`` | BlockExecutor (policy + swap) | the executor's | shed | swapped at run time |
| ``multiprocess-naive`` / ``threads-naive`` | as above | torch default (= cores) | computed | — |
| ``sequential-fifo`` | one thread, oldest first | torch default | computed | — |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from multidnn_sched.bench.block_modes import run_blocks
from multidnn_sched.bench.fixed_variants import Assignment, VariantCache, compose
from multidnn_sched.bench.processes import ProcessPool
from multidnn_sched.bench.runs import ModelRun, RunPlan
from multidnn_sched.bench.static_modes import StaticConfig, run_sequential, run_threads
from multidnn_sched.bench.tasks import TaskInputs
from multidnn_sched.bench.workload import ExecutorSettings, ModelLoad
from multidnn_sched.exceptions import ConfigError
from multidnn_sched.runtime.device import usable_cores


@dataclass(frozen=True)
class ModeSpec:
    """What a mode is (see the module table).

    Attributes:
        name: the mode's name on the command line and in the JSON.
        serving: ``"multiprocess"``, ``"threads"``, ``"sequential"`` or ``"blocks"``.
        tuned: calibrated threads and stale-frame skipping (static modes); EDF order (sequential).
        variants: static modes: run the fixed variant assignment; blocks: swap at run time.
        description: one line for the table and ``--help``.
    """

    name: str
    serving: str
    tuned: bool
    variants: bool
    description: str


MODES: dict[str, ModeSpec] = {spec.name: spec for spec in (
    ModeSpec("multiprocess", "multiprocess", True, False, "one process per model, calibrated threads"),
    ModeSpec("threads", "threads", True, False, "one thread per model, calibrated threads"),
    ModeSpec("sequential", "sequential", True, False, "one thread, earliest deadline first"),
    ModeSpec("sequential+variants", "sequential", True, True, "sequential with blocks+swap's variant set"),
    ModeSpec("threads+variants", "threads", True, True, "threads with blocks+swap's variant set"),
    ModeSpec("blocks", "blocks", True, False, "BlockExecutor, no variants (scheduling only)"),
    ModeSpec("blocks+swap", "blocks", True, True, "BlockExecutor with run-time variant swaps"),
    ModeSpec("multiprocess-naive", "multiprocess", False, False, "naive: torch default threads, no skipping"),
    ModeSpec("threads-naive", "threads", False, False, "naive: torch default threads, no skipping"),
    ModeSpec("sequential-fifo", "sequential", False, False, "naive: oldest frame first, no skipping"),
)}
DEFAULT_MODES: tuple[str, ...] = ("multiprocess", "threads", "sequential", "sequential+variants",
                                  "threads+variants", "blocks", "blocks+swap")
CALIBRATED: tuple[str, ...] = tuple(n for n, s in MODES.items() if s.tuned and s.serving in ("threads",
                                                                                               "multiprocess"))
"""Modes whose intra-op threads per model are calibrated. ``sequential`` runs one model at a time, so it gives
that model every core (nothing to share them with)."""


def check_modes(names: list[str], where: str) -> list[str]:
    """Raise ``ConfigError`` naming unknown modes; returns ``names``."""
    unknown = [n for n in names if n not in MODES]
    if unknown:
        raise ConfigError(f"{where}: unknown mode(s) {unknown}; expected some of {list(MODES)}")
    if not names:
        raise ConfigError(f"{where}: no modes")
    return names


@dataclass
class ModeRun:
    """One mode's run: outcomes plus what the scheduler did (blocks modes)."""

    runs: dict[str, ModelRun]
    decisions_timed: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchContext:
    """Everything the modes share within one bench invocation (built once, outside any timed region).

    Attributes:
        loads: the workload's models by name.
        models: fp32 models by name.
        tasks: pre-computed inputs by name.
        executor_settings: BlockExecutor settings of the blocks modes.
        workload_path: for the multiprocess mode's processes.
        random_init: randomly initialised models (multiprocess processes build their own).
        native_pointwise: PyTorch's own kernel choice for 1x1 convolutions (``--native-pointwise``; the
            processes of the multiprocess mode follow it).
        variants: the manifest's variants (``None``: no variant modes possible).
        assignment: the fixed variant set of the ``+variants`` modes.
        threads: calibrated threads per model, by mode.
    """

    loads: dict[str, ModelLoad]
    models: dict[str, nn.Module]
    tasks: dict[str, TaskInputs]
    executor_settings: ExecutorSettings
    workload_path: str = ""
    random_init: bool = False
    native_pointwise: bool = False
    variants: VariantCache | None = None
    assignment: Assignment | None = None
    threads: dict[str, dict[str, int]] = field(default_factory=dict)
    cores: int = field(default_factory=usable_cores)
    _pool: ProcessPool | None = None
    _variant_models: dict[str, nn.Module] | None = None

    @property
    def deadlines_ms(self) -> dict[str, float]:
        return {name: load.deadline_ms for name, load in self.loads.items()}

    def pool(self) -> ProcessPool:
        if self._pool is None:
            self._pool = ProcessPool(self.workload_path, self.loads, random_init=self.random_init,
                                     native_pointwise=self.native_pointwise)
        return self._pool

    def variant_models(self) -> dict[str, nn.Module]:
        if self._variant_models is None:
            if self.variants is None or self.assignment is None:
                raise ConfigError("the +variants modes need a variant manifest and an assignment")
            self._variant_models = {name: compose(model, name, self.assignment.get(name, {}), self.variants)
                                    for name, model in self.models.items()}
        return self._variant_models

    def static_config(self, spec: ModeSpec, threads: Mapping[str, int] | None = None) -> StaticConfig:
        if threads is None:
            if spec.tuned and spec.serving != "sequential":
                threads = self.threads.get(spec.name) or dict.fromkeys(self.loads, 1)
            else:
                threads = dict.fromkeys(self.loads, self.cores)  # torch's default: one thread per core
        order = "edf" if spec.tuned else "fifo"
        return StaticConfig(dict(threads), skip_stale=spec.tuned, order=order)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def run_mode(ctx: BenchContext, mode: str, plan: RunPlan, *, threads: Mapping[str, int] | None = None) -> ModeRun:
    """Run ``mode`` on ``plan`` (``threads``: override the calibrated threads, for calibration probes)."""
    spec = MODES[mode]
    if spec.serving == "blocks":
        result = run_blocks(ctx.models, ctx.tasks, ctx.loads, plan, ctx.executor_settings,
                            variants=ctx.variants if spec.variants else None)
        extra = {"modes_at_end": result.modes_at_end, "assignment_at_timed_start": result.assignment_at_timed_start,
                 "assignment_at_end": result.assignment_at_end,
                 "pool": {"workers": result.pool[0], "worker_threads": result.pool[1],
                          "frames_in_flight": result.pool[2], "sequential_threads": result.pool[3]},
                 "shed_probes": result.shed_probes}
        if result.homes_at_end:
            extra["homes_at_end"] = result.homes_at_end
        return ModeRun(result.runs, result.decisions_timed, extra)
    config = ctx.static_config(spec, threads)
    extra = {"threads_per_model": dict(config.threads), "order": config.order, "skip_stale": config.skip_stale}
    if spec.serving == "multiprocess":
        if spec.variants:
            raise ConfigError("multiprocess with variants is not a mode")
        return ModeRun(ctx.pool().run(plan, config), extra=extra)
    models = ctx.variant_models() if spec.variants else ctx.models
    if spec.serving == "threads":
        return ModeRun(run_threads(models, ctx.tasks, ctx.loads, plan, config), extra=extra)
    return ModeRun(run_sequential(models, ctx.tasks, ctx.loads, plan, config), extra=extra)
