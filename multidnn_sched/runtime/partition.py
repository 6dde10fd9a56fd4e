"""Cut a model into functional blocks (stem, stages, neck, head) the executor can schedule one by one.

``partition_model(model)`` recognises torchvision classification families (ResNet / ResNeXt / Wide-ResNet,
VGG, MobileNetV2 / V3, RegNet, EfficientNet v1 / v2, Inception v3), torchvision detection tensor cores
(RetinaNet, FCOS, SSD, SSDlite, Faster R-CNN), models composed of a chain of children (``backbone -> neck ->
head``, e.g. the project's detector) and falls back to a torch.fx cut for anything else. Running the blocks in order
equals running the model (for torchvision detectors: its tensor core, see :func:`reference_module`);
:func:`check_equivalence` measures it.

Blocks share their modules and parameters with the source model (nothing is copied): ``copy.deepcopy`` the
model first for an independent copy. Block boundaries and the carry convention: docs/partitioning.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.models import (
    VGG,
    EfficientNet,
    Inception3,
    MobileNetV2,
    MobileNetV3,
    RegNet,
    ResNet,
)

from multidnn_sched.exceptions import PartitionError
from multidnn_sched.runtime.block import Block, Carry, PartitionedModel
from multidnn_sched.runtime.partition_blocks import InceptionInputTransform, group_by_stride
from multidnn_sched.runtime.partition_composed import partition_composed
from multidnn_sched.runtime.partition_detection import (
    DETECTION_FAMILIES,
    detection_core,
    is_torchvision_detector,
    partition_torchvision_detector,
    torchvision_detector_family,
)
from multidnn_sched.runtime.partition_fx import DEFAULT_FX_NUM_BLOCKS, partition_fx

__all__ = [
    "FAMILIES",
    "check_equivalence",
    "known_family",
    "partition_model",
    "reference_module",
]


def _classifier_head(*modules: nn.Module) -> nn.Sequential:
    return nn.Sequential(*modules)


def _resnet(model: nn.Module) -> list[Block]:
    blocks = [Block("stem", nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool))]
    blocks += [Block(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
    blocks.append(Block("head", _classifier_head(model.avgpool, nn.Flatten(1), model.fc)))
    return blocks


def _vgg(model: nn.Module) -> list[Block]:
    stages: list[list[nn.Module]] = [[]]
    for layer in model.features:
        stages[-1].append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append([])
    blocks = [Block(f"stage{i + 1}", nn.Sequential(*s)) for i, s in enumerate(stages) if s]
    blocks.append(Block("head", _classifier_head(model.avgpool, nn.Flatten(1), model.classifier)))
    return blocks


def _stride_blocks(features: list[nn.Module]) -> list[Block]:
    groups = group_by_stride(features)
    return [Block("stem" if i == 0 else f"stage{i}", nn.Sequential(*g)) for i, g in enumerate(groups)]


def _mobilenet_v2(model: nn.Module) -> list[Block]:
    features = list(model.features)
    head = _classifier_head(features[-1], nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1), model.classifier)
    return [*_stride_blocks(features[:-1]), Block("head", head)]


def _mobilenet_v3(model: nn.Module) -> list[Block]:
    features = list(model.features)
    head = _classifier_head(features[-1], model.avgpool, nn.Flatten(1), model.classifier)
    return [*_stride_blocks(features[:-1]), Block("head", head)]


def _regnet(model: nn.Module) -> list[Block]:
    blocks = [Block("stem", model.stem)]
    blocks += [Block(stage_name, stage) for stage_name, stage in model.trunk_output.named_children()]
    blocks.append(Block("head", _classifier_head(model.avgpool, nn.Flatten(1), model.fc)))
    return blocks


def _efficientnet(model: nn.Module) -> list[Block]:
    features = list(model.features)
    blocks = [Block("stem", features[0])]
    blocks += [Block(f"stage{i}", stage) for i, stage in enumerate(features[1:-1], start=1)]
    blocks.append(Block("head", _classifier_head(features[-1], model.avgpool, nn.Flatten(1), model.classifier)))
    return blocks


def _inception_v3(model: nn.Module) -> list[Block]:
    stem: list[nn.Module] = [InceptionInputTransform()] if model.transform_input else []
    stem += [
        model.Conv2d_1a_3x3,
        model.Conv2d_2a_3x3,
        model.Conv2d_2b_3x3,
        model.maxpool1,
        model.Conv2d_3b_1x1,
        model.Conv2d_4a_3x3,
        model.maxpool2,
    ]
    return [
        Block("stem", nn.Sequential(*stem)),
        Block("mixed5", nn.Sequential(model.Mixed_5b, model.Mixed_5c, model.Mixed_5d)),
        Block("mixed6", nn.Sequential(model.Mixed_6a, model.Mixed_6b, model.Mixed_6c, model.Mixed_6d, model.Mixed_6e)),
        Block("mixed7", nn.Sequential(model.Mixed_7a, model.Mixed_7b, model.Mixed_7c)),
        Block("head", _classifier_head(model.avgpool, model.dropout, nn.Flatten(1), model.fc)),
    ]


FAMILIES: dict[str, Callable[[nn.Module], list[Block]]] = {
    "resnet": _resnet,
    "vgg": _vgg,
    "mobilenet_v2": _mobilenet_v2,
    "mobilenet_v3": _mobilenet_v3,
    "regnet": _regnet,
    "efficientnet": _efficientnet,
    "inception_v3": _inception_v3,
}
"""Hand-written classification families: name -> function(model) -> blocks."""

_CLASSES: tuple[tuple[type[nn.Module], str], ...] = (
    (ResNet, "resnet"),
    (VGG, "vgg"),
    (MobileNetV2, "mobilenet_v2"),
    (MobileNetV3, "mobilenet_v3"),
    (RegNet, "regnet"),
    (EfficientNet, "efficientnet"),
    (Inception3, "inception_v3"),
)

MIN_COMPOSED_BLOCKS: int = 3
"""An unrecognised model is cut as "composed" (between its children) when that gives at least this many blocks;
otherwise the FX fallback cuts it by cost."""

_OTHER_FAMILIES: tuple[str, ...] = (*DETECTION_FAMILIES, "composed", "fx")


def known_family(model: nn.Module) -> str | None:
    """The hand-written or torchvision-detection family of ``model`` (by class), or ``None``."""
    if is_torchvision_detector(model):
        return torchvision_detector_family(model)
    for cls, family in _CLASSES:
        if isinstance(model, cls):
            return family
    return None


def partition_known(model: nn.Module, name: str, family: str) -> list[Block]:
    """Blocks of ``model`` for a family named by :func:`known_family`."""
    if family in DETECTION_FAMILIES:
        return partition_torchvision_detector(model, name)
    try:
        return FAMILIES[family](model)
    except AttributeError as exc:
        raise PartitionError(
            f"cannot partition model {name!r} ({type(model).__name__}) as family {family!r}: it lacks the "
            f"expected attribute ({exc})"
        ) from exc


def partition_model(
    model: nn.Module,
    name: str | None = None,
    *,
    family: str | None = None,
    num_blocks: int | None = None,
) -> PartitionedModel:
    """Cut ``model`` into functional blocks.

    Args:
        model: the model (eval mode is what the blocks reproduce: Inception v3 without aux logits).
        name: model name for the record and error messages; default: the class name in lower case.
        family: force a family: one of :data:`FAMILIES`, ``"retinanet"``, ``"fcos"``, ``"ssd"``,
            ``"ssdlite"``, ``"composed"``, ``"fx"``. Default: recognised by class, then "composed" (forward is
            a chain of children), then the torch.fx fallback.
        num_blocks: segments for the FX fallback (default :data:`DEFAULT_FX_NUM_BLOCKS`); ignored otherwise.

    Returns:
        The ``PartitionedModel``; ``family`` records which rule cut it.

    Raises:
        PartitionError: unknown ``family``, a model lacking what its family needs, or a model FX cannot
            trace (the message names the model and the construct FX rejected).
    """
    model_name = name if name is not None else type(model).__name__.lower()
    known = [*FAMILIES, *_OTHER_FAMILIES]
    if family is not None and family not in known:
        raise PartitionError(f"cannot partition model {model_name!r}: unknown family {family!r}; known: {known}")
    chosen = family if family is not None else known_family(model)
    if chosen is None:
        try:
            blocks = partition_composed(model, model_name)
            chosen = "composed" if len(blocks) >= MIN_COMPOSED_BLOCKS else "fx"
        except PartitionError:
            chosen = "fx"
    if chosen == "fx":
        blocks = partition_fx(model, model_name, num_blocks or DEFAULT_FX_NUM_BLOCKS)
    elif family == "composed":
        blocks = partition_composed(model, model_name)
    elif chosen != "composed":
        blocks = partition_known(model, model_name, chosen)
    own = {id(m) for m in model.modules()}
    for block in blocks:  # wrappers made here (Sequential, FeatureStage...) follow the model's mode
        for m in block.module.modules():
            if id(m) not in own:
                m.training = model.training
    return PartitionedModel(name=model_name, blocks=blocks, family=chosen)


def reference_module(model: nn.Module) -> nn.Module:
    """The module whose forward the blocks reproduce: the model itself, or for torchvision detectors their
    tensor core (``TorchvisionDetectionCore``: batch tensor -> head outputs)."""
    if is_torchvision_detector(model):
        return detection_core(model)
    return model


def _tensors(value: Carry, where: str) -> list[tuple[str, Tensor]]:
    """Flatten a nested output into ``(path, tensor)`` pairs (dict keys in insertion order)."""
    if isinstance(value, Tensor):
        return [(where, value)]
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in _tensors(v, f"{where}[{k!r}]")]
    if isinstance(value, (tuple, list)):
        return [pair for i, v in enumerate(value) for pair in _tensors(v, f"{where}[{i}]")]
    raise TypeError(f"expected tensors, tuples, lists or dicts in the output at {where}, got {type(value).__name__}")


def check_equivalence(
    model: nn.Module,
    partitioned: PartitionedModel,
    example_input: Carry,
    atol: float | None = 1e-5,
) -> float:
    """Run the model (see :func:`reference_module`) and its blocks on ``example_input`` and compare outputs.

    Both run in eval mode under ``torch.inference_mode``; the training flags are restored afterwards.

    Args:
        model: the source model.
        partitioned: its blocks from :func:`partition_model`.
        example_input: the model input (for torchvision detectors: the transformed batch tensor).
        atol: raise when the max abs difference exceeds it; ``None``: only measure.

    Returns:
        The maximum absolute difference over all output tensors.

    Raises:
        PartitionError: the outputs differ in structure or shape, or by more than ``atol``.
    """
    reference = reference_module(model)
    modules = [*reference.modules(), *(m for b in partitioned.blocks for m in b.module.modules())]
    training = {id(m): (m, m.training) for m in modules}
    try:
        for m, _ in training.values():
            m.training = False  # per module, not recursive: restoring must not clobber children's flags
        with torch.inference_mode():
            expected = _tensors(reference(example_input), "output")
            got = _tensors(partitioned(example_input), "output")
    finally:
        for m, flag in training.values():
            m.training = flag
    if [p for p, _ in expected] != [p for p, _ in got]:
        raise PartitionError(
            f"blocks of {partitioned.name!r} return {[p for p, _ in got]}, expected {[p for p, _ in expected]}"
        )
    max_diff = 0.0
    for (path, e), (_, g) in zip(expected, got, strict=True):
        if e.shape != g.shape:
            raise PartitionError(
                f"blocks of {partitioned.name!r}: {path} has shape {list(g.shape)}, expected {list(e.shape)}"
            )
        if e.numel():
            max_diff = max(max_diff, float((e.double() - g.double()).abs().max()))
    if atol is not None and not max_diff <= atol:
        raise PartitionError(
            f"blocks of {partitioned.name!r} differ from the whole model by {max_diff:.3g} (max abs), "
            f"expected <= {atol:g}"
        )
    return max_diff
