"""Anchor-free one-stage detector (CenterNet / FCOS style) on a torchvision ResNet-18 body.

The ``nn.Module`` maps ONE tensor to a tuple of tensors, so the runtime can cut it into blocks:

``image [B, 3, H, W] -> backbone -> (c3, c4, c5) -> neck (FPN) -> p3 -> head -> (heatmap_logits, box_ltrb)``

* ``heatmap_logits``: ``Tensor[B, C, H/8, W/8]``, one logit per class; a peak marks an object centre.
* ``box_ltrb``: ``Tensor[B, 4, H/8, W/8]``, distances (input pixels) from the cell centre to the box's left,
  top, right and bottom edges.

Pre-processing (``detector_preprocess``) and decoding (``detector_postprocess``) are plain functions.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork, batched_nms

DETECTOR_INPUT_HW: tuple[int, int] = (240, 320)
"""Network input (height, width), pixels: 640x480 frames are downscaled by 2."""

DETECTOR_STRIDE: int = 8
"""Output stride of the heatmap / box maps (the FPN's P3 level)."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class Detections:
    """Decoded detections of one image.

    Attributes:
        boxes_xyxy: ``float32[N, 4]`` (x1, y1, x2, y2), pixels in the ORIGINAL image.
        scores: ``float32[N]`` in [0, 1].
        labels: ``int64[N]`` class indices.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))


class ResNetBackbone(nn.Module):
    """torchvision ResNet-18 without its classifier; returns the stride-8/16/32 feature maps.

    Attributes:
        stem: conv1 + bn1 + relu + maxpool (stride 4).
        layer1..layer4: the four ResNet stages (strides 4, 8, 16, 32).
    """

    out_channels: tuple[int, int, int] = (128, 256, 512)

    def __init__(self) -> None:
        super().__init__()
        resnet = torchvision.models.resnet18(weights=None)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.layer1(self.stem(x))
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c3, c4, c5


class FpnNeck(nn.Module):
    """torchvision ``FeaturePyramidNetwork`` over (c3, c4, c5); returns the finest level P3."""

    def __init__(self, in_channels: tuple[int, int, int], out_channels: int) -> None:
        super().__init__()
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels)

    def forward(self, features: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        c3, c4, c5 = features
        levels = self.fpn(OrderedDict([("c3", c3), ("c4", c4), ("c5", c5)]))
        return levels["c3"]


class DetectionHead(nn.Module):
    """Shared conv tower, then a class heatmap branch and a box (l, t, r, b) branch."""

    def __init__(self, in_channels: int, num_classes: int, stride: int, prior_prob: float = 0.01) -> None:
        super().__init__()
        self.stride = stride
        self.tower = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
        )
        self.heatmap = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.box = nn.Conv2d(in_channels, 4, 3, padding=1)
        nn.init.constant_(self.heatmap.bias, float(-np.log((1 - prior_prob) / prior_prob)))
        nn.init.normal_(self.box.weight, std=0.01)
        nn.init.constant_(self.box.bias, 1.0)

    def forward(self, p3: Tensor) -> tuple[Tensor, Tensor]:
        x = self.tower(p3)
        heatmap_logits = self.heatmap(x)
        box_ltrb = F.softplus(self.box(x)) * (2.0 * self.stride)
        return heatmap_logits, box_ltrb


class Detector(nn.Module):
    """ResNet-18 + FPN + anchor-free head. ``forward(image[B,3,H,W]) -> (heatmap_logits, box_ltrb)``."""

    def __init__(self, num_classes: int, neck_channels: int = 64) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stride = DETECTOR_STRIDE
        self.backbone = ResNetBackbone()
        self.neck = FpnNeck(ResNetBackbone.out_channels, neck_channels)
        self.head = DetectionHead(neck_channels, num_classes, DETECTOR_STRIDE)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.neck(self.backbone(image)))


def normalize_images(images_uint8: Tensor) -> Tensor:
    """``uint8[B, 3, H, W]`` (RGB) -> ImageNet-normalised ``float32[B, 3, H, W]``."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return (images_uint8.float() - mean) / std


def resize_uint8(image_rgb_uint8: np.ndarray, size_hw: tuple[int, int]) -> Tensor:
    """Resize one ``uint8[H, W, 3]`` RGB image to ``uint8[1, 3, h, w]`` (bilinear, antialiased)."""
    if image_rgb_uint8.ndim != 3 or image_rgb_uint8.shape[2] != 3 or image_rgb_uint8.dtype != np.uint8:
        raise ValueError(
            f"expected an RGB image uint8[H, W, 3], got {image_rgb_uint8.dtype}{list(image_rgb_uint8.shape)}"
        )
    chw = torch.from_numpy(np.ascontiguousarray(image_rgb_uint8)).permute(2, 0, 1).unsqueeze(0)
    if tuple(chw.shape[2:]) == tuple(size_hw):
        return chw.contiguous()
    # torch's uint8 kernel on the channels-last view (no float copy of the frame): 640x480 -> 320x240 in
    # 0.62 ms instead of 3.5 ms through float32, 1280x720 in 0.93 ms instead of 8.6 ms (one thread, this
    # machine, 2026-12-02); it differs from the float path's rounding by at most 1 level.
    return F.interpolate(chw, size=size_hw, mode="bilinear", align_corners=False, antialias=True).contiguous()


def detector_preprocess(image_rgb_uint8: np.ndarray, input_hw: tuple[int, int] = DETECTOR_INPUT_HW) -> Tensor:
    """Turn one RGB frame into the detector input.

    Args:
        image_rgb_uint8: ``uint8[H, W, 3]`` RGB frame (any size; 640x480 by default).
        input_hw: network input (height, width), pixels.

    Returns:
        ``float32[1, 3, input_h, input_w]``, ImageNet-normalised.
    """
    return normalize_images(resize_uint8(image_rgb_uint8, input_hw))


def decode_boxes(box_ltrb: Tensor, stride: int) -> Tensor:
    """Distances ``[B, 4, h, w]`` -> boxes ``[B, 4, h, w]`` (x1, y1, x2, y2) in input pixels."""
    _, _, h, w = box_ltrb.shape
    ys = (torch.arange(h, dtype=box_ltrb.dtype, device=box_ltrb.device) + 0.5) * stride
    xs = (torch.arange(w, dtype=box_ltrb.dtype, device=box_ltrb.device) + 0.5) * stride
    cy = ys.view(1, h, 1).expand(1, h, w)
    cx = xs.view(1, 1, w).expand(1, h, w)
    left, top, right, bottom = box_ltrb.unbind(1)
    return torch.stack([cx - left, cy - top, cx + right, cy + bottom], dim=1)


def detector_postprocess(
    outputs: tuple[Tensor, Tensor],
    score_threshold: float = 0.3,
    nms_iou_threshold: float = 0.5,
    image_size: tuple[int, int] = (640, 480),
    max_detections: int = 100,
) -> Detections:
    """Decode the detector outputs of ONE image into boxes in the original image.

    Args:
        outputs: ``(heatmap_logits[1, C, h, w], box_ltrb[1, 4, h, w])`` as returned by ``Detector.forward``.
        score_threshold: minimum peak score (sigmoid of the heatmap logit) to keep.
        nms_iou_threshold: IoU above which a lower-scored box of the same class is suppressed.
        image_size: ORIGINAL image (width, height), pixels.
        max_detections: keep at most this many (highest scores).

    Returns:
        ``Detections`` in original-image pixels, sorted by decreasing score.
    """
    heatmap_logits, box_ltrb = outputs
    if heatmap_logits.dim() != 4 or heatmap_logits.shape[0] != 1 or box_ltrb.shape[1] != 4:
        raise ValueError(
            "expected heatmap_logits[1, C, h, w] and box_ltrb[1, 4, h, w], got "
            f"{list(heatmap_logits.shape)} and {list(box_ltrb.shape)}"
        )
    heatmap_logits = heatmap_logits.detach().float().cpu()
    box_ltrb = box_ltrb.detach().float().cpu()
    _, _, h, w = heatmap_logits.shape
    stride = DETECTOR_STRIDE  # input size = output size * stride, whatever the input was
    heat = torch.sigmoid(heatmap_logits)
    peaks = heat == F.max_pool2d(heat, 3, stride=1, padding=1)
    keep = peaks & (heat >= score_threshold)
    _, cls_idx, ys, xs = torch.nonzero(keep, as_tuple=True)
    if cls_idx.numel() == 0:
        return Detections.empty()
    scores = heat[0, cls_idx, ys, xs]
    boxes = decode_boxes(box_ltrb, stride)[0, :, ys, xs].T
    input_w, input_h = w * stride, h * stride
    image_w, image_h = image_size
    scale = torch.tensor([image_w / input_w, image_h / input_h, image_w / input_w, image_h / input_h])
    boxes = boxes * scale
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image_w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image_h)
    keep_idx = batched_nms(boxes, scores, cls_idx, nms_iou_threshold)[:max_detections]
    return Detections(
        boxes_xyxy=boxes[keep_idx].numpy().astype(np.float32),
        scores=scores[keep_idx].numpy().astype(np.float32),
        labels=cls_idx[keep_idx].numpy().astype(np.int64),
    )


def gaussian_sigma(box_w: float, box_h: float) -> tuple[float, float]:
    """Heatmap target spread (cells) for a box of ``box_w x box_h`` output cells."""
    return max(box_w / 6.0, 0.5), max(box_h / 6.0, 0.5)


def detector_targets(
    boxes_xyxy: np.ndarray, labels: np.ndarray, num_classes: int, output_hw: tuple[int, int], stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training targets for one image.

    Args:
        boxes_xyxy: ``float[N, 4]`` boxes in INPUT pixels.
        labels: ``int[N]`` class indices.
        num_classes: number of heatmap channels.
        output_hw: (h, w) of the output maps.
        stride: input pixels per output cell.

    Returns:
        ``heat[C, h, w]`` (Gaussian peaks, 1 at centres), ``box[4, h, w]`` (ltrb input pixels), and
        ``weight[h, w]`` (box-loss weight, 0 where no object owns the cell).
    """
    h, w = output_hw
    heat = np.zeros((num_classes, h, w), np.float32)
    box = np.zeros((4, h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    ys = (np.arange(h, dtype=np.float32) + 0.5) * stride
    xs = (np.arange(w, dtype=np.float32) + 0.5) * stride
    order = np.argsort(-(boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1]))
    for i in order:  # large first, so smaller (usually nearer / occluding) objects own shared cells
        x1, y1, x2, y2 = (float(v) for v in boxes_xyxy[i])
        if x2 - x1 < 1.0 or y2 - y1 < 1.0:
            continue
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        sx, sy = gaussian_sigma((x2 - x1) / stride, (y2 - y1) / stride)
        ci = min(max(int(cx // stride), 0), w - 1)
        cj = min(max(int(cy // stride), 0), h - 1)
        gx = np.exp(-(((np.arange(w) - ci) / sx) ** 2) / 2.0)
        gy = np.exp(-(((np.arange(h) - cj) / sy) ** 2) / 2.0)
        g = (gy[:, None] * gx[None, :]).astype(np.float32)
        label = int(labels[i])
        heat[label] = np.maximum(heat[label], g)
        inside = (xs[None, :] > x1) & (xs[None, :] < x2) & (ys[:, None] > y1) & (ys[:, None] < y2)
        own = inside & (g >= 0.3)
        own[cj, ci] = True
        box[0][own] = np.maximum(np.broadcast_to(xs[None, :], (h, w))[own] - x1, 0.5)
        box[1][own] = np.maximum(np.broadcast_to(ys[:, None], (h, w))[own] - y1, 0.5)
        box[2][own] = np.maximum(x2 - np.broadcast_to(xs[None, :], (h, w))[own], 0.5)
        box[3][own] = np.maximum(y2 - np.broadcast_to(ys[:, None], (h, w))[own], 0.5)
        weight[own] = g[own]
    return heat, box, weight


def focal_heatmap_loss(
    heatmap_logits: Tensor, heat_target: Tensor, alpha: float = 2.0, beta: float = 4.0
) -> Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss, normalised by the number of centres."""
    pred = torch.sigmoid(heatmap_logits).clamp(1e-4, 1 - 1e-4)
    pos = heat_target.ge(0.999).float()
    neg = 1.0 - pos
    pos_loss = torch.log(pred) * (1 - pred) ** alpha * pos
    neg_loss = torch.log(1 - pred) * pred**alpha * (1 - heat_target) ** beta * neg
    num_pos = pos.sum().clamp(min=1.0)
    return -(pos_loss.sum() + neg_loss.sum()) / num_pos


def detector_loss(
    outputs: tuple[Tensor, Tensor], heat_target: Tensor, box_target: Tensor, weight: Tensor, stride: int
) -> tuple[Tensor, dict[str, float]]:
    """Focal heatmap loss + GIoU box loss (weighted by the target Gaussian) for a batch.

    Args:
        outputs: ``(heatmap_logits[B, C, h, w], box_ltrb[B, 4, h, w])``.
        heat_target: ``[B, C, h, w]``; box_target: ``[B, 4, h, w]``; weight: ``[B, h, w]``.
        stride: input pixels per output cell.

    Returns:
        (total loss, {"heat": .., "box": ..}).
    """
    heatmap_logits, box_ltrb = outputs
    heat_loss = focal_heatmap_loss(heatmap_logits, heat_target)
    mask = weight > 0
    if mask.any():
        pred_boxes = decode_boxes(box_ltrb, stride).permute(0, 2, 3, 1)[mask]
        true_boxes = decode_boxes(box_target, stride).permute(0, 2, 3, 1)[mask]
        w = weight[mask]
        giou = torchvision.ops.generalized_box_iou_loss(pred_boxes, true_boxes, reduction="none")
        box_loss = (giou * w).sum() / w.sum().clamp(min=1e-6)
    else:
        box_loss = box_ltrb.sum() * 0.0
    total = heat_loss + 2.0 * box_loss
    return total, {"heat": float(heat_loss.detach()), "box": float(box_loss.detach())}
