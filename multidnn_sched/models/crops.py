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
    crops = torch.empty((padded.shape[0], 3, size_hw[0], size_hw[1]), dtype=torch.float32)
    separable = _separable_crops(image_rgb_uint8, padded, size_hw, crops)
    rest = np.flatnonzero(~separable)
    if rest.size:
        image, offset_xy = _sampled_region(image_rgb_uint8, padded[rest])
        shifted = padded[rest] - np.array([offset_xy[0], offset_xy[1], offset_xy[0], offset_xy[1]], np.float32)
        rois = torch.cat([torch.zeros((shifted.shape[0], 1)), torch.from_numpy(shifted)], dim=1)
        crops[torch.from_numpy(rest)] = roi_align(
            image, rois, output_size=size_hw, spatial_scale=1.0, sampling_ratio=SAMPLES_PER_BIN, aligned=True
        )
    # Bilinear sampling is linear, so normalising the N small crops equals normalising the whole frame first,
    # at a fraction of the cost (640x480: ~8 ms -> ~1 ms, measured under load).
    return normalize_images(crops)


SAMPLES_PER_BIN: int = 2
"""Bilinear samples per output pixel and axis (``roi_align``'s ``sampling_ratio``); the default models were
trained on crops cut this way (``models/train.py``), so it is part of the models' input definition."""

SEPARABLE_MACS_PER_OUTPUT: float = 300.0
"""A crop is cut as two small matrix products when they cost at most this many multiply-adds per output value,
else by ``roi_align``. Measured on the 2-core dev machine (2026-12-07, 12 crops, one intra-op thread): the
products take ~0.05 ns per multiply-add and ``roi_align`` ~30 ns per output value, break-even near 600; 300
keeps the products for boxes up to ~110 px (64x64 crops) / ~130 px (96x96), where 12 crops of 20-110 px took
4.5-5.4 ms against 10.8-14.8 ms at 96x96 (3.8-5.8 ms against 5.3-5.7 ms at 64x64), and leaves larger boxes,
where the products lose (150-300 px at 96x96: 14.6 ms against 10.3 ms), to ``roi_align``."""


def _axis_taps(start: np.ndarray, end: np.ndarray, out_size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``roi_align(aligned=True)``'s bilinear samples along one axis, per box and output index.

    Sampling is separable: output (i, j) averages samples at (y_i, x_j) whose weight is the product of a
    weight along y and one along x, and a sample outside [-1, length] (either axis) reads 0 - also a product.
    The arithmetic follows torchvision's CPU kernel in float32 (same order), so outputs agree to rounding.

    Returns:
        ``int64[N, out_size, 2 * SAMPLES_PER_BIN]`` pixel indices and ``float32`` weights of the same shape
        (each output's weights sum to at most 1).
    """
    f32 = np.float32
    grid = SAMPLES_PER_BIN
    first = start.astype(f32) - f32(0.5)
    bin_size = ((end.astype(f32) - f32(0.5)) - first) / f32(out_size)
    index = np.arange(out_size, dtype=f32)[None, :, None]
    sample = np.arange(grid, dtype=f32)[None, None, :]
    coord = (
        first[:, None, None]
        + index * bin_size[:, None, None]
        + (sample + f32(0.5)) * bin_size[:, None, None] / f32(grid)
    )
    inside = ~((coord < -1.0) | (coord > length))
    coord = np.maximum(coord, f32(0.0))
    low = coord.astype(np.int64)
    at_edge = low >= length - 1
    low = np.where(at_edge, length - 1, low)
    high = np.where(at_edge, length - 1, low + 1)
    frac = np.where(at_edge, f32(0.0), coord - low.astype(f32))
    scale = inside.astype(f32) / f32(grid)
    return np.concatenate([low, high], axis=2), np.concatenate([(f32(1.0) - frac) * scale, frac * scale], axis=2)


def _interpolation_matrix(index: np.ndarray, weight: np.ndarray, first: int, size: int) -> Tensor:
    """``float32[out, size]``: row i sums ``weight[i, t]`` at column ``index[i, t] - first``."""
    rows = index.shape[0]
    flat = (np.arange(rows)[:, None] * size + (index - first)).ravel()
    dense = np.bincount(flat, weights=weight.ravel(), minlength=rows * size).reshape(rows, size)
    return torch.from_numpy(dense.astype(np.float32))


def _separable_crops(
    image_rgb_uint8: np.ndarray, boxes_xyxy: np.ndarray, size_hw: tuple[int, int], out: Tensor
) -> np.ndarray:
    """Cut the crops whose boxes are small enough as ``A_y @ window @ A_x^T`` (see ``_axis_taps``) into
    ``out[k]`` (not normalised); returns which boxes it cut (``bool[N]``)."""
    height, width = image_rgb_uint8.shape[:2]
    out_h, out_w = size_hw
    rows, row_w = _axis_taps(boxes_xyxy[:, 1], boxes_xyxy[:, 3], out_h, height)
    cols, col_w = _axis_taps(boxes_xyxy[:, 0], boxes_xyxy[:, 2], out_w, width)
    r0, r1 = rows.min(axis=(1, 2)), rows.max(axis=(1, 2)) + 1
    c0, c1 = cols.min(axis=(1, 2)), cols.max(axis=(1, 2)) + 1
    win_h, win_w = r1 - r0, c1 - c0
    macs = out_h * win_h * win_w + out_h * out_w * win_w
    chosen = macs <= SEPARABLE_MACS_PER_OUTPUT * out_h * out_w
    if not chosen.any():
        return chosen
    for k in np.flatnonzero(chosen).tolist():
        y0, y1, x0, x1 = int(r0[k]), int(r1[k]), int(c0[k]), int(c1[k])
        along_y = _interpolation_matrix(rows[k], row_w[k], y0, y1 - y0)
        along_x = _interpolation_matrix(cols[k], col_w[k], x0, x1 - x0)
        # Only the window is copied and converted; the copy also takes frames with any strides (a BGR -> RGB
        # ``[..., ::-1]`` view, a read-only message buffer), which ``torch.from_numpy`` alone would not.
        window = torch.from_numpy(np.ascontiguousarray(image_rgb_uint8[y0:y1, x0:x1])).permute(2, 0, 1).float()
        torch.matmul(along_y @ window, along_x.T, out=out[k])
    return chosen


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
