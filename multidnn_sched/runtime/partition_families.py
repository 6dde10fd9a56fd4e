"""The one table of partition families: hand-written classification families (by class) and the torchvision
detection tensor cores, with :func:`known_family` / :func:`partition_known` (used by the partitioner and by the
"composed" rule for children it recognises)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
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
from multidnn_sched.runtime.block import Block
from multidnn_sched.runtime.partition_blocks import InceptionInputTransform, group_by_stride
from multidnn_sched.runtime.partition_detection import (
    DETECTION_FAMILIES,
    is_torchvision_detector,
    partition_torchvision_detector,
    torchvision_detector_family,
)


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
