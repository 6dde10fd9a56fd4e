"""Architectures (forward contract, shapes), pre/post-processing, crops, training step, pipeline wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multidnn_sched.models.classifier import CLASSIFIER_INPUT_HW
from multidnn_sched.models.crops import crop_batch
from multidnn_sched.models.detector import (
    DETECTOR_INPUT_HW,
    DETECTOR_STRIDE,
    Detections,
    decode_boxes,
    detector_loss,
    detector_postprocess,
    detector_preprocess,
    detector_targets,
)
from multidnn_sched.models.embedding import EMBEDDER_INPUT_HW
from multidnn_sched.models.saturation import run_saturation
from multidnn_sched.models.train import Schedule
from multidnn_sched.models.zoo import (
    NUM_ATTRIBUTES,
    NUM_CLASSES,
    DefaultModels,
    PerceptionPipeline,
    build_classifier,
    build_detector,
    build_embedder,
)

OUT_H, OUT_W = DETECTOR_INPUT_HW[0] // DETECTOR_STRIDE, DETECTOR_INPUT_HW[1] // DETECTOR_STRIDE


@pytest.fixture(scope="module")
def models() -> DefaultModels:
    torch.manual_seed(0)
    return DefaultModels(build_detector().eval(), build_embedder().eval(), build_classifier().eval())


def test_detector_forward_is_one_tensor_to_tuple(models: DefaultModels) -> None:
    with torch.inference_mode():
        heat, box = models.detector(torch.zeros(2, 3, *DETECTOR_INPUT_HW))
    assert heat.shape == (2, NUM_CLASSES, OUT_H, OUT_W)
    assert box.shape == (2, 4, OUT_H, OUT_W)
    assert bool((box >= 0).all())
    names = {n for n, _ in models.detector.named_children()}
    assert names == {"backbone", "neck", "head"}
    assert {"stem", "layer1", "layer2", "layer3", "layer4"} <= {
        n for n, _ in models.detector.backbone.named_children()
    }


def test_blocks_chain_equals_whole_detector(models: DefaultModels) -> None:
    x = torch.randn(1, 3, *DETECTOR_INPUT_HW)
    det = models.detector
    with torch.inference_mode():
        whole = det(x)
        chained = det.head(det.neck(det.backbone(x)))
    assert torch.allclose(whole[0], chained[0]) and torch.allclose(whole[1], chained[1])


def test_embedder_outputs_unit_vectors(models: DefaultModels) -> None:
    with torch.inference_mode():
        emb = models.embedder(torch.randn(5, 3, *EMBEDDER_INPUT_HW))
    assert emb.shape == (5, 128)
    assert torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)


def test_classifier_logits_shape(models: DefaultModels) -> None:
    with torch.inference_mode():
        logits = models.classifier(torch.randn(3, 3, *CLASSIFIER_INPUT_HW))
    assert logits.shape == (3, NUM_ATTRIBUTES)


def test_preprocess_shape_and_bad_input() -> None:
    image = np.full((480, 640, 3), 128, np.uint8)
    x = detector_preprocess(image)
    assert x.shape == (1, 3, *DETECTOR_INPUT_HW) and x.dtype == torch.float32
    with pytest.raises(ValueError, match="uint8"):
        detector_preprocess(np.zeros((480, 640), np.float32))


def test_postprocess_decodes_a_synthetic_peak_into_original_pixels() -> None:
    heat = torch.full((1, NUM_CLASSES, OUT_H, OUT_W), -10.0)
    box = torch.full((1, 4, OUT_H, OUT_W), 8.0)
    cy, cx = 10, 20  # cell -> centre (164, 84) input px -> (328, 168) original px
    heat[0, 2, cy, cx] = 3.0
    heat[0, 2, cy, cx + 1] = 1.0  # neighbour: suppressed by the 3x3 peak test
    box[0, :, cy, cx] = torch.tensor([10.0, 20.0, 30.0, 40.0])
    dets = detector_postprocess(
        (heat, box), score_threshold=0.3, nms_iou_threshold=0.5, image_size=(640, 480)
    )
    assert len(dets) == 1
    assert dets.labels.tolist() == [2]
    assert dets.scores[0] == pytest.approx(float(torch.sigmoid(torch.tensor(3.0))), abs=1e-6)
    centre_x, centre_y = (cx + 0.5) * DETECTOR_STRIDE, (cy + 0.5) * DETECTOR_STRIDE
    expected = np.array([centre_x - 10, centre_y - 20, centre_x + 30, centre_y + 40]) * 2.0
    assert np.allclose(dets.boxes_xyxy[0], expected, atol=1e-3)


def test_postprocess_nms_and_threshold() -> None:
    heat = torch.full((1, NUM_CLASSES, OUT_H, OUT_W), -10.0)
    box = torch.full((1, 4, OUT_H, OUT_W), 40.0)
    heat[0, 0, 10, 10] = 2.0
    heat[0, 0, 10, 12] = 1.5  # separate peak, same class, heavy overlap -> removed by NMS
    heat[0, 1, 20, 30] = -2.0  # below the threshold
    dets = detector_postprocess((heat, box), score_threshold=0.3, nms_iou_threshold=0.5)
    assert len(dets) == 1
    empty = detector_postprocess((torch.full_like(heat, -10.0), box), score_threshold=0.3)
    assert len(empty) == 0 and empty.boxes_xyxy.shape == (0, 4)


def test_targets_and_loss_prefer_the_right_answer() -> None:
    boxes = np.array([[40.0, 40.0, 80.0, 72.0]], np.float32)
    heat, box, weight = detector_targets(boxes, np.array([3]), NUM_CLASSES, (OUT_H, OUT_W), DETECTOR_STRIDE)
    assert heat[3].max() == pytest.approx(1.0) and heat[0].max() == 0.0
    assert weight.sum() > 0
    decoded = decode_boxes(torch.from_numpy(box)[None], DETECTOR_STRIDE)[0]
    cy, cx = np.unravel_index(np.argmax(heat[3]), heat[3].shape)
    assert np.allclose(decoded[:, cy, cx].numpy(), boxes[0], atol=1e-4)
    heat_t, box_t, weight_t = (torch.from_numpy(a)[None] for a in (heat, box, weight))
    good = (torch.logit(heat_t.clamp(1e-4, 1 - 1e-4)), box_t)
    bad = (torch.full_like(heat_t, 0.0), box_t * 0.3)
    good_loss, _ = detector_loss(good, heat_t, box_t, weight_t, DETECTOR_STRIDE)
    bad_loss, _ = detector_loss(bad, heat_t, box_t, weight_t, DETECTOR_STRIDE)
    assert float(good_loss) < float(bad_loss)


def test_crop_batch_shapes_and_content() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[20:60, 50:90] = (255, 0, 0)
    crops = crop_batch(
        image, np.array([[50, 20, 90, 60], [0, 0, 10, 10]], np.float32), (32, 32), pad_fraction=0.0
    )
    assert crops.shape == (2, 3, 32, 32)
    assert (
        float(crops[0, 0].mean()) > 2.0 > float(crops[1, 0].mean())
    )  # red channel high inside the red square
    assert crop_batch(image, np.zeros((0, 4)), (32, 32)).shape == (0, 3, 32, 32)


def test_crop_batch_cuts_only_the_sampled_region_and_matches_roi_align_on_the_whole_frame() -> None:
    """crop_batch converts only the boxes' union (plus a margin) of the frame; every crop equals roi_align on
    the whole frame, for boxes inside, across and beyond its edges and frames of any size."""
    from torchvision.ops import roi_align

    from multidnn_sched.models.detector import normalize_images

    rng = np.random.default_rng(7)
    worst = 0.0
    for _ in range(60):
        height, width = int(rng.integers(16, 300)), int(rng.integers(16, 400))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        n = int(rng.integers(1, 6))
        x, y = rng.uniform(-0.3 * width, 1.1 * width, n), rng.uniform(-0.3 * height, 1.1 * height, n)
        side = rng.uniform(1.0, 0.6 * max(width, height), n)
        boxes = np.stack([x, y, x + side, y + side * rng.uniform(0.3, 2.0, n)], axis=1).astype(np.float32)
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        padded = np.stack([boxes[:, 0] - 0.1 * w, boxes[:, 1] - 0.1 * h, boxes[:, 2] + 0.1 * w,
                           boxes[:, 3] + 0.1 * h], axis=1)
        whole = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float()
        rois = torch.cat([torch.zeros((n, 1)), torch.from_numpy(padded)], dim=1)
        expected = normalize_images(roi_align(whole, rois, (24, 24), 1.0, 2, True))
        worst = max(worst, float((crop_batch(image, boxes, (24, 24)) - expected).abs().max()))
    assert worst < 1e-3  # float rounding of the shifted coordinates only (1e-3 ~ 0.06 grey levels)


def test_one_training_step_reduces_nothing_breaks() -> None:
    torch.manual_seed(0)
    det = build_detector().train()
    x = torch.randn(2, 3, 64, 96)
    boxes = np.array([[10.0, 10.0, 40.0, 40.0]], np.float32)
    targets = [
        detector_targets(boxes, np.array([1]), NUM_CLASSES, (8, 12), DETECTOR_STRIDE) for _ in range(2)
    ]
    heat, box, weight = (torch.stack([torch.from_numpy(t[i]) for t in targets]) for i in range(3))
    opt = torch.optim.AdamW(det.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        loss, _ = detector_loss(det(x), heat, box, weight, DETECTOR_STRIDE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_schedule_warmup_then_cosine() -> None:
    sched = Schedule(1e-3, steps=100, budget_sec=None, warmup_fraction=0.1)
    assert sched.lr(0.05) == pytest.approx(5e-4)
    assert sched.lr(0.1) == pytest.approx(1e-3)
    assert sched.lr(1.0) == pytest.approx(1e-5)
    assert sched.progress(50) == pytest.approx(0.5)
    now = [0.0]
    timed = Schedule(1e-3, steps=None, budget_sec=10.0, clock=lambda: now[0])
    now[0] = 5.0
    assert timed.progress(0) == pytest.approx(0.5)


def test_pipeline_runs_one_frame_end_to_end(models: DefaultModels) -> None:
    pipeline = PerceptionPipeline(models, score_threshold=0.0, track_score_threshold=0.0, max_detections=3)
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    result = pipeline(image)
    assert set(result.latency_ms) == {"detector", "embedder", "tracker", "classifier"}
    assert len(result.detections) == 3  # threshold 0 keeps every peak, capped at max_detections
    assert result.detections.boxes_xyxy.max() <= 640.0
    assert result.tracks == []  # tracks are confirmed after n_init = 2 frames
    result = pipeline(image)
    assert len(result.tracks) > 0
    assert all(0 <= t.attribute < NUM_ATTRIBUTES for t in result.tracks)


def test_tracker_inputs_threshold_and_class_agnostic_nms(models: DefaultModels) -> None:
    pipeline = PerceptionPipeline(models, track_score_threshold=0.4, track_nms_iou_threshold=0.6)
    dets = Detections(
        np.array([[0, 0, 40, 40], [1, 1, 41, 41], [100, 100, 140, 140], [200, 200, 240, 240]], np.float32),
        np.array([0.9, 0.8, 0.7, 0.2], np.float32),
        np.array([1, 3, 2, 0], np.int64),
    )
    kept = pipeline.tracker_inputs(dets)
    assert kept.labels.tolist() == [1, 2]  # same place, other class: suppressed; low score: dropped


def test_saturation_accounting(models: DefaultModels) -> None:
    images = [np.zeros((120, 160, 3), np.uint8) for _ in range(4)]
    report = run_saturation(models, images, rate_hz=1000.0)
    assert report.frames_offered == 4
    det = report.stages["detector"]
    assert det["offered"] == 4 and det["processed"] + det["dropped"] == 4
    for name in ("tracker", "classifier"):
        stage = report.stages[name]
        assert stage["processed"] + stage["dropped"] == stage["offered"] <= 4
    assert report.keeps_up == all(s["processed"] == 4 for s in report.stages.values())
