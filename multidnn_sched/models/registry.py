"""One registry of models, looked up by name (in the spirit of torchvision's ``get_model`` / ``register_model``).

Names and their sources::

    default:detector | default:embedder | default:classifier   the shipped models (sha256-checked weights)
    torchvision:<name>        every torchvision classification model, and the detectors in TORCHVISION_DETECTORS
                              (random weights unless ``weights`` names a local file; nothing is downloaded)
    exported:<file.pt2>       a torch.export ExportedProgram (partitioned through the FX path)
    module:<pkg.mod:factory>  a user's nn.Module: ``factory()`` builds it, ``weights`` fills it

:func:`get_model_spec` returns a :class:`ModelSpec` (task, builder, weights, input size, labels, metric);
``spec.load(device)`` returns a :class:`LoadedModel`: the whole model, the *core* the runtime runs and the
blocks reproduce, the pre / post-processing bound to that instance, the labels and an example input.
Every consumer (ROS nodes, bench, compression) asks here instead of knowing model names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from multidnn_sched.exceptions import CheckpointError, ConfigError
from multidnn_sched.models.detector import Detections, detector_postprocess, detector_preprocess
from multidnn_sched.models.weights_io import load_weights, read_labels_file

TASKS: tuple[str, ...] = ("detection", "classification", "embedding")
SOURCES: tuple[str, ...] = ("default:", "torchvision:", "exported:", "module:")

TORCHVISION_DETECTORS: dict[str, tuple[int, int]] = {
    "ssdlite320_mobilenet_v3_large": (320, 320),
    "ssd300_vgg16": (320, 320),
    "fasterrcnn_mobilenet_v3_large_320_fpn": (320, 320),
    "fasterrcnn_mobilenet_v3_large_fpn": (480, 640),
    "fasterrcnn_resnet50_fpn": (480, 640),
    "fasterrcnn_resnet50_fpn_v2": (480, 640),
    "retinanet_resnet50_fpn": (480, 640),
    "retinanet_resnet50_fpn_v2": (480, 640),
    "fcos_resnet50_fpn": (480, 640),
}
"""torchvision detectors the registry serves -> default network input (height, width), multiples of 32."""

CLASSIFICATION_INPUT_HW: tuple[int, int] = (224, 224)
"""Default input of torchvision / user classifiers (ImageNet convention)."""

INPUT_MULTIPLE: int = 32
"""Detector inputs must be a multiple of this (torchvision pads to it; a padded input would break block cuts)."""

DetectionPostprocess = Callable[[object, float, float, tuple[int, int], int], Detections]
"""``(output, score_threshold, nms_iou_threshold, (width, height), max_detections) -> Detections``."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything the package knows about one model before building it.

    Attributes:
        name: registry name, e.g. ``"torchvision:efficientnet_b0"``.
        task: ``"detection"``, ``"classification"`` or ``"embedding"``.
        builder: ``() -> nn.Module`` with random (or the shipped) weights.
        input_hw: network input (height, width), pixels (crop size for crop models).
        weights: local weights file loaded after building (``None``: builder's weights).
        labels: class names by output index (``()``: none known, ids are published as numbers).
        metric: task metric on the synthetic scene's ground truth (``"map50"``, ``"attribute_top1"``,
            ``"reid_top1"``), ``None`` when the model's labels are not the scene's (reported ``n/a``).
        source: ``"default"``, ``"torchvision"``, ``"exported"`` or ``"module"``.
    """

    name: str
    task: str
    builder: Callable[[], nn.Module]
    input_hw: tuple[int, int]
    weights: Path | None = None
    labels: tuple[str, ...] = ()
    metric: str | None = None
    source: str = "torchvision"

    def load(self, device: str | torch.device = "cpu") -> LoadedModel:
        """Build the model, load ``weights``, move it to ``device`` in eval mode and bind its processing.

        Raises:
            CheckpointError: the weights file is missing, unreadable or does not fit (tensor and shapes named).
        """
        model = self.builder()
        if self.weights is not None:
            load_weights(model, self.weights, self.name)
        model = model.to(device)
        if self.source != "exported":  # an ExportedProgram's module is traced in eval mode and refuses .eval()
            model = model.eval()
        return _bind(self, model)


@dataclass
class LoadedModel:
    """A built model with its processing.

    Attributes:
        spec: its registry record.
        model: the whole model (eval mode).
        core: what the runtime runs and the blocks reproduce (the model itself, or a torchvision detector's
            tensor core ``images[1, 3, h, w] -> raw head outputs``).
        preprocess: RGB ``uint8[H, W, 3]`` -> ``float32[1, 3, h, w]`` (detectors; full-frame classification).
        crops: ``(RGB frame, boxes_xyxy float[N, 4]) -> float32[N, 3, h, w]`` (crop models).
        postprocess: detectors' decoder (:data:`DetectionPostprocess`), ``None`` for other tasks.
    """

    spec: ModelSpec
    model: nn.Module
    core: nn.Module
    preprocess: Callable[[np.ndarray], Tensor]
    crops: Callable[[np.ndarray, np.ndarray], Tensor]
    postprocess: DetectionPostprocess | None = None
    example_batch: int = 1
    _example_shape: tuple[int, ...] | None = field(default=None, repr=False)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def example_input(self) -> Tensor:
        """A zero input at the runtime shape (solo profiling), on the model's device."""
        shape = self._example_shape or (self.example_batch, 3, *self.spec.input_hw)
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        return torch.zeros(shape, device=device)

    def partition(self, name: str | None = None) -> object:
        """The core cut into blocks (``PartitionedModel``) named ``name`` (default: the registry name)."""
        from multidnn_sched.runtime.partition import partition_model

        return partition_model(self.model, name or self.spec.name)


def _generic_detection_postprocess(
    output: object, score: float, nms: float, size: tuple[int, int], top_k: int, input_hw: tuple[int, int]
) -> Detections:
    """Decode a non-torchvision detector: the project's ``(heatmap_logits, box_ltrb)`` convention, or a dict /
    tuple of ``boxes`` (network-input pixels) / ``scores`` / ``labels``."""
    if isinstance(output, dict) and {"boxes", "scores", "labels"} <= set(output):
        from multidnn_sched.models.tv_detection import scale_and_filter

        return scale_and_filter(output["boxes"], output["scores"], output["labels"], score, nms, size, top_k, input_hw)
    if isinstance(output, (tuple, list)) and len(output) == 2 and all(isinstance(t, Tensor) for t in output):
        return detector_postprocess(output, score, nms, size, top_k)  # type: ignore[arg-type]
    raise ValueError(
        "expected detector outputs (heatmap_logits[1, C, h, w], box_ltrb[1, 4, h, w]) or a dict with boxes / "
        f"scores / labels, got {type(output).__name__}"
    )


def _bind(spec: ModelSpec, model: nn.Module) -> LoadedModel:
    from multidnn_sched.models.crops import crop_batch
    from multidnn_sched.runtime.partition_detection import detection_core, is_torchvision_detector

    hw = spec.input_hw
    batch = 1 if spec.task == "detection" else 4

    def crops(frame: np.ndarray, boxes: np.ndarray) -> Tensor:
        return crop_batch(frame, boxes, hw)

    example_shape = None
    if spec.source == "exported":
        example_shape = getattr(model, "_multidnn_input_shape", None)
        if example_shape is not None:
            batch = int(example_shape[0])
    if spec.task == "detection" and is_torchvision_detector(model):
        from multidnn_sched.models.tv_detection import TvDetectionPostprocess, tv_detection_preprocess

        mean = tuple(float(v) for v in model.transform.image_mean)
        std = tuple(float(v) for v in model.transform.image_std)
        return LoadedModel(
            spec,
            model,
            detection_core(model),
            lambda frame: tv_detection_preprocess(frame, hw, mean, std),
            crops,
            TvDetectionPostprocess(model, hw),
            batch,
            example_shape,
        )
    postprocess: DetectionPostprocess | None = None
    if spec.task == "detection":

        def postprocess(out: object, score: float, nms: float, size: tuple[int, int], top_k: int) -> Detections:
            return _generic_detection_postprocess(out, score, nms, size, top_k, hw)

    return LoadedModel(
        spec, model, model, lambda frame: detector_preprocess(frame, hw), crops, postprocess, batch, example_shape
    )


# ----------------------------------------------------------------------------------------------- sources


def _default_spec(key: str) -> ModelSpec:
    from multidnn_sched.models import zoo
    from multidnn_sched.models.checkpoints import load_checkpoint
    from multidnn_sched.models.classifier import CLASSIFIER_INPUT_HW
    from multidnn_sched.models.detector import DETECTOR_INPUT_HW
    from multidnn_sched.models.embedding import EMBEDDER_INPUT_HW
    from multidnn_sched.scenes.generator import ATTRIBUTES, CLASSES

    table: dict[str, tuple[str, Callable[[], nn.Module], tuple[int, int], tuple[str, ...], str]] = {
        "detector": ("detection", zoo.build_detector, DETECTOR_INPUT_HW, tuple(CLASSES), "map50"),
        "embedder": ("embedding", zoo.build_embedder, EMBEDDER_INPUT_HW, (), "reid_top1"),
        "classifier": (
            "classification",
            zoo.build_classifier,
            CLASSIFIER_INPUT_HW,
            tuple(ATTRIBUTES),
            "attribute_top1",
        ),
    }
    if key not in table:
        raise ConfigError(f"default:{key}: expected one of {[f'default:{k}' for k in table]}, got {key!r}")
    task, build, hw, labels, metric = table[key]

    def builder() -> nn.Module:
        model = build()
        load_checkpoint(model, key)
        return model

    return ModelSpec(f"default:{key}", task, builder, hw, None, labels, metric, "default")


def torchvision_classifiers() -> list[str]:
    """Names of the torchvision classification models (``torchvision:<name>``)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _torchvision_spec(key: str) -> ModelSpec:
    from torchvision.models import get_model, get_model_builder, get_model_weights

    if key in TORCHVISION_DETECTORS:

        def builder() -> nn.Module:
            return get_model_builder(key)(weights=None, weights_backbone=None)

        labels = tuple(get_model_weights(key).DEFAULT.meta["categories"])
        return ModelSpec(f"torchvision:{key}", "detection", builder, TORCHVISION_DETECTORS[key], None, labels, None)
    classifiers = torchvision_classifiers()
    if key not in classifiers:
        raise ConfigError(
            f"torchvision:{key}: expected a torchvision classification model ({len(classifiers)} names, e.g. "
            f"resnet50, efficientnet_b0, mobilenet_v3_large, vgg16) or a detector in "
            f"{sorted(TORCHVISION_DETECTORS)}, got {key!r}"
        )

    def build_classifier() -> nn.Module:
        kwargs = {"aux_logits": False, "init_weights": True} if key in ("inception_v3", "googlenet") else {}
        return get_model(key, weights=None, **kwargs)

    try:
        labels = tuple(get_model_weights(key).DEFAULT.meta["categories"])
    except (ValueError, KeyError, AttributeError):
        labels = ()
    hw = (299, 299) if key == "inception_v3" else CLASSIFICATION_INPUT_HW
    return ModelSpec(f"torchvision:{key}", "classification", build_classifier, hw, None, labels, None)


def _exported_spec(key: str, task: str) -> ModelSpec:
    path = Path(key)
    if path.suffix != ".pt2":
        raise ConfigError(f"exported:{key}: expected a torch.export file ending in .pt2, got {path.name!r}")
    if not path.is_file():
        raise CheckpointError(f"{path}: exported model file not found")
    shape = _exported_input_shape(path)

    def builder() -> nn.Module:
        try:
            program = torch.export.load(str(path))
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise CheckpointError(
                f"{path}: expected a torch.export ExportedProgram (.pt2), could not load it: {exc}"
            ) from exc
        module = program.module()
        module._multidnn_input_shape = shape  # type: ignore[attr-defined]
        return module

    hw = (int(shape[-2]), int(shape[-1])) if shape is not None and len(shape) == 4 else CLASSIFICATION_INPUT_HW
    return ModelSpec(f"exported:{key}", task, builder, hw, None, (), None, "exported")


def _exported_input_shape(path: Path) -> tuple[int, ...] | None:
    try:
        program = torch.export.load(str(path))
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise CheckpointError(
            f"{path}: expected a torch.export ExportedProgram (.pt2), could not load it: {exc}"
        ) from exc
    user = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            value = node.meta.get("val")
            if value is not None and hasattr(value, "shape"):
                try:
                    return tuple(int(d) for d in value.shape)
                except TypeError:  # a symbolic (dynamic) dimension
                    return None
    return None


def _module_spec(key: str, task: str) -> ModelSpec:
    module_name, sep, factory_name = key.partition(":")
    if not sep or not module_name or not factory_name:
        raise ConfigError(f"module:{key}: expected module:<package.module>:<factory>, got {key!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"module:{key}: expected an importable module, cannot import {module_name!r}: {exc}"
        ) from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ConfigError(f"module:{key}: expected a callable {factory_name!r} in {module_name!r}, got {factory!r}")

    def builder() -> nn.Module:
        built = factory()
        if not isinstance(built, nn.Module):
            raise ConfigError(
                f"module:{key}: expected {factory_name}() to return an nn.Module, got {type(built).__name__}"
            )
        return built

    hw = CLASSIFICATION_INPUT_HW
    return ModelSpec(f"module:{key}", task, builder, hw, None, (), None, "module")


def get_model_spec(
    name: str,
    *,
    weights: str | Path | None = None,
    labels_file: str | Path | None = None,
    input_hw: tuple[int, int] | None = None,
    task: str | None = None,
) -> ModelSpec:
    """Look a model up by registry name.

    Args:
        name: ``default:<model>``, ``torchvision:<name>``, ``exported:<file.pt2>`` or
            ``module:<package.module>:<factory>``; a bare ``detector`` / ``embedder`` / ``classifier`` means the
            default model.
        weights: local weights file (``.safetensors`` or a ``weights_only`` state dict); ``""`` / ``None``:
            the source's own (shipped for ``default:``, random for ``torchvision:`` / ``module:``).
        labels_file: class names, one per line; overrides the source's labels.
        input_hw: network input (height, width); detectors need multiples of 32.
        task: ``detection`` / ``classification`` / ``embedding``; required meaning for ``exported:`` and
            ``module:`` (default ``classification``), must match the source otherwise.

    Raises:
        ConfigError: unknown source or name (the message lists the sources), bad input size or task.
        CheckpointError: a named file (model, weights, labels) is missing or unreadable.
    """
    if task is not None and task not in TASKS:
        raise ConfigError(f"model {name!r}: expected a task in {list(TASKS)}, got {task!r}")
    if name in ("detector", "embedder", "classifier"):
        name = f"default:{name}"
    source, sep, key = name.partition(":")
    if not sep or f"{source}:" not in SOURCES or not key:
        raise ConfigError(
            f"expected a model name <source>:<name> with a source in {list(SOURCES)} (e.g. "
            f"torchvision:resnet50, default:detector, exported:model.pt2, module:my_pkg.nets:build), got {name!r}"
        )
    if source == "default":
        spec = _default_spec(key)
    elif source == "torchvision":
        spec = _torchvision_spec(key)
    elif source == "exported":
        spec = _exported_spec(key, task or "classification")
    else:
        spec = _module_spec(key, task or "classification")
    if task is not None and task != spec.task:
        raise ConfigError(f"model {name!r}: is a {spec.task} model, expected task {task!r}")
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise CheckpointError(f"{path}: weights file for {name!r} not found")
        spec = replace(spec, weights=path)
    if labels_file:
        spec = replace(spec, labels=read_labels_file(labels_file))
    if input_hw is not None:
        h, w = int(input_hw[0]), int(input_hw[1])
        if h <= 0 or w <= 0:
            raise ConfigError(f"model {name!r}: expected a positive input size, got {h}x{w}")
        if spec.task == "detection" and (h % INPUT_MULTIPLE or w % INPUT_MULTIPLE) and spec.source != "default":
            raise ConfigError(
                f"model {name!r}: expected a detector input (height, width) in multiples of {INPUT_MULTIPLE}, "
                f"got {h}x{w}"
            )
        spec = replace(spec, input_hw=(h, w))
    return spec


def load_model(name: str, device: str | torch.device = "cpu", **options: object) -> LoadedModel:
    """``get_model_spec(name, **options).load(device)``."""
    return get_model_spec(name, **options).load(device)  # type: ignore[arg-type]
