"""Tests for multidnn_sched.evaluation.metrics: hand-made cases with known answers + library cross-checks."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from multidnn_sched.evaluation.metrics import (
    ClassifiedFrame,
    FrameGroundTruth,
    FramePredictions,
    TrackingFrame,
    box_iou_xyxy,
    classification_accuracy,
    detection_map,
    match_predictions_to_gt,
    top1_accuracy,
    tracking_metrics,
)

RECALL_POINTS = 101  # COCO interpolates precision at recall 0.00, 0.01, ..., 1.00


def _pred(frame: int, boxes: list, scores: list, labels: list) -> FramePredictions:
    return FramePredictions(frame, np.array(boxes, float).reshape(-1, 4), np.array(scores, float),
                            np.array(labels, int))


def _gt(frame: int, boxes: list, labels: list, ignore: list | None = None) -> FrameGroundTruth:
    return FrameGroundTruth(frame, np.array(boxes, float).reshape(-1, 4), np.array(labels, int),
                            None if ignore is None else np.array(ignore, bool))


GT_TWO = [_gt(0, [[0, 0, 10, 10], [50, 50, 70, 80]], [1, 1])]


def test_perfect_predictions_give_one() -> None:
    gts = [_gt(0, [[0, 0, 10, 10], [50, 50, 70, 80]], [1, 2]), _gt(1, [[5, 5, 25, 25]], [1])]
    preds = [_pred(0, [[0, 0, 10, 10], [50, 50, 70, 80]], [0.9, 0.8], [1, 2]), _pred(1, [[5, 5, 25, 25]], [0.7], [1])]
    result = detection_map(preds, gts)
    assert result["map50"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx(1.0)
    assert result["num_gt"] == 3


def test_one_of_two_gt_missed() -> None:
    result = detection_map([_pred(0, [[0, 0, 10, 10]], [0.9], [1])], GT_TWO)
    # recall 0.5 at precision 1: recall points 0.00..0.50 (51 of 101) have precision 1, the rest 0
    assert result["map50"] == pytest.approx(51 / RECALL_POINTS)
    assert result["map"] == pytest.approx(51 / RECALL_POINTS)


def test_low_score_false_positive_leaves_ap_unchanged() -> None:
    preds = [_pred(0, [[0, 0, 10, 10], [50, 50, 70, 80], [200, 200, 220, 220]], [0.9, 0.8, 0.1], [1, 1, 1])]
    assert detection_map(preds, GT_TWO)["map50"] == pytest.approx(1.0)


def test_high_score_false_positive_lowers_ap_by_known_amount() -> None:
    preds = [_pred(0, [[0, 0, 10, 10], [200, 200, 220, 220], [50, 50, 70, 80]], [0.9, 0.8, 0.7], [1, 1, 1])]
    # TP, FP, TP: precision 1 up to recall 0.5, then 2/3 up to recall 1.0
    expected = (51 * 1.0 + 50 * (2 / 3)) / RECALL_POINTS
    assert detection_map(preds, GT_TWO)["map50"] == pytest.approx(expected)


def test_iou_062_counts_at_050_not_at_075() -> None:
    gts = [_gt(0, [[0, 0, 10, 10]], [3])]
    preds = [_pred(0, [[0, 0, 10, 6.2]], [0.9], [3])]
    assert box_iou_xyxy(preds[0].boxes_xyxy, gts[0].boxes_xyxy)[0, 0] == pytest.approx(0.62)
    result = detection_map(preds, gts)
    assert result["map50"] == pytest.approx(1.0)
    assert result["map75"] == pytest.approx(0.0)
    # thresholds 0.50, 0.55, 0.60 of the ten 0.50..0.95 pass
    assert result["map"] == pytest.approx(3 / 10)


def test_detection_on_ignored_gt_is_not_a_false_positive() -> None:
    gts = [_gt(0, [[0, 0, 10, 10], [100, 100, 140, 140]], [1, 1], ignore=[False, True])]
    # the detection on the ignored object has the highest score: were it an FP, AP would drop below 1
    preds = [_pred(0, [[100, 100, 140, 140], [0, 0, 10, 10]], [0.95, 0.5], [1, 1])]
    result = detection_map(preds, gts)
    assert result["map50"] == pytest.approx(1.0)
    assert result["num_gt"] == 1
    # without the ignored GT the same high-score detection is an FP ranked first: precision 0.5 at recall 1
    plain = [_gt(0, [[0, 0, 10, 10]], [1])]
    assert detection_map(preds, plain)["map50"] == pytest.approx((51 * 0.5 + 50 * 0.5) / RECALL_POINTS)


def test_ignored_gt_missed_is_not_a_miss_and_visibility_threshold() -> None:
    gts = [FrameGroundTruth(0, np.array([[0, 0, 10, 10], [50, 50, 70, 80]], float), np.array([1, 1]),
                            visible_fraction=np.array([1.0, 0.3]))]
    preds = [_pred(0, [[0, 0, 10, 10]], [0.9], [1])]
    assert detection_map(preds, gts)["map50"] == pytest.approx(1.0)
    assert detection_map(preds, gts, iou_ignore_below_visible=0.2)["map50"] == pytest.approx(51 / RECALL_POINTS)


def test_classes_without_gt_and_empty_inputs() -> None:
    # class 7 only predicted (COCO: no GT -> class excluded from the mean), class 1 perfect
    preds = [_pred(0, [[0, 0, 10, 10], [50, 50, 70, 80], [300, 300, 310, 310]], [0.9, 0.8, 0.99], [1, 1, 7])]
    assert detection_map(preds, GT_TWO)["map50"] == pytest.approx(1.0)
    assert detection_map([], GT_TWO)["map50"] == 0.0
    assert detection_map([_pred(0, [], [], [])], GT_TWO)["map"] == 0.0
    assert detection_map(preds, [])["map"] == 0.0


def test_detection_map_matches_cocoeval_directly() -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    gts, preds = [], []
    images, gt_anns, dt_anns = [], [], []
    for frame in range(6):
        n = int(rng.integers(1, 6))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(10, 60, (n, 2))
        boxes = np.hstack([xy, xy + wh])
        labels = rng.integers(0, 3, n)
        gts.append(FrameGroundTruth(frame, boxes, labels))
        jitter = boxes + rng.normal(0, 4, boxes.shape)
        extra = np.hstack([rng.uniform(0, 200, (2, 2)), rng.uniform(0, 200, (2, 2)) + 30])
        pboxes = np.vstack([jitter, extra])
        plabels = np.concatenate([labels, rng.integers(0, 3, 2)])
        scores = rng.uniform(0.05, 1.0, pboxes.shape[0])
        preds.append(FramePredictions(frame, pboxes, scores, plabels))
        images.append({"id": frame})
        for b, c in zip(boxes, labels, strict=True):
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": frame, "category_id": int(c), "iscrowd": 0,
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        for b, c, s in zip(pboxes, plabels, scores, strict=True):
            dt_anns.append({"image_id": frame, "category_id": int(c), "score": float(s),
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "categories": [{"id": c} for c in range(3)], "annotations": gt_anns}
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dt_anns), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    result = detection_map(preds, gts)
    assert 0.0 < result["map"] < 1.0
    assert result["map"] == pytest.approx(evaluator.stats[0], abs=1e-9)
    assert result["map50"] == pytest.approx(evaluator.stats[1], abs=1e-9)
    assert result["map75"] == pytest.approx(evaluator.stats[2], abs=1e-9)


# ---------------------------------------------------------------------------------------------- tracking

A0, B0 = [0, 0, 10, 10], [100, 0, 110, 10]


def _tf(frame: int, gt_ids: list, gt_boxes: list, hyp_ids: list, hyp_boxes: list,
        ignore: list | None = None) -> TrackingFrame:
    return TrackingFrame(frame, np.array(gt_ids, int), np.array(gt_boxes, float).reshape(-1, 4),
                         np.array(hyp_ids, int), np.array(hyp_boxes, float).reshape(-1, 4),
                         None if ignore is None else np.array(ignore, bool))


def _sequence(extra_ignored: bool = False) -> list[TrackingFrame]:
    far = [300, 300, 310, 310]
    frames = [
        _tf(0, [1, 2], [A0, B0], [1, 2], [A0, B0]),
        _tf(1, [1, 2], [A0, B0], [1, 3], [A0, far]),  # B missed (FN), hyp 3 false positive
        _tf(2, [1, 2], [A0, B0], [4, 2], [A0, B0]),  # A now hyp 4: one identity switch
    ]
    if extra_ignored:
        ign = [200, 0, 220, 20]
        frames[1] = _tf(1, [1, 2, 9], [A0, B0, ign], [1, 3, 5], [A0, far, [201, 1, 221, 21]],
                        ignore=[False, False, True])
    return frames


def test_tracking_hand_computed_mota_idf1() -> None:
    result = tracking_metrics(_sequence())
    assert result["num_objects"] == 6
    assert result["num_misses"] == 1
    assert result["num_false_positives"] == 1
    assert result["num_switches"] == 1
    assert result["mota"] == pytest.approx(1 - 3 / 6)
    # best identity mapping 1<->1 (2 frames), 2<->2 (2 frames): IDTP 4; 6 GT + 6 hypothesis detections
    assert result["idf1"] == pytest.approx(2 * 4 / (6 + 6))
    assert result["motp"] == pytest.approx(1.0)


def test_tracking_ignored_gt_and_its_hypothesis_are_dropped() -> None:
    result = tracking_metrics(_sequence(extra_ignored=True))
    assert result["num_objects"] == 6
    assert result["num_false_positives"] == 1
    assert result["mota"] == pytest.approx(0.5)
    assert result["idf1"] == pytest.approx(8 / 12)


def test_tracking_without_gt_is_undefined_not_minus_infinity() -> None:
    result = tracking_metrics([_tf(0, [], [], [1], [A0])])
    assert np.isnan(result["mota"])
    assert result["num_false_positives"] == 1


def test_tracking_matches_motmetrics_directly() -> None:
    import motmetrics as mm

    rng = np.random.default_rng(1)
    frames = []
    acc = mm.MOTAccumulator(auto_id=False)
    positions = rng.uniform(0, 300, (4, 2))
    for t in range(8):
        positions += rng.normal(0, 3, positions.shape)
        gt = np.hstack([positions, positions + 20])
        visible = rng.uniform(size=4) > 0.15
        hyp = gt[visible] + rng.normal(0, 3, (int(visible.sum()), 4))
        hyp_ids = np.flatnonzero(visible) + 10 + (t > 4)  # ids change after frame 4: switches
        if t % 3 == 0:
            hyp = np.vstack([hyp, [[400, 400, 420, 420]]])
            hyp_ids = np.append(hyp_ids, 99)
        frames.append(TrackingFrame(t, np.arange(4), gt, hyp_ids, hyp))
        xywh = lambda b: np.hstack([b[:, :2], b[:, 2:] - b[:, :2]])  # noqa: E731
        iou = mm.distances.boxiou(xywh(gt)[:, None], xywh(hyp)[None, :])
        dist = np.where(1 - iou > 0.5, np.nan, 1 - iou)
        acc.update(list(range(4)), hyp_ids.tolist(), dist, frameid=t)
    ref = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches", "motp"], name="x").loc["x"]
    result = tracking_metrics(frames)
    assert result["num_switches"] > 0
    assert result["mota"] == pytest.approx(ref["mota"])
    assert result["idf1"] == pytest.approx(ref["idf1"])
    assert result["num_switches"] == ref["num_switches"]
    assert result["motp"] == pytest.approx(1 - ref["motp"])


# ---------------------------------------------------------------------------------------- classification


def test_top1_accuracy() -> None:
    assert top1_accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == pytest.approx(0.75)
    assert top1_accuracy([], []) == 0.0
    with pytest.raises(ValueError, match="as many"):
        top1_accuracy([1, 2], [1])


def test_match_predictions_to_gt_respects_iou_and_ignore() -> None:
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], float)
    pred = np.array([[41, 0, 51, 10], [0, 0, 10, 4], [20, 0, 30, 10], [0, 0, 10, 9]], float)
    pairs = match_predictions_to_gt(pred, gt, gt_ignore=np.array([False, False, True]))
    # pred0 sits on the ignored GT; pred1 IoU 0.4 < 0.5; pred3 IoU 0.9 wins GT0 one-to-one
    assert pairs == [(2, 1), (3, 0)]
    assert match_predictions_to_gt(np.zeros((0, 4)), gt) == []


def test_classification_accuracy_over_matched_objects() -> None:
    frames = [
        ClassifiedFrame(0, np.array([[0, 0, 10, 10], [20, 0, 30, 10], [90, 90, 99, 99]], float),
                        np.array([1, 5, 3]), np.array([[0, 0, 10, 10], [20, 0, 30, 10], [60, 0, 70, 10]], float),
                        np.array([1, 2, 4]), np.array([False, False, True])),
    ]
    result = classification_accuracy(frames)
    assert result["num_matched"] == 2
    assert result["num_gt"] == 2
    assert result["top1"] == pytest.approx(0.5)
    assert result["coverage"] == pytest.approx(1.0)
