"""The shared ``BlockExecutor`` behind the :class:`~multidnn_sched.ros.runtime.ModelRuntime` interface.

Every model the container runs is cut into blocks (``partition_model``) and registered on ONE executor with
deadline, priority and queue depth from the container's parameters; the nodes' ``submit`` calls go straight to
it. Live parameter changes (policy, EMA alpha, deadlines, priorities) are pushed with :meth:`configure`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path

import torch
from torch import nn

from multidnn_sched.exceptions import ConfigError, ExecutorShutdownError
from multidnn_sched.ros.params import ParamValue
from multidnn_sched.ros.runtime import (
    DECISION_LOG_SIZE,
    BlockStatus,
    DecisionRecord,
    RuntimeSettings,
    RuntimeStatus,
)
from multidnn_sched.ros.settings import settings_from_values
from multidnn_sched.runtime.block import Carry, PartitionedModel
from multidnn_sched.runtime.device import resolve_pool
from multidnn_sched.runtime.executor import BlockExecutor
from multidnn_sched.runtime.partition import partition_model
from multidnn_sched.runtime.policy import ORIGINAL, Policy, PolicyConfig

ExampleInputs = Mapping[str, Carry]

DECISION_INTERVAL_SEC = 0.5
"""Policy period of the container's executor."""


def default_example_inputs() -> dict[str, Carry]:
    """One input per default model at its runtime shape (solo profiling at start-up)."""
    from multidnn_sched.models.classifier import CLASSIFIER_INPUT_HW
    from multidnn_sched.models.detector import DETECTOR_INPUT_HW
    from multidnn_sched.models.embedding import EMBEDDER_INPUT_HW

    return {
        "detector": torch.zeros(1, 3, *DETECTOR_INPUT_HW),
        "embedder": torch.zeros(4, 3, *EMBEDDER_INPUT_HW),
        "classifier": torch.zeros(4, 3, *CLASSIFIER_INPUT_HW),
    }


class SharedRuntime:
    """All models on one ``BlockExecutor``.

    Args:
        models: model name -> ``nn.Module`` (partitioned here) or ``PartitionedModel``.
        values: the container's parameter values (``workers``, ``lag.*``, ``policy.*``, ``models.*``).
        example_inputs: per-model sample carry for solo profiling (``None``: :func:`default_example_inputs`
            for the default model names; models without one are not profiled).
        variants_manifest: ``compression_tools`` manifest whose usable variants are pre-loaded
            (sha256-checked) and attached to the blocks; the manifest's per-model accuracy is the reference of
            the variants' accuracies (``None``: parameter ``variants_manifest``; empty: no variants).
        schedule: the executor's schedule (``"policy"``; ``"parallel"`` for the ``blocks`` mode without swap).
        profile: profile solo latencies at start-up.
        clock: seconds clock of the executor.
    """

    def __init__(
        self,
        models: Mapping[str, nn.Module | PartitionedModel],
        values: Mapping[str, ParamValue],
        example_inputs: ExampleInputs | None = None,
        variants_manifest: Path | None = None,
        schedule: str = "policy",
        profile: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        settings = settings_from_values(values)
        self._clock = clock
        device = str(values.get("device", "cpu"))  # the container's `device`, checked at start-up
        # 0 = auto, the bench's default too (runtime.device.resolve_pool: the partitioned pool on CPU)
        num_workers, worker_threads = resolve_pool(device, int(values["workers"]) or None,
                                                   int(values["worker_threads"]) or None, len(models))
        self.executor = BlockExecutor(
            device,
            Policy(settings.policy),
            schedule=schedule,
            num_workers=num_workers,
            worker_threads=worker_threads,
            sequential_threads=int(values.get("sequential_threads", 0)) or None,
            frames_in_flight=int(values.get("frames_in_flight", 0)) or None,
            # A mild bias, not the executor's strict default: the nodes form a pipeline (tracker after
            # detector, classifier after tracker), and with strict priority the detector's next frames starved
            # the classifier (demo p99 classifier 3.6x baseline vs 0.4x with 10 ms).
            priority_weight_ms=float(values["priority_weight_ms"]),
            clock=clock,
            lag_alpha=settings.ema_alpha,
            decision_interval_sec=DECISION_INTERVAL_SEC,
            # Nodes answer every frame they accept (their own queues already drop by the documented policy);
            # shedding late frames is a benchmark/runtime option, not yet exposed as a ROS parameter.
            shed_late_frames=False,
        )
        if example_inputs is None:
            example_inputs = {k: v for k, v in default_example_inputs().items() if k in models}
        if variants_manifest is None and str(values.get("variants_manifest", "")):
            variants_manifest = Path(str(values["variants_manifest"]))
        self.partitioned: dict[str, PartitionedModel] = {}
        accuracies: dict[str, float | None] = {}
        for name, model in models.items():
            pm = model if isinstance(model, PartitionedModel) else partition_model(model, name)
            if pm.name != name:
                pm = PartitionedModel(name, pm.blocks, pm.family)
            self.partitioned[name] = pm
            if variants_manifest is not None:
                accuracies[name] = _attach_manifest_variants(variants_manifest, pm)
        for name, pm in self.partitioned.items():
            self.executor.register_model(
                pm,
                deadline_ms=settings.deadlines_ms.get(name, 100.0),
                priority=settings.priorities.get(name, 0),
                queue_depth=int(values.get(f"models.{name}.queue_depth", 2)),
                accuracy=accuracies.get(name),
                example_input=example_inputs.get(name),
                expected_rate_hz=float(values["expected_rate_hz"]) or None,  # every node runs on every frame
            )
        if profile:
            with torch.inference_mode():
                for name in self.partitioned:
                    if example_inputs.get(name) is not None:
                        self.executor.profile_solo(name)
        self._forced_log: list[DecisionRecord] = []

    def submit(self, model: str, carry: Carry) -> Future:
        try:
            return self.executor.submit(model, carry)
        except ExecutorShutdownError as error:
            future: Future = Future()
            future.set_exception(error)
            return future

    def status(self) -> RuntimeStatus:
        stats = self.executor.stats()
        blocks = [
            BlockStatus(b.model, b.block, b.lag_ms if b.samples else None, b.mode, b.variant)
            for b in stats.blocks.values()
        ]
        decisions = [
            DecisionRecord(d.time_sec, d.model, d.block, f"{d.kind}={d.value}", d.reason)
            for d in self.executor.decisions[-DECISION_LOG_SIZE:]
        ]
        return RuntimeStatus(blocks, decisions, {name: m.dropped for name, m in stats.models.items()},
                             self.executor.num_workers, self.executor.worker_threads or 0,
                             self.executor.frames_in_flight, self.executor.sequential_threads or 0)

    def configure(self, settings: RuntimeSettings) -> None:
        """Push live settings: policy config, LAG EMA alpha, per-model deadline and priority."""
        if self.executor.policy is not None:
            self.executor.policy.config = PolicyConfig(**vars(settings.policy))
        self.executor.set_lag_alpha(settings.ema_alpha)
        for name in self.partitioned:
            self.executor.configure_model(
                name, deadline_ms=settings.deadlines_ms.get(name), priority=settings.priorities.get(name)
            )

    def set_override(
        self, model: str, block: str, mode: str | None = None, variant: str | None = None
    ) -> None:
        """Force a block's mode / variant; ``"auto"`` hands it back to the policy (variant: original)."""
        if model not in self.partitioned:
            raise ConfigError(f"expected a model in {sorted(self.partitioned)}, got {model!r}")
        if block not in self.partitioned[model].block_names:
            raise ConfigError(
                f"model {model!r} has no block {block!r}; blocks: {self.partitioned[model].block_names}"
            )
        if mode == "auto" or variant == "auto":
            if variant == "auto":
                self.executor.set_override(model, block, variant=ORIGINAL)
            self.executor.clear_override(model, block)
            return
        self.executor.set_override(model, block, mode=mode, variant=variant)

    def shutdown(self, timeout_sec: float = 5.0) -> bool:
        return self.executor.shutdown(timeout_sec)


def _attach_manifest_variants(manifest_path: Path, pm: PartitionedModel) -> float | None:
    """Pre-load ``pm``'s usable variants from a manifest into its blocks; returns its reference accuracy (the
    original model's held-out metric the variants' figures are divided by; ``None`` when the manifest has none:
    the variants' relative accuracy is then unknown and the policy never swaps them in, instead of taking a raw
    metric such as 93.8 for a relative accuracy).

    Raises:
        CheckpointError: unreadable manifest, missing file or sha256 mismatch (the message names the file).
    """
    from multidnn_sched.runtime.backends.manifest import read_manifest
    from multidnn_sched.runtime.variant_loader import attach_variants, load_variants

    attach_variants(pm, load_variants(manifest_path, pm))
    baseline = read_manifest(manifest_path).models.get(pm.name)
    return baseline.accuracy if baseline is not None and baseline.accuracy else None
