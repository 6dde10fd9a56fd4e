"""Which network each perception node runs, on which device: read the nodes' model parameters, resolve the
container's ``device``, load the models from the registry and wire their pre/post-processing into the tasks.

The model parameters (``model``, ``weights``, ``labels_file``, ``input_width``, ``input_height``) are
read-only parameters *of each node*, but the shared runtime must exist before the nodes: they are read first
by a short-lived node of the same name in the same context (so the params file, ``--ros-args -p`` and test
overrides apply exactly as they will to the node), then the node itself declares them again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

from multidnn_sched.exceptions import CheckpointError, ConfigError
from multidnn_sched.models.registry import LoadedModel, get_model_spec
from multidnn_sched.ros.params import (
    CLASSIFIER_PARAMS,
    DETECTOR_PARAMS,
    MODEL_PARAM_NAMES,
    TRACKER_PARAMS,
    ParamSpec,
    ParamValue,
    declare_parameters,
)
from multidnn_sched.ros.tasks import CropTask, DetectorTask, PerceptionTasks, make_default_tracker
from multidnn_sched.runtime.kernels import use_onednn_pointwise

NODE_SPECS: dict[str, tuple[ParamSpec, ...]] = {
    "detector": DETECTOR_PARAMS,
    "tracker": TRACKER_PARAMS,
    "classifier": CLASSIFIER_PARAMS,
}

NODE_TASKS: dict[str, tuple[str, ...]] = {
    "detector": ("detection",),
    "tracker": ("embedding", "classification"),  # any [N, D] output works as an appearance embedding
    "classifier": ("classification",),
}
"""Registry tasks each node accepts."""


@dataclass(frozen=True)
class ModelChoice:
    """One node's model parameters.

    Attributes:
        node: node name (``detector``, ``tracker``, ``classifier``).
        model: registry name.
        weights: weights file ('' the model's own).
        labels_file: labels file ('' the model's own).
        input_hw: network input (height, width), ``None``: the model's default.
    """

    node: str
    model: str
    weights: str = ""
    labels_file: str = ""
    input_hw: tuple[int, int] | None = None

    @property
    def is_default(self) -> bool:
        return self.model.startswith("default:") and not self.weights and not self.labels_file and not self.input_hw


def resolve_device(text: str) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N`` -> ``torch.device``.

    Raises:
        ConfigError: another string, CUDA asked for without a usable GPU, or an index past the GPU count.
    """
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise ConfigError(f"device: expected cpu, cuda or cuda:N, got {text!r}") from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"device: expected cpu, cuda or cuda:N, got {text!r}")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device: {text!r} requested but no CUDA GPU is usable here (torch.cuda.is_available() is False; "
            f"torch {torch.__version__}); set device:=cpu to run on the CPU"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device: expected cuda:0..cuda:{count - 1} ({count} GPUs), got {text!r}")
    return device


def read_model_choice(node_name: str, context: Context | None, overrides: Sequence[Parameter] | None) -> ModelChoice:
    """Read ``node_name``'s model parameters the way the node will see them (see the module docstring).

    Raises:
        ConfigError: a value out of range / not a registry name.
    """
    specs = [s for s in NODE_SPECS[node_name] if s.name in MODEL_PARAM_NAMES]
    probe = Node(
        node_name,
        context=context,
        parameter_overrides=list(overrides or []),
        start_parameter_services=False,
        enable_rosout=False,
    )
    try:
        values: dict[str, ParamValue] = declare_parameters(probe, specs)
    finally:
        probe.destroy_node()
    width, height = int(values["input_width"]), int(values["input_height"])
    if (width == 0) != (height == 0):
        raise ConfigError(
            f"node {node_name!r}: expected input_width and input_height both set or both 0, got {width}x{height}"
        )
    return ModelChoice(
        node_name,
        str(values["model"]),
        str(values["weights"]),
        str(values["labels_file"]),
        (height, width) if width else None,
    )


def load_models(choices: Mapping[str, ModelChoice], device: torch.device) -> dict[str, LoadedModel]:
    """Load each node's model from the registry onto ``device``; keys are the nodes' names. Served models run
    their 1x1 convolutions on oneDNN at one intra-op thread (:mod:`multidnn_sched.runtime.kernels`: the
    partitioned CPU pool's blocks run single-threaded, where PyTorch's heuristic picks a slower kernel).

    Raises:
        ConfigError: unknown name, or a model whose task the node cannot use.
        CheckpointError: a missing / unreadable / ill-fitting file (named).
    """
    loaded: dict[str, LoadedModel] = {}
    for node, choice in choices.items():
        try:
            task = NODE_TASKS[node][0] if choice.model.startswith(("exported:", "module:")) else None
            spec = get_model_spec(
                choice.model,
                weights=choice.weights or None,
                labels_file=choice.labels_file or None,
                input_hw=choice.input_hw,
                task=task,
            )
        except (ConfigError, CheckpointError) as error:
            raise type(error)(f"node {node!r}: {error}") from error
        if spec.task not in NODE_TASKS[node]:
            raise ConfigError(
                f"node {node!r}: expected a {' or '.join(NODE_TASKS[node])} model, got {spec.name!r} ({spec.task})"
            )
        loaded[node] = spec.load(device)
        use_onednn_pointwise(loaded[node].model)  # 1x1 convolutions on oneDNN at one intra-op thread
    return loaded


def _full_frame(model: LoadedModel) -> object:
    def whole(frame: np.ndarray) -> torch.Tensor:
        h, w = frame.shape[:2]
        return model.crops(frame, np.array([[0.0, 0.0, float(w), float(h)]], np.float32))

    return whole


def tasks_from_models(loaded: Mapping[str, LoadedModel], fallback: PerceptionTasks) -> PerceptionTasks:
    """The nodes' tasks: each loaded model's own pre/post-processing and labels; ``fallback`` for the rest."""
    detector = fallback.detector
    if "detector" in loaded:
        model = loaded["detector"]
        assert model.postprocess is not None
        detector = DetectorTask(model.preprocess, model.postprocess, model.labels)
    crops: dict[str, CropTask] = {"tracker": fallback.embedder, "classifier": fallback.classifier}
    for node in crops:
        if node in loaded:
            model = loaded[node]
            crops[node] = CropTask(model.crops, _full_frame(model), model.labels)  # type: ignore[arg-type]
    return PerceptionTasks(detector, crops["tracker"], crops["classifier"], make_default_tracker)


class _OnDevice(torch.nn.Module):
    """Baseline: move the node's CPU input to the model's device, then run the model whole."""

    def __init__(self, core: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.core = core
        self.device = device

    def forward(self, carry: object) -> object:
        if isinstance(carry, torch.Tensor):
            carry = carry.to(self.device)
        return self.core(carry)


def runtime_from_models(values: Mapping[str, ParamValue], loaded: Mapping[str, LoadedModel]) -> object:
    """The runtime over registry models keyed by runtime model name: ``baseline`` -> ``DirectRuntime`` of the
    whole cores, else the shared ``BlockExecutor`` of their blocks on the container's ``device``."""
    from multidnn_sched.ros.runtime import DirectRuntime

    device = resolve_device(str(values.get("device", "cpu")))
    if bool(values.get("baseline", False)):
        return DirectRuntime({name: _OnDevice(m.core, device) for name, m in loaded.items()})
    from multidnn_sched.ros.shared_runtime import SharedRuntime

    return SharedRuntime(
        {name: m.partition(name) for name, m in loaded.items()},  # type: ignore[misc]
        values,
        example_inputs={name: m.example_input() for name, m in loaded.items()},
    )
