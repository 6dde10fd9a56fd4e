"""Benchmark workloads: which models run, at which rates, with which deadlines, on which frames.

Schema v1 (``config/workloads/default.yaml``): one camera, the default models, every model on every frame::

    name: default
    rate_hz: 15.0                 # camera rate: every model gets every frame at this rate (open loop)
    duration_sec: 30.0            # overridden by --duration
    warmup_sec: 2.0
    scene: {seed: 4321, width: 640, height: 480, unique_frames: 120}
    models:
      - {name: detector, deadline_ms: 150, priority: 2, queue_depth: 1}

Schema v2 (``version: 2``, e.g. ``config/workloads/seed_edge_mix.yaml``): any registry model, each with its own
rate (several cameras)::

    version: 2
    name: edge_mix
    duration_sec: 20
    scene: {seed: 4321, width: 640, height: 480, unique_frames: 60}
    models:
      - name: ssdlite                            # key in reports (default: the registry name)
        model: torchvision:ssdlite320_mobilenet_v3_large
        task: detection                          # optional; checked against the registry
        rate_hz: 15                              # this model's camera rate
        input: [320, 320]                        # network input [h, w] (default: the model's)
        crops: 0                                 # 0: the whole frame; N: N object crops per frame
        deadline_ms: 100
        priority: 1
        queue_depth: 1
        weights: ""                              # optional local weights file
        labels_file: ""                          # optional class names

``Workload.rate_hz`` stays the camera rate of v1 files; in v2 it is the fastest model's rate (the tick of the
shared frame clock), and ``rate_for(name)`` / ``arrivals_for(name, t0)`` give each model's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from multidnn_sched.exceptions import ConfigError

KNOWN_MODELS: tuple[str, ...] = ("detector", "embedder", "classifier")
"""v1 model names (the default models)."""

SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)

V2_MODEL_KEYS: frozenset[str] = frozenset(
    {"name", "model", "task", "rate_hz", "input", "crops", "deadline_ms", "priority", "queue_depth", "weights",
     "labels_file"}
)


@dataclass
class ModelLoad:
    """One model of a workload.

    Attributes:
        name: key in reports; v1: one of ``KNOWN_MODELS``.
        deadline_ms: a frame whose result arrives later than this after the frame's arrival is a miss.
        priority: larger = more important (ties and the policy's swap order).
        queue_depth: pending frames kept per model; when full the OLDEST pending frame is dropped.
        model: registry name (v1: ``default:<name>``).
        task: ``detection`` / ``classification`` / ``embedding`` (``None``: the registry's).
        rate_hz: this model's frame rate (``None``: the workload's camera rate).
        input_hw: network input (height, width) (``None``: the model's default).
        crops: objects cropped per frame for crop models (0: the whole frame; default models: the visible GT).
        weights: local weights file ('' the model's own).
        labels_file: class names file ('' the model's own).
    """

    name: str
    deadline_ms: float
    priority: int = 0
    queue_depth: int = 1
    model: str = ""
    task: str | None = None
    rate_hz: float | None = None
    input_hw: tuple[int, int] | None = None
    crops: int = 0
    weights: str = ""
    labels_file: str = ""

    def __post_init__(self) -> None:
        if not self.model:
            self.model = f"default:{self.name}"


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
    worker_threads: int | None = None
    """Fixed intra-op threads of every block on every worker (CPU; ``None``: elastic), see
    ``BlockExecutor(worker_threads=...)``."""
    sequential_threads: int | None = None
    """Intra-op threads of a sequential block in the partitioned pool (``None``: every core), see
    ``BlockExecutor(sequential_threads=...)``; set it to ``worker_threads`` for "alone at the parallel count"."""
    frames_in_flight: int | None = None
    """Frames of one model dispatched at once (``None``: the executor's default, one), see
    ``BlockExecutor(frames_in_flight=...)``."""
    queue_order: str = "edf"
    placement: str = "shared"
    """``shared`` (any worker runs any model) or ``pinned`` (a home worker per model), see
    ``BlockExecutor(placement=...)``."""
    priority_weight_ms: float | None = None
    """Key bias per priority level (``None``: the executor's default, strict priority)."""
    device: str = "cpu"
    """torch device of the blocks modes: ``cpu``, ``cuda`` or ``cuda:N`` (checked at load time)."""


@dataclass
class Workload:
    name: str
    rate_hz: float
    duration_sec: float
    warmup_sec: float
    scene: SceneSource
    models: list[ModelLoad] = field(default_factory=list)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    version: int = 1
    modes: list[str] | None = None
    """The bench modes to run by default for this workload (``None``: the bench's default set)."""

    @property
    def n_frames(self) -> int:
        """Frames of the camera clock (``rate_hz``) in ``duration_sec``."""
        return max(1, int(round(self.duration_sec * self.rate_hz)))

    def arrivals_sec(self, t0: float) -> list[float]:
        """Open-loop arrival instants of every frame of the camera clock (v1: every model's frames)."""
        period = 1.0 / self.rate_hz
        return [t0 + i * period for i in range(self.n_frames)]

    def model(self, name: str) -> ModelLoad:
        """The entry called ``name``; raises ``ConfigError`` naming the known ones."""
        for load in self.models:
            if load.name == name:
                return load
        raise ConfigError(f"workload {self.name!r}: expected a model in {[m.name for m in self.models]}, got {name!r}")

    def rate_for(self, name: str) -> float:
        """Frame rate of model ``name`` (its own ``rate_hz``, else the camera rate)."""
        rate = self.model(name).rate_hz
        return float(rate) if rate else self.rate_hz

    def n_frames_for(self, name: str) -> int:
        return max(1, int(round(self.duration_sec * self.rate_for(name))))

    def arrivals_for(self, name: str, t0: float) -> list[float]:
        """Open-loop arrival instants of model ``name``'s frames at its own rate."""
        period = 1.0 / self.rate_for(name)
        return [t0 + i * period for i in range(self.n_frames_for(name))]


def _check_device(device: str, where: str) -> None:
    """``cpu`` / ``cuda`` / ``cuda:N``; CUDA without a usable GPU is an error here, never a silent CPU run."""
    import re

    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", str(device)):
        raise ConfigError(f"{where}: executor.device: expected cpu, cuda or cuda:N, got {device!r}")
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"{where}: executor.device: {device!r} requested but no CUDA GPU is usable here "
                "(torch.cuda.is_available() is False)"
            )


def _require(mapping: dict[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ConfigError(f"{where}: missing key {key!r}")
    return mapping[key]


_LOADED: dict[str, ModelLoad] = {}
"""Entries of the workloads loaded in this process, by name: ``bench.tasks.build_task_inputs(name, ...)`` /
``build_model(name)`` find a v2 entry's registry settings from its name alone."""


def loaded_entry(name: str) -> ModelLoad | None:
    """The entry called ``name`` of the last workload loaded in this process (``None``: none)."""
    return _LOADED.get(name)


def _v1_model(m: dict[str, Any], where: str) -> ModelLoad:
    name = _require(m, "name", where)
    if name not in KNOWN_MODELS:
        raise ConfigError(f"{where}.name: expected one of {KNOWN_MODELS}, got {name!r}")
    deadline = float(_require(m, "deadline_ms", where))
    depth = int(m.get("queue_depth", 1))
    if deadline <= 0 or depth < 1:
        raise ConfigError(f"{where}: deadline_ms must be > 0 and queue_depth >= 1")
    return ModelLoad(name, deadline, int(m.get("priority", 0)), depth)


def _v2_model(m: dict[str, Any], where: str) -> ModelLoad:
    if not isinstance(m, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(m).__name__}")
    unknown = sorted(set(m) - V2_MODEL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; expected some of {sorted(V2_MODEL_KEYS)}")
    registry_name = str(_require(m, "model", where))
    if ":" not in registry_name:
        raise ConfigError(
            f"{where}.model: expected a registry name such as torchvision:resnet50 or default:detector, "
            f"got {registry_name!r}"
        )
    deadline = float(_require(m, "deadline_ms", where))
    depth = int(m.get("queue_depth", 1))
    rate = m.get("rate_hz")
    crops = int(m.get("crops", 0))
    if deadline <= 0 or depth < 1 or crops < 0 or (rate is not None and float(rate) <= 0):
        raise ConfigError(f"{where}: deadline_ms and rate_hz must be > 0, queue_depth >= 1 and crops >= 0")
    size = m.get("input")
    input_hw = None
    if size is not None:
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise ConfigError(f"{where}.input: expected [height, width] in pixels, got {size!r}")
        input_hw = (int(size[0]), int(size[1]))
    return ModelLoad(
        name=str(m.get("name", registry_name)),
        deadline_ms=deadline,
        priority=int(m.get("priority", 0)),
        queue_depth=depth,
        model=registry_name,
        task=m.get("task"),
        rate_hz=float(rate) if rate is not None else None,
        input_hw=input_hw,
        crops=crops,
        weights=str(m.get("weights", "") or ""),
        labels_file=str(m.get("labels_file", "") or ""),
    )


def load_workload(path: str | Path, *, duration_sec: float | None = None) -> Workload:
    """Read and validate a workload YAML (schema v1 or v2); raises ``ConfigError`` naming the file and the bad
    field."""
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
    version = raw.get("version", 1)
    if version not in SCHEMA_VERSIONS:
        raise ConfigError(f"{where}: version: expected one of {list(SCHEMA_VERSIONS)}, got {version!r}")
    scene_raw = raw.get("scene", {}) or {}
    scene = SceneSource(**{k: scene_raw[k] for k in ("seed", "width", "height", "unique_frames") if k in scene_raw})
    parse = _v1_model if version == 1 else _v2_model
    models = [parse(m, f"{where}: models[{i}]") for i, m in enumerate(_require(raw, "models", where) or [])]
    if not models:
        raise ConfigError(f"{where}: no models")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: model names must be unique (set name: per entry), got {names}")
    ex_raw = raw.get("executor", {}) or {}
    unknown = set(ex_raw) - {"num_workers", "worker_threads", "sequential_threads", "frames_in_flight",
                          "queue_order", "placement", "priority_weight_ms", "device"}
    if unknown:
        raise ConfigError(f"{where}: executor: unknown keys {sorted(unknown)}")
    executor = ExecutorSettings(**ex_raw)
    for key in ("num_workers", "worker_threads", "sequential_threads", "frames_in_flight"):
        value = getattr(executor, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{where}: executor.{key}: expected an integer >= 1 or null, got {value!r}")
    modes = raw.get("modes")
    if modes is not None and (not isinstance(modes, list) or not all(isinstance(m, str) for m in modes)):
        raise ConfigError(f"{where}: modes: expected a list of mode names, got {modes!r}")
    _check_device(executor.device, where)
    if version == 1:
        rate = float(_require(raw, "rate_hz", where))
    else:
        default_rate = raw.get("rate_hz")
        for m in models:
            if m.rate_hz is None:
                if default_rate is None:
                    raise ConfigError(
                        f"{where}: model {m.name!r}: expected rate_hz (on the model or the workload), got none"
                    )
                m.rate_hz = float(default_rate)
        rate = max(float(m.rate_hz or 0.0) for m in models)
    workload = Workload(
        name=str(raw.get("name", path.stem)),
        rate_hz=rate,
        duration_sec=float(duration_sec if duration_sec is not None else raw.get("duration_sec", 30.0)),
        warmup_sec=float(raw.get("warmup_sec", 2.0)),
        scene=scene,
        models=models,
        executor=executor,
        version=int(version),
        modes=modes,
    )
    if workload.rate_hz <= 0 or workload.duration_sec <= 0:
        raise ConfigError(f"{where}: rate_hz and duration_sec must be > 0")
    _LOADED.clear()
    _LOADED.update({m.name: m for m in models})
    return workload
