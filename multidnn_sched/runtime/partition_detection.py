"""Detection families: torchvision RetinaNet / FCOS / SSD / SSDlite / Faster R-CNN tensor cores.

torchvision detectors take a list of images and return boxes; only their *tensor core* is cut into blocks:
``images.tensors [B, 3, H, W]`` (already resized, normalised and batched by the model's
``GeneralizedRCNNTransform``) -> backbone body -> FPN / extra layers -> head -> ``dict[str, Tensor]`` of raw
head outputs. The transform, anchor generation, ``postprocess_detections`` and ``transform.postprocess`` stay
outside the blocks (see :class:`TorchvisionDetectionCore` and docs/partitioning.md).

Faster R-CNN's region proposal network and RoI heads are data-dependent (top-k, NMS, RoI pooling of a variable
number of proposals) and cannot be traced: its backbone stages and FPN are blocks, and RPN + RoI heads form
ONE ``head`` block (:class:`TwoStageHead`) that returns the per-image ``boxes`` / ``scores`` / ``labels`` in
network-input pixels (before ``transform.postprocess``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD, SSDFeatureExtractorVGG
from torchvision.models.detection.ssdlite import SSDLiteFeatureExtractorMobileNet

from multidnn_sched.exceptions import PartitionError
from multidnn_sched.runtime.block import Block
from multidnn_sched.runtime.partition_blocks import (
    FeatureStage,
    FpnBlock,
    L2NormFeature,
    ListHead,
    as_tuple,
    group_by_stride,
)


class TwoStageHead(nn.Module):
    """Faster R-CNN's RPN + RoI heads as one block.

    Carry in: the FPN levels (tuple or list, in the FPN's output order); carry out: ``{"boxes": Tensor[N, 4]
    (x1, y1, x2, y2) in network-input pixels, "scores": Tensor[N], "labels": Tensor[N]}`` for batch size 1,
    else a list of such dicts, one per image.

    Args:
        rpn: the model's ``RegionProposalNetwork`` (shared, not copied).
        roi_heads: the model's ``RoIHeads`` (shared).
        level_names: the FPN output keys the RoI pooler expects (``"0"``, ``"1"``, ``"pool"``...).
        level0_stride: network-input pixels per cell of the first level (input size = level-0 size x this;
            inputs are padded to a multiple of 32, so it is exact).
    """

    def __init__(self, rpn: nn.Module, roi_heads: nn.Module, level_names: list[str], level0_stride: int) -> None:
        super().__init__()
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.level_names = list(level_names)
        self.level0_stride = int(level0_stride)

    def forward(self, carry: object) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        levels = as_tuple(carry)
        if len(levels) != len(self.level_names):
            raise ValueError(
                f"TwoStageHead expected {len(self.level_names)} levels {self.level_names}, got {len(levels)}"
            )
        features = OrderedDict(zip(self.level_names, levels, strict=True))
        batch = levels[0].shape[0]
        h, w = (int(v) * self.level0_stride for v in levels[0].shape[-2:])
        # Anchors only read the image batch's shape, dtype and device: an expanded scalar allocates nothing.
        images = ImageList(levels[0].new_zeros(()).expand(batch, 3, h, w), [(h, w)] * batch)
        proposals, _ = self.rpn(images, features)
        detections, _ = self.roi_heads(features, proposals, images.image_sizes)
        return detections[0] if batch == 1 else detections


def two_stage_head(model: nn.Module, probe_hw: tuple[int, int] = (224, 224)) -> TwoStageHead:
    """The :class:`TwoStageHead` of a torchvision Faster R-CNN (level names and stride probed on zeros)."""
    backbone = model.backbone
    param = next(backbone.parameters())
    training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            features = backbone(torch.zeros(1, 3, *probe_hw, dtype=param.dtype, device=param.device))
    finally:
        backbone.train(training)
    names = list(features)
    first = features[names[0]]
    return TwoStageHead(model.rpn, model.roi_heads, names, probe_hw[0] // int(first.shape[-2]))


class TorchvisionDetectionCore(nn.Module):
    """The tensor core of a torchvision one-stage detector: ``backbone`` then ``head`` on a batch tensor.

    ``forward(images [B, 3, H, W]) -> dict[str, Tensor]``: the same head outputs the detector computes from
    ``images.tensors`` inside its own ``forward``; the blocks of :func:`partition_torchvision_detector`
    reproduce exactly this.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.backbone(images)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        return self.head(list(features.values()))


def detection_core(model: nn.Module) -> TorchvisionDetectionCore:
    """The tensor core (batch tensor -> head outputs) the blocks of a torchvision detector reproduce."""
    head = two_stage_head(model) if isinstance(model, FasterRCNN) else model.head
    return TorchvisionDetectionCore(model.backbone, head)


DETECTION_FAMILIES: tuple[str, ...] = ("retinanet", "fcos", "ssd", "ssdlite", "fasterrcnn")
"""Family names of the torchvision detectors whose tensor core is cut."""


def is_torchvision_detector(model: nn.Module) -> bool:
    """True for torchvision RetinaNet, FCOS, SSD / SSDlite and Faster R-CNN models."""
    return isinstance(model, (RetinaNet, FCOS, SSD, FasterRCNN))


def torchvision_detector_family(model: nn.Module) -> str:
    """``"retinanet"``, ``"fcos"``, ``"ssd"`` (VGG), ``"ssdlite"`` (MobileNet) or ``"fasterrcnn"``; raises
    ``ValueError`` else."""
    if isinstance(model, FasterRCNN):
        return "fasterrcnn"
    if isinstance(model, RetinaNet):
        return "retinanet"
    if isinstance(model, FCOS):
        return "fcos"
    if isinstance(model, SSD):
        return "ssdlite" if isinstance(model.backbone, SSDLiteFeatureExtractorMobileNet) else "ssd"
    raise ValueError(f"expected a torchvision RetinaNet, FCOS, SSD or Faster R-CNN model, got {type(model).__name__}")


def detection_head(model: nn.Module) -> nn.Module:
    """The head block module of a torchvision detector: :class:`ListHead` or, for Faster R-CNN,
    :class:`TwoStageHead`."""
    if isinstance(model, FasterRCNN):
        return two_stage_head(model)
    return ListHead(model.head)


def _body_blocks(body: IntermediateLayerGetter) -> tuple[list[Block], list[str]]:
    """Cut an ``IntermediateLayerGetter`` after each returned layer (and before each ResNet ``layerN``).

    Returns:
        The blocks and the output names of the returned features, in order.
    """
    return_layers: dict[str, str] = dict(body.return_layers)
    groups: list[list[tuple[str, nn.Module]]] = []
    current: list[tuple[str, nn.Module]] = []
    for child_name, child in body.named_children():
        if child_name.startswith("layer") and current:
            groups.append(current)
            current = []
        current.append((child_name, child))
        if child_name in return_layers:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    blocks: list[Block] = []
    previous_returned = False
    for i, group in enumerate(groups):
        child_names = [c for c, _ in group]
        if len(group) == 1 and not child_names[0].isdigit():
            block_name = child_names[0]
        else:
            block_name = "stem" if i == 0 else f"body{i}"
        blocks.append(Block(block_name, FeatureStage([m for _, m in group], keep_input=previous_returned)))
        previous_returned = child_names[-1] in return_layers
    names = [return_layers[c] for c, _ in body.named_children() if c in return_layers]
    return blocks, names


def _vgg_stages(features: nn.Sequential) -> list[list[nn.Module]]:
    """Split VGG ``features`` after each max-pool."""
    stages: list[list[nn.Module]] = [[]]
    for layer in features:
        stages[-1].append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append([])
    return [s for s in stages if s]


def _ssd_vgg_blocks(backbone: SSDFeatureExtractorVGG) -> list[Block]:
    stages = _vgg_stages(backbone.features)
    blocks = [Block(f"stage{i + 1}", nn.Sequential(*layers)) for i, layers in enumerate(stages)]
    last = blocks[-1].module
    blocks[-1] = Block(blocks[-1].name, nn.Sequential(*last, L2NormFeature(backbone.scale_weight)))
    extra = list(backbone.extra)
    blocks.append(Block("fc7", FeatureStage(extra[:1], keep_input=False)))
    blocks.append(Block("extra", FeatureStage(extra[1:], keep_input=True, keep_each_output=True)))
    return blocks


def _ssdlite_blocks(backbone: SSDLiteFeatureExtractorMobileNet) -> list[Block]:
    c4_part, c5_part = backbone.features[0], backbone.features[1]
    groups = group_by_stride(list(c4_part))
    blocks = [Block("stem" if i == 0 else f"stage{i}", nn.Sequential(*g)) for i, g in enumerate(groups)]
    blocks.append(Block(f"stage{len(groups)}", FeatureStage([c5_part], keep_input=True)))
    blocks.append(Block("extra", FeatureStage(list(backbone.extra), keep_input=True, keep_each_output=True)))
    return blocks


def partition_torchvision_detector(model: nn.Module, name: str) -> list[Block]:
    """Blocks of the tensor core of a torchvision RetinaNet / FCOS / Faster R-CNN (body stages, ``fpn``,
    ``head``) or SSD / SSDlite (backbone stages, ``extra``, ``head``).

    Raises:
        PartitionError: the backbone is not one of the layouts torchvision builds.
    """
    backbone = model.backbone
    if hasattr(backbone, "body") and hasattr(backbone, "fpn") and isinstance(backbone.body, IntermediateLayerGetter):
        blocks, feature_names = _body_blocks(backbone.body)
        blocks.append(Block("fpn", FpnBlock(backbone.fpn, feature_names)))
    elif isinstance(backbone, SSDFeatureExtractorVGG):
        blocks = _ssd_vgg_blocks(backbone)
    elif isinstance(backbone, SSDLiteFeatureExtractorMobileNet):
        blocks = _ssdlite_blocks(backbone)
    else:
        raise PartitionError(
            f"cannot partition detector {name!r} ({type(model).__name__}): expected a BackboneWithFPN, "
            f"SSDFeatureExtractorVGG or SSDLiteFeatureExtractorMobileNet backbone, got {type(backbone).__name__}"
        )
    blocks.append(Block("head", detection_head(model)))
    return blocks
