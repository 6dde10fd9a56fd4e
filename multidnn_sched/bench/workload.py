"""Benchmark workloads: which models run, at which rate, with which deadlines, on which frames.

A workload YAML (``config/workloads/default.yaml``)::

    name: default
    rate_hz: 15.0                 # camera rate: every model gets every frame at this rate (open loop)
    duration_sec: 30.0            # overridden by --duration
    warmup_sec: 2.0
    scene: {seed: 4321, width: 640, height: 480, unique_frames: 120}
    models:
      - {name: detector, deadline_ms: 150, priority: 2, queue_depth: 1}
      - {name: embedder, deadline_ms: 150, priority: 1, queue_depth: 1}
      - {name: classifier, deadline_ms: 150, priority: 0, queue_depth: 1}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from multidnn_sched.exceptions import ConfigError

KNOWN_MODELS: tuple[str, ...] = ("detector", "embedder", "classifier")


@dataclass
class ModelLoad:
    """One model of a workload.

    Attributes:
        name: one of ``KNOWN_MODELS``.
        deadline_ms: a frame whose result arrives later than this after the frame's arrival is a miss.
        priority: larger = more important (ties and the policy's swap order).
        queue_depth: pending frames kept per model; when full the OLDEST pending frame is dropped.
    """

    name: str
    deadline_ms: float
    priority: int = 0
    queue_depth: int = 1


@dataclass
class SceneSource:
    """Frames come from the synthetic scene generator (deterministic for a seed)."""

    seed: int = 4321
    width: int = 640
    height: int = 480
    unique_frames: int = 120


@dataclass
class ExecutorSettings:
    """BlockExecutor settings of the ``blocks`` modes (``executor:`` in the YAML)."""

    num_workers: int | None = None
    queue_order: str = "edf"
    priority_weight_ms: float | None = None
    """Key bias per priority level (``None``: the executor's default, strict priority)."""


@dataclass
class Workload:
    name: str
    rate_hz: float
    duration_sec: float
    warmup_sec: float
    scene: SceneSource
    models: list[ModelLoad] = field(default_factory=list)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    modes: list[str] | None = None
    """The bench modes to run by default for this workload (``None``: the bench's default set)."""

    @property
    def n_frames(self) -> int:
        return max(1, int(round(self.duration_sec * self.rate_hz)))

    def arrivals_sec(self, t0: float) -> list[float]:
        """Open-loop arrival instants of every frame (same for every model: one camera)."""
        period = 1.0 / self.rate_hz
        return [t0 + i * period for i in range(self.n_frames)]


def _require(mapping: dict[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ConfigError(f"{where}: missing key {key!r}")
    return mapping[key]


def load_workload(path: str | Path, *, duration_sec: float | None = None) -> Workload:
    """Read and validate a workload YAML; raises ``ConfigError`` naming the file and the bad field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read workload ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    where = str(path)
    scene_raw = raw.get("scene", {}) or {}
    scene = SceneSource(**{k: scene_raw[k] for k in ("seed", "width", "height", "unique_frames") if k in scene_raw})
    models = []
    for i, m in enumerate(_require(raw, "models", where)):
        name = _require(m, "name", f"{where}: models[{i}]")
        if name not in KNOWN_MODELS:
            raise ConfigError(f"{where}: models[{i}].name: expected one of {KNOWN_MODELS}, got {name!r}")
        deadline = float(_require(m, "deadline_ms", f"{where}: models[{i}]"))
        depth = int(m.get("queue_depth", 1))
        if deadline <= 0 or depth < 1:
            raise ConfigError(f"{where}: models[{i}]: deadline_ms must be > 0 and queue_depth >= 1")
        models.append(ModelLoad(name, deadline, int(m.get("priority", 0)), depth))
    if not models:
        raise ConfigError(f"{where}: no models")
    ex_raw = raw.get("executor", {}) or {}
    unknown = set(ex_raw) - {"num_workers", "queue_order", "priority_weight_ms"}
    if unknown:
        raise ConfigError(f"{where}: executor: unknown keys {sorted(unknown)}")
    executor = ExecutorSettings(**ex_raw)
    modes = raw.get("modes")
    if modes is not None and (not isinstance(modes, list) or not all(isinstance(m, str) for m in modes)):
        raise ConfigError(f"{where}: modes: expected a list of mode names, got {modes!r}")
    workload = Workload(
        name=str(raw.get("name", path.stem)),
        rate_hz=float(_require(raw, "rate_hz", where)),
        duration_sec=float(duration_sec if duration_sec is not None else raw.get("duration_sec", 30.0)),
        warmup_sec=float(raw.get("warmup_sec", 2.0)),
        scene=scene,
        models=models,
        executor=executor,
        modes=modes,
    )
    if workload.rate_hz <= 0 or workload.duration_sec <= 0:
        raise ConfigError(f"{where}: rate_hz and duration_sec must be > 0")
    return workload
