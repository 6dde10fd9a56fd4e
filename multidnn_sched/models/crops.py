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
    image = torch.from_numpy(np.ascontiguousarray(image_rgb_uint8)).permute(2, 0, 1).unsqueeze(0).float()
    rois = torch.cat([torch.zeros((padded.shape[0], 1)), torch.from_numpy(padded)], dim=1)
    crops = roi_align(image, rois, output_size=size_hw, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    # Bilinear sampling is linear, so normalising the N small crops equals normalising the whole frame first,
    # at a fraction of the cost (640x480: ~8 ms -> ~1 ms, measured under load).
    return normalize_images(crops)
