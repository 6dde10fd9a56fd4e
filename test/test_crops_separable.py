"""``crop_batch`` cuts small boxes as two matrix products: the crops must equal ``roi_align``'s, which the
default models were trained on, for every box size, position (inside, on and beyond the frame's edges) and
output size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

from multidnn_sched.models import crops as crops_module
from multidnn_sched.models.crops import SAMPLES_PER_BIN, crop_batch
from multidnn_sched.models.detector import normalize_images


def _reference(image: np.ndarray, boxes: np.ndarray, size_hw: tuple[int, int], pad: float) -> torch.Tensor:
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    padded = np.stack([boxes[:, 0] - pad * w, boxes[:, 1] - pad * h, boxes[:, 2] + pad * w, boxes[:, 3] + pad * h], 1)
    frame = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().unsqueeze(0)
    rois = torch.cat([torch.zeros((boxes.shape[0], 1)), torch.from_numpy(padded.astype(np.float32))], dim=1)
    out = roi_align(frame, rois, output_size=size_hw, spatial_scale=1.0, sampling_ratio=SAMPLES_PER_BIN, aligned=True)
    return normalize_images(out)


@pytest.mark.parametrize("size_hw", [(64, 64), (96, 96), (48, 80)])
@pytest.mark.parametrize("box_px", [(1.0, 12.0), (12.0, 120.0), (150.0, 400.0)])
def test_crops_equal_roi_align(size_hw: tuple[int, int], box_px: tuple[float, float]) -> None:
    rng = np.random.default_rng(int(box_px[1]) + size_hw[0])
    image = rng.integers(0, 256, (120 if box_px[1] < 150 else 480, 160 if box_px[1] < 150 else 640, 3), np.uint8)
    height, width = image.shape[:2]
    n = 24
    x1 = rng.uniform(-0.3 * width, 1.1 * width, n)
    y1 = rng.uniform(-0.3 * height, 1.1 * height, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(*box_px, n), y1 + rng.uniform(*box_px, n)], 1).astype(np.float32)
    boxes[0] = [0.0, 0.0, width, height]  # the whole frame
    boxes[1] = [width - 1.0, height - 1.0, width + 3.0, height + 3.0]  # past the bottom-right corner
    got = crop_batch(image, boxes, size_hw)
    want = _reference(image, boxes, size_hw, pad=0.1)
    assert got.shape == (n, 3, *size_hw)
    # ImageNet-normalised values: a 1/1000 of a grey level is ~2e-5 after dividing by std * 255.
    assert torch.allclose(got, want, atol=2e-4, rtol=0), float((got - want).abs().max())


def test_small_boxes_take_the_separable_path_and_large_ones_roi_align(monkeypatch: pytest.MonkeyPatch) -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    boxes = np.array([[10, 10, 50, 60], [0, 0, 600, 450]], np.float32)
    out = torch.empty((2, 3, 96, 96))
    chosen = crops_module._separable_crops(image, boxes, (96, 96), out)
    assert chosen.tolist() == [True, False]
    # With the budget at 0 every crop goes to roi_align, and the result does not change.
    separable = crop_batch(image + 7, boxes, (96, 96))
    monkeypatch.setattr(crops_module, "SEPARABLE_MACS_PER_OUTPUT", 0.0)
    assert torch.allclose(crop_batch(image + 7, boxes, (96, 96)), separable, atol=2e-4, rtol=0)


def test_no_boxes_and_bad_image_still_handled() -> None:
    assert crop_batch(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 4)), (64, 64)).shape == (0, 3, 64, 64)
    with pytest.raises(ValueError, match="RGB image"):
        crop_batch(np.zeros((10, 10), np.uint8), np.zeros((1, 4)), (64, 64))


def test_strided_and_read_only_frames_give_the_same_crops() -> None:
    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, (60, 80, 3), np.uint8)
    rgb_view = bgr[..., ::-1]  # negative strides, as a BGR -> RGB conversion without a copy
    read_only = np.frombuffer(np.ascontiguousarray(rgb_view).tobytes(), np.uint8).reshape(60, 80, 3)
    boxes = np.array([[5, 5, 30, 40], [40, 10, 79, 59]], np.float32)
    want = _reference(np.ascontiguousarray(rgb_view), boxes, (64, 64), pad=0.1)
    for frame in (rgb_view, read_only):
        assert torch.allclose(crop_batch(frame, boxes, (64, 64)), want, atol=2e-4, rtol=0)
