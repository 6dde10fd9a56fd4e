"""ROS parameters of the perception container and its nodes: specs, descriptors, validation.

Each parameter is a :class:`ParamSpec` (name, default, range or choices, description, read-only). The
specs are the single source: :func:`declare_parameters` turns them into ``ParameterDescriptor`` s (so
``ros2 param describe`` shows ranges), and :func:`validate` is what the nodes' on-set callbacks call, so an
invalid ``ros2 param set`` is rejected with a reason naming the parameter, what was expected and what came.
``config/perception.yaml`` lists every parameter with its default (a test checks they agree).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from multidnn_sched.exceptions import ConfigError
from multidnn_sched.ros.torch_threads import NODE_TORCH_THREADS
from multidnn_sched.runtime.policy import PolicyConfig

_POLICY = PolicyConfig()
"""The ``policy.*`` defaults are the policy's own: one default for the executor, the bench and the container."""

ParamValue = bool | int | float | str

MODEL_NAMES: tuple[str, ...] = ("detector", "embedder", "classifier")
"""Models the container can run; the tracker node runs the ``embedder``."""

NODE_NAMES: tuple[str, ...] = ("detector", "tracker", "classifier")
BLOCK_MODES: tuple[str, ...] = ("parallel", "sequential")
RELIABILITIES: tuple[str, ...] = ("best_effort", "reliable")


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter.

    Attributes:
        name: full parameter name (dots for namespaces, e.g. ``policy.ema_alpha``).
        default: default value; its Python type is the parameter's type.
        description: one line for ``ros2 param describe``.
        min_value: inclusive lower bound (numbers only).
        max_value: inclusive upper bound (numbers only).
        choices: allowed values (strings only).
        read_only: set at start-up only (QoS, which models to load...).
    """

    name: str
    default: ParamValue
    description: str
    min_value: float | None = None
    max_value: float | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False


MODEL_SOURCES: tuple[str, ...] = ("default:", "torchvision:", "exported:", "module:")
"""Registry sources a node's ``model`` parameter may name (see ``multidnn_sched.models.registry``)."""

MODEL_PARAM_NAMES: tuple[str, ...] = ("model", "weights", "labels_file", "input_width", "input_height")
"""The read-only per-node parameters that choose the node's network (read once, before the runtime starts)."""

DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:[0-9]+)?)$")


def model_specs(default_model: str) -> tuple[ParamSpec, ...]:
    """The per-node model choice: registry name, weights, labels and input size (all read-only)."""
    return (
        ParamSpec(
            "model",
            default_model,
            "registry name: default:<name>, torchvision:<name>, exported:<file.pt2> or module:<pkg.mod>:<factory>",
            read_only=True,
        ),
        ParamSpec(
            "weights", "", "weights file, .safetensors or a torch state dict ('' the model's own)", read_only=True
        ),
        ParamSpec("labels_file", "", "class names, one per line ('' the model's own labels)", read_only=True),
        ParamSpec("input_width", 0, "network input width, pixels (0: the model's default)", 0, 8192, read_only=True),
        ParamSpec(
            "input_height", 0, "network input height, pixels (0: the model's default)", 0, 8192, read_only=True
        ),
    )


IMAGE_PARAM_NAMES: tuple[str, ...] = ("image_transport", "image_reliability", "image_depth")
"""The image-input parameters (read-only). In a container the one shared subscription takes the strictest
of its nodes' values (reliable if any node asks for it, the largest depth); ``image_transport`` must agree."""


def _image_input_specs() -> tuple[ParamSpec, ...]:
    return (
        ParamSpec(
            "image_transport",
            "raw",
            "raw: sensor_msgs/Image on image; compressed: sensor_msgs/CompressedImage (jpeg, png) on "
            "<image>/compressed",
            choices=("raw", "compressed"),
            read_only=True,
        ),
        ParamSpec(
            "image_reliability",
            "best_effort",
            "image QoS reliability: best_effort (REP-2003 sensor data) or reliable (evaluation: no loss)",
            choices=RELIABILITIES,
            read_only=True,
        ),
        ParamSpec("image_depth", 5, "image QoS history depth (keep last; REP-2003 sensor data: 5)", 1, 1000,
                  read_only=True),
    )


DETECTOR_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("score_threshold", 0.3, "minimum detection score kept", 0.0, 1.0),
    ParamSpec(
        "nms_iou_threshold", 0.5, "IoU above which a lower-scored same-class box is suppressed", 0.0, 1.0
    ),
    ParamSpec("max_detections", 50, "most detections published per image", 1, 1000),
    *_image_input_specs(),
    *model_specs("default:detector"),
)

TRACKER_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("max_age_frames", 30, "frames a track survives without a matching detection", 1, 1000),
    ParamSpec("min_hits", 2, "consecutive matched frames before a track is published", 1, 100),
    ParamSpec(
        "max_cosine_distance", 0.4, "appearance gate: largest embedding cosine distance matched", 0.0, 2.0
    ),
    ParamSpec("appearance_weight", 0.5, "weight of appearance vs motion cost in the association", 0.0, 1.0),
    ParamSpec("max_iou_distance", 0.7, "motion gate: largest 1 - IoU matched", 0.0, 1.0),
    *_image_input_specs(),
    *model_specs("default:embedder"),
)

CLASSIFIER_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "mode",
        "objects",
        "attribute per tracked object, or one label per image",
        choices=("objects", "full_frame"),
        read_only=True,
    ),
    ParamSpec("max_objects", 32, "most objects classified per image (highest-scored first)", 1, 1024),
    *_image_input_specs(),
    *model_specs("default:classifier"),
)


def _model_specs(model: str, deadline_ms: float, priority: int) -> tuple[ParamSpec, ...]:
    return (
        ParamSpec(
            f"models.{model}.deadline_ms",
            deadline_ms,
            f"latency target of the {model} per frame",
            1.0,
            10000.0,
        ),
        ParamSpec(
            f"models.{model}.priority", priority, f"scheduling priority of the {model} (higher first)", 0, 10
        ),
        ParamSpec(
            f"models.{model}.queue_depth",
            2,
            f"frames queued for the {model} before the oldest is dropped",
            1,
            64,
            read_only=True,
        ),
    )


CONTAINER_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "nodes", "detector,tracker,classifier", "comma-separated nodes this container runs", read_only=True
    ),
    ParamSpec(
        "baseline",
        False,
        "run each model whole in its node callback, no shared executor (comparison)",
        read_only=True,
    ),
    ParamSpec(
        "variants_manifest", "", "compression_tools manifest.json of block variants ('' none)", read_only=True
    ),
    ParamSpec("device", "cpu", "torch device of every model: cpu, cuda or cuda:N", read_only=True),
    ParamSpec(
        "workers", 0, "BlockExecutor worker threads (0: auto: CPU min(models, cores), CUDA one per model)", 0, 64,
        read_only=True,
    ),
    ParamSpec(
        "worker_threads", 0,
        "CPU: fixed intra-op threads of every block on every worker (0: auto, cores / workers; elastic if workers set)",
        0, 64,
        read_only=True,
    ),
    ParamSpec(
        "sequential_threads", 0,
        "CPU, partitioned pool: intra-op threads of a sequential block, which runs alone (0: auto, every core)",
        0, 64,
        read_only=True,
    ),
    ParamSpec(
        "frames_in_flight", 0,
        "frames of one model dispatched at once (0: the executor's default, one; more pipelines a model's frames)",
        0, 64,
        read_only=True,
    ),
    ParamSpec(
        "priority_weight_ms",
        0.0,
        "job-queue key bias per priority level (0: pure EDF, priority breaks ties; key = deadline - weight x priority)",
        0.0,
        10000.0,
        read_only=True,
    ),
    ParamSpec(
        "node_torch_threads",
        NODE_TORCH_THREADS,
        "torch intra-op threads of each ROS-side thread (pre/post-processing; baseline models); 0: torch default",
        0,
        64,
        read_only=True,
    ),
    ParamSpec(
        "spin_threads",
        0,
        "ROS executor threads (0: auto, 1 with the shared runtime, 5 in baseline mode; 1: a "
        "SingleThreadedExecutor)",
        0,
        64,
        read_only=True,
    ),
    ParamSpec("diagnostics_period_sec", 1.0, "period of /diagnostics", 0.1, 60.0, read_only=True),
    ParamSpec(
        "expected_rate_hz",
        0.0,
        "camera frame rate the policy assumes until frames arrive (0: unknown, wait for frames)",
        0.0,
        1000.0,
        read_only=True,
    ),
    ParamSpec("lag.ema_alpha", 0.2, "EMA weight of the newest latency / LAG sample", 0.01, 1.0),
    ParamSpec(
        "policy.lag_serialize_ms", _POLICY.lag_serialize_ms, "minimum predicted LAG for a block to be serialized",
        0.0, 10000.0,
    ),
    ParamSpec(
        "policy.lag_serialize_ratio", _POLICY.lag_serialize_ratio, "minimum predicted LAG / solo latency to serialize",
        0.0, 100.0,
    ),
    ParamSpec(
        "policy.hysteresis", _POLICY.hysteresis, "a model is comfortable below deadline * (1 - hysteresis)", 0.0, 0.95
    ),
    ParamSpec("policy.min_dwell_sec", _POLICY.min_dwell_sec, "least time between two changes of one block", 0.0, 600.0),
    ParamSpec(
        "policy.settle_sec", _POLICY.settle_sec, "after a change to a model, wait this long before the next", 0.0, 600.0
    ),
    ParamSpec(
        "policy.accuracy_floor",
        _POLICY.accuracy_floor,
        "lowest estimated accuracy (relative to uncompressed) swaps reach",
        0.01,
        1.0,
    ),
    ParamSpec("policy.swap_enabled", _POLICY.swap_enabled, "allow swapping blocks to lighter variants"),
    ParamSpec("policy.serialize_enabled", _POLICY.serialize_enabled, "allow serializing interfering blocks"),
    ParamSpec(
        "policy.swap_utilization",
        _POLICY.swap_utilization,
        "swap while the predicted device utilization at full frame rate exceeds this",
        0.05,
        10.0,
    ),
    ParamSpec(
        "policy.admission_enabled",
        _POLICY.admission_enabled,
        "when the admitted work exceeds the device, admit every model's proportional share (the rest dropped)",
    ),
    ParamSpec(
        "policy.admission_utilization", _POLICY.admission_utilization,
        "admission keeps the predicted device utilization below this (1.0: the device's capacity)", 0.05, 1.0,
    ),
    ParamSpec(
        "force_variant", "", "forced variants, 'model/block=variant,...' ('original' undoes a swap; '' none)"
    ),
    ParamSpec("force_mode", "", "forced modes, 'model/block=parallel|sequential,...' ('' none)"),
    *_model_specs("detector", 120.0, 5),
    *_model_specs("embedder", 60.0, 4),
    *_model_specs("classifier", 60.0, 3),
)


def validate(spec: ParamSpec, value: object) -> str | None:
    """Check ``value`` against ``spec``.

    Returns:
        ``None`` when valid, else the reason (names the parameter, what was expected and what came).
    """
    expected = type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        return f"{spec.name}: expected a {expected.__name__}, got {type(value).__name__} {value!r}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.min_value is not None and value < spec.min_value:
            return f"{spec.name}: expected a value in [{spec.min_value}, {spec.max_value}], got {value}"
        if spec.max_value is not None and value > spec.max_value:
            return f"{spec.name}: expected a value in [{spec.min_value}, {spec.max_value}], got {value}"
    if isinstance(value, str) and spec.choices is not None and value not in spec.choices:
        return f"{spec.name}: expected one of {list(spec.choices)}, got {value!r}"
    if spec.name == "nodes" and isinstance(value, str):
        unknown = [n for n in split_list(value) if n not in NODE_NAMES]
        if unknown or not split_list(value):
            return f"nodes: expected a non-empty comma-separated subset of {list(NODE_NAMES)}, got {value!r}"
    if spec.name == "device" and isinstance(value, str) and not DEVICE_PATTERN.match(value):
        return f"device: expected cpu, cuda or cuda:N, got {value!r}"
    if spec.name == "model" and isinstance(value, str) and not value.startswith(MODEL_SOURCES):
        return f"model: expected a registry name starting with one of {list(MODEL_SOURCES)}, got {value!r}"
    if spec.name in ("force_variant", "force_mode") and isinstance(value, str):
        try:
            parse_overrides(value, modes_only=spec.name == "force_mode")
        except ConfigError as error:
            return str(error)
    return None


def split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class Override:
    """One forced setting: ``model/block=value`` (a variant name, or a mode for ``force_mode``)."""

    model: str
    block: str
    value: str


def parse_overrides(text: str, modes_only: bool = False) -> list[Override]:
    """Parse ``"detector/backbone=int8, classifier/layer4=original"``.

    Raises:
        ConfigError: an entry is not ``model/block=value``, names an unknown model, or (``modes_only``) a
            value other than ``parallel`` / ``sequential``.
    """
    what = "force_mode" if modes_only else "force_variant"
    overrides: list[Override] = []
    for entry in split_list(text):
        target, sep, value = entry.partition("=")
        model, slash, block = target.strip().partition("/")
        value = value.strip()
        if not sep or not slash or not model or not block.strip() or not value:
            raise ConfigError(
                f"{what}: expected entries 'model/block=value' separated by commas, got {entry!r}"
            )
        if model not in MODEL_NAMES:
            raise ConfigError(f"{what}: expected a model in {list(MODEL_NAMES)}, got {model!r} in {entry!r}")
        if modes_only and value not in BLOCK_MODES:
            raise ConfigError(f"{what}: expected a mode in {list(BLOCK_MODES)}, got {value!r} in {entry!r}")
        overrides.append(Override(model, block.strip(), value))
    return overrides


def make_descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ``ParameterDescriptor`` of ``spec`` (ranges for numbers, choices in the description)."""
    description = spec.description
    if spec.choices is not None:
        description += f" (one of {', '.join(spec.choices)})"
    descriptor = ParameterDescriptor(description=description, read_only=spec.read_only)
    if isinstance(spec.default, float) and spec.min_value is not None and spec.max_value is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(spec.min_value), to_value=float(spec.max_value), step=0.0)
        ]
    elif (
        isinstance(spec.default, int)
        and not isinstance(spec.default, bool)
        and spec.min_value is not None
        and spec.max_value is not None
    ):
        descriptor.integer_range = [
            IntegerRange(from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)
        ]
    return descriptor


def declare_parameters(node: Node, specs: Sequence[ParamSpec]) -> dict[str, ParamValue]:
    """Declare every spec on ``node`` and return the start-up values (defaults overridden by the params file).

    Raises:
        ConfigError: a start-up value (params file, ``--ros-args -p``) fails :func:`validate`.
    """
    values: dict[str, ParamValue] = {}
    for spec in specs:
        parameter = node.declare_parameter(spec.name, spec.default, make_descriptor(spec))
        reason = validate(spec, parameter.value)
        if reason is not None:
            raise ConfigError(f"node {node.get_name()!r}: {reason}")
        values[spec.name] = parameter.value
    return values


def check_parameters(specs: Iterable[ParamSpec], params: Sequence[Parameter]) -> SetParametersResult:
    """The on-set check: every parameter in ``params`` that has a spec must pass :func:`validate`."""
    by_name = {spec.name: spec for spec in specs}
    for param in params:
        spec = by_name.get(param.name)
        if spec is None:
            continue
        reason = validate(spec, param.value)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
    return SetParametersResult(successful=True)


def specs_by_name(specs: Iterable[ParamSpec]) -> dict[str, ParamSpec]:
    return {spec.name: spec for spec in specs}
