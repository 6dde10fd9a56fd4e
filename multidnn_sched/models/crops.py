"""Crops of detected / tracked objects, shared by the embedding network and the attribute classifier."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import roi_align

from multidnn_sched.models.detector import normalize_images


def crop_batch(
    image_rgb_uint8: np.ndarray,
    boxes_xyxy: np.ndarray,
    size_hw: tuple[int, int],
    pad_fraction: float = 0.1,
) -> Tensor:
    """Cut, resize and normalise one crop per box.

    Args:
        image_rgb_uint8: ``uint8[H, W, 3]`` RGB frame.
        boxes_xyxy: ``float[N, 4]`` (x1, y1, x2, y2), pixels in that frame.
        size_hw: crop (height, width), pixels.
        pad_fraction: each box is grown by this fraction of its width / height on every side first.

    Returns:
        ``float32[N, 3, h, w]``, ImageNet-normalised (``N`` may be 0).
    """
    if image_rgb_uint8.ndim != 3 or image_rgb_uint8.shape[2] != 3 or image_rgb_uint8.dtype != np.uint8:
        raise ValueError(
            f"expected an RGB image uint8[H, W, 3], got {image_rgb_uint8.dtype}{list(image_rgb_uint8.shape)}"
        )
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return torch.zeros((0, 3, size_hw[0], size_hw[1]), dtype=torch.float32)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    padded = np.stack(
        [
            boxes[:, 0] - pad_fraction * w,
            boxes[:, 1] - pad_fraction * h,
            boxes[:, 2] + pad_fraction * w,
            boxes[:, 3] + pad_fraction * h,
        ],
        axis=1,
    )
    image, offset_xy = _sampled_region(image_rgb_uint8, padded)
    shifted = padded - np.array([offset_xy[0], offset_xy[1], offset_xy[0], offset_xy[1]], np.float32)
    rois = torch.cat([torch.zeros((shifted.shape[0], 1)), torch.from_numpy(shifted)], dim=1)
    crops = roi_align(image, rois, output_size=size_hw, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    # Bilinear sampling is linear, so normalising the N small crops equals normalising the whole frame first,
    # at a fraction of the cost (640x480: ~8 ms -> ~1 ms, measured under load).
    return normalize_images(crops)


_REGION_MARGIN_PX = 2
"""Pixels kept around the boxes' union: every bilinear sample of ``roi_align(aligned=True)`` lies within
[x1 - 0.5, x2 - 0.5] and reads its two neighbours, so 2 px keep every read inside the region."""


def _sampled_region(image_rgb_uint8: np.ndarray, boxes_xyxy: np.ndarray) -> tuple[Tensor, tuple[int, int]]:
    """The part of the frame the crops sample (the boxes' union plus a margin, clipped to the frame) as a
    contiguous ``float32[1, 3, h, w]``, and its (x, y) offset in the frame.

    Cutting the region changes no output: the region's edges are either the frame's own edges (the same
    out-of-frame rule applies) or lie beyond every sample's neighbours. What it saves: ``roi_align`` copies a
    non-contiguous input whole, so a 640x480 frame cost ~3 ms of copying per call before any crop was cut
    (12 crops at 64x64: 7.2 ms -> 4.2 ms on a contiguous frame, 2-core dev machine); converting only the
    sampled part, channels first and contiguous, costs less than that copy and shrinks with the boxes.
    """
    height, width = image_rgb_uint8.shape[:2]
    x0 = int(min(max(np.floor(boxes_xyxy[:, 0].min()) - _REGION_MARGIN_PX, 0), width - 1))
    y0 = int(min(max(np.floor(boxes_xyxy[:, 1].min()) - _REGION_MARGIN_PX, 0), height - 1))
    x1 = int(max(min(np.ceil(boxes_xyxy[:, 2].max()) + _REGION_MARGIN_PX, width), x0 + 1))
    y1 = int(max(min(np.ceil(boxes_xyxy[:, 3].max()) + _REGION_MARGIN_PX, height), y0 + 1))
    region = torch.from_numpy(np.ascontiguousarray(image_rgb_uint8[y0:y1, x0:x1].transpose(2, 0, 1)))
    return region.unsqueeze(0).float(), (x0, y0)
