"""Task metrics: detection mAP (pycocotools), tracking MOTA / IDF1 (motmetrics), classification top-1.

All boxes are ``(x1, y1, x2, y2)`` in pixels (``boxes_xyxy``), as numpy arrays. Ground truth that the scene
generator marks as *ignore* (e.g. an object less than half visible) is neither a true positive nor a false
positive, and is not counted as a miss:

- detection: ignored GT become COCO ``iscrowd=1`` regions, so a detection on one is discarded by COCOeval;
- tracking: hypotheses matched (Hungarian, IoU >= 0.5) to an ignored GT are removed before accumulation, as the
  MOTChallenge devkit does, and the ignored GT are removed too;
- classification: only predictions matched to non-ignored GT are scored.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

MATCH_IOU_THRESHOLD = 0.5
"""IoU a prediction needs with a GT box to be matched (tracking, classification), PASCAL / MOTChallenge value."""


@dataclass
class FramePredictions:
    """Detections of one frame.

    Attributes:
        frame_index: frame number; matched with ``FrameGroundTruth.frame_index``.
        boxes_xyxy: float array [N, 4] (x1, y1, x2, y2), pixels.
        scores: float array [N], confidence.
        labels: int array [N], class ids.
    """

    frame_index: int
    boxes_xyxy: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class FrameGroundTruth:
    """Ground truth of one frame.

    Attributes:
        frame_index: frame number.
        boxes_xyxy: float array [M, 4] (x1, y1, x2, y2), pixels.
        labels: int array [M], class ids.
        ignore: bool array [M]; ``True``: the object is neither a TP nor an FP target (``None``: none ignored).
        visible_fraction: float array [M] in [0, 1] (``None``: unknown). Objects below the metric's
            visibility threshold are ignored as well.
    """

    frame_index: int
    boxes_xyxy: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray | None = None
    visible_fraction: np.ndarray | None = None


@dataclass
class TrackingFrame:
    """Ground truth and tracker output of one frame.

    Attributes:
        frame_index: frame number (frames are accumulated in the order given).
        gt_ids: int array [M], ground-truth track ids.
        gt_boxes_xyxy: float array [M, 4], pixels.
        hyp_ids: int array [K], tracker ids.
        hyp_boxes_xyxy: float array [K, 4], pixels.
        gt_ignore: bool array [M] (``None``: none ignored).
    """

    frame_index: int
    gt_ids: np.ndarray
    gt_boxes_xyxy: np.ndarray
    hyp_ids: np.ndarray
    hyp_boxes_xyxy: np.ndarray
    gt_ignore: np.ndarray | None = None


@dataclass
class ClassifiedFrame:
    """Per-object classifier output and ground truth of one frame.

    Attributes:
        frame_index: frame number.
        pred_boxes_xyxy: float array [K, 4], boxes of the (tracked) objects that were classified, pixels.
        pred_labels: int array [K], predicted class / attribute.
        gt_boxes_xyxy: float array [M, 4], pixels.
        gt_labels: int array [M], true class / attribute.
        gt_ignore: bool array [M] (``None``: none ignored).
    """

    frame_index: int
    pred_boxes_xyxy: np.ndarray
    pred_labels: np.ndarray
    gt_boxes_xyxy: np.ndarray
    gt_labels: np.ndarray
    gt_ignore: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------- helpers


def _boxes(name: str, boxes: np.ndarray) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name}: expected boxes of shape [N, 4] (x1, y1, x2, y2), got {array.shape}")
    return array


def _mask(name: str, mask: np.ndarray | None, length: int) -> np.ndarray:
    if mask is None:
        return np.zeros(length, dtype=bool)
    array = np.asarray(mask, dtype=bool).reshape(-1)
    if array.shape[0] != length:
        raise ValueError(f"{name}: expected {length} flags (one per GT box), got {array.shape[0]}")
    return array


def box_iou_xyxy(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU.

    Args:
        boxes_a: [N, 4] (x1, y1, x2, y2).
        boxes_b: [K, 4] (x1, y1, x2, y2).

    Returns:
        IoU matrix [N, K] (area = width * height, no +1 pixel convention, as pycocotools and motmetrics).
    """
    a = _boxes("boxes_a", boxes_a)
    b = _boxes("boxes_b", boxes_b)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersection / union, 0.0)
    return iou


def match_predictions_to_gt(
    pred_boxes_xyxy: np.ndarray,
    gt_boxes_xyxy: np.ndarray,
    gt_ignore: np.ndarray | None = None,
    iou_threshold: float = MATCH_IOU_THRESHOLD,
) -> list[tuple[int, int]]:
    """One-to-one matching of predictions to non-ignored GT (Hungarian on IoU, pairs need IoU >= threshold).

    Args:
        pred_boxes_xyxy: [K, 4] predicted boxes, pixels.
        gt_boxes_xyxy: [M, 4] GT boxes, pixels.
        gt_ignore: bool [M]; ignored GT are never matched (``None``: none ignored).
        iou_threshold: minimum IoU of a pair.

    Returns:
        ``(pred_index, gt_index)`` pairs sorted by ``pred_index``; indices into the given arrays.
    """
    preds = _boxes("pred_boxes_xyxy", pred_boxes_xyxy)
    gts = _boxes("gt_boxes_xyxy", gt_boxes_xyxy)
    ignore = _mask("gt_ignore", gt_ignore, gts.shape[0])
    keep = np.flatnonzero(~ignore)
    iou = box_iou_xyxy(preds, gts[keep])
    if iou.size == 0:
        return []
    # Pairs under the threshold get a cost that no valid assignment can prefer; dropped afterwards.
    cost = np.where(iou >= iou_threshold, 1.0 - iou, 1e6)
    rows, cols = linear_sum_assignment(cost)
    pairs = [(int(r), int(keep[c])) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= iou_threshold]
    return sorted(pairs)


# --------------------------------------------------------------------------------------------- detection


def _xywh(box: np.ndarray) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def detection_map(
    predictions: Sequence[FramePredictions],
    ground_truth: Sequence[FrameGroundTruth],
    iou_ignore_below_visible: float = 0.5,
    max_detections_per_frame: int = 100,
) -> dict[str, float]:
    """COCO box mAP with pycocotools (101-point interpolated AP, averaged over classes that have GT).

    Args:
        predictions: detections per frame (frames absent here have no detections).
        ground_truth: GT per frame; the set of evaluated frames is the union of both sequences' frames.
        iou_ignore_below_visible: GT whose ``visible_fraction`` is below this value is ignored (in addition to
            ``ignore``); has no effect when the GT carries no ``visible_fraction``.
        max_detections_per_frame: highest-scoring detections kept per frame (COCO's ``maxDets``).

    Returns:
        ``{"map50": AP@IoU0.5, "map": AP@IoU[0.5:0.95:0.05], "map75": AP@IoU0.75, "num_gt": int,
        "num_predictions": int}``. AP values are 0.0 when there is no non-ignored GT or no prediction.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    frame_ids = sorted({int(p.frame_index) for p in predictions} | {int(g.frame_index) for g in ground_truth})
    gt_annotations: list[dict] = []
    category_ids: set[int] = set()
    num_gt = 0
    for frame in ground_truth:
        boxes = _boxes(f"ground_truth[frame {frame.frame_index}].boxes_xyxy", frame.boxes_xyxy)
        labels = np.asarray(frame.labels).reshape(-1)
        if labels.shape[0] != boxes.shape[0]:
            raise ValueError(f"ground_truth[frame {frame.frame_index}]: {boxes.shape[0]} boxes but "
                             f"{labels.shape[0]} labels")
        ignore = _mask(f"ground_truth[frame {frame.frame_index}].ignore", frame.ignore, boxes.shape[0])
        if frame.visible_fraction is not None:
            visible = np.asarray(frame.visible_fraction, dtype=np.float64).reshape(-1)
            ignore = ignore | (visible < iou_ignore_below_visible)
        for box, label, ignored in zip(boxes, labels, ignore, strict=True):
            xywh = _xywh(box)
            category_ids.add(int(label))
            num_gt += int(not ignored)
            gt_annotations.append({
                "id": len(gt_annotations) + 1,  # COCOeval treats id 0 as "unmatched"
                "image_id": int(frame.frame_index), "category_id": int(label), "bbox": xywh,
                "area": xywh[2] * xywh[3], "iscrowd": int(bool(ignored)),
            })
    dt_annotations: list[dict] = []
    for frame in predictions:
        boxes = _boxes(f"predictions[frame {frame.frame_index}].boxes_xyxy", frame.boxes_xyxy)
        scores = np.asarray(frame.scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(frame.labels).reshape(-1)
        if not (scores.shape[0] == labels.shape[0] == boxes.shape[0]):
            raise ValueError(f"predictions[frame {frame.frame_index}]: expected as many scores and labels as "
                             f"boxes ({boxes.shape[0]}), got {scores.shape[0]} scores, {labels.shape[0]} labels")
        for box, score, label in zip(boxes, scores, labels, strict=True):
            xywh = _xywh(box)
            category_ids.add(int(label))
            dt_annotations.append({
                "id": len(dt_annotations) + 1, "image_id": int(frame.frame_index), "category_id": int(label),
                "bbox": xywh, "area": xywh[2] * xywh[3], "score": float(score), "iscrowd": 0,
            })
    result = {"map50": 0.0, "map": 0.0, "map75": 0.0, "num_gt": num_gt, "num_predictions": len(dt_annotations)}
    if num_gt == 0 or not dt_annotations:
        return result
    images = [{"id": i} for i in frame_ids]
    categories = [{"id": c} for c in sorted(category_ids)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "categories": categories, "annotations": gt_annotations}
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = {"images": images, "categories": categories, "annotations": dt_annotations}
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.maxDets = [1, 10, int(max_detections_per_frame)]
        evaluator.evaluate()
        evaluator.accumulate()
    # precision: [T iou thresholds, R recall points, K classes, A area ranges, M maxDets]; -1 = class w/o GT.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    thresholds = evaluator.params.iouThrs

    def mean_ap(values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(np.mean(valid)) if valid.size else 0.0

    result["map"] = mean_ap(precision)
    result["map50"] = mean_ap(precision[np.isclose(thresholds, 0.5)])
    result["map75"] = mean_ap(precision[np.isclose(thresholds, 0.75)])
    return result


# ---------------------------------------------------------------------------------------------- tracking


def _iou_distance(gt_boxes_xyxy: np.ndarray, hyp_boxes_xyxy: np.ndarray, max_distance: float) -> np.ndarray:
    """motmetrics' IoU distance (1 - IoU, NaN = do-not-pair beyond ``max_distance``), computed here because
    ``motmetrics.distances.iou_matrix`` 1.4 calls ``np.asfarray``, which numpy 2 removed."""
    distance = 1.0 - box_iou_xyxy(gt_boxes_xyxy, hyp_boxes_xyxy)
    return np.where(distance > max_distance, np.nan, distance)


TRACKING_METRICS = (
    "mota", "motp", "idf1", "idp", "idr", "precision", "recall", "num_switches", "num_false_positives",
    "num_misses", "num_objects", "num_predictions", "num_matches", "mostly_tracked", "mostly_lost",
    "num_fragmentations", "num_unique_objects",
)


def tracking_metrics(frames: Sequence[TrackingFrame], iou_threshold: float = MATCH_IOU_THRESHOLD) -> dict:
    """CLEAR-MOT and identity metrics with motmetrics (IoU distance, pairs need IoU >= ``iou_threshold``).

    Args:
        frames: per-frame GT and tracker output, in time order.
        iou_threshold: minimum IoU of a GT / hypothesis pair (motmetrics ``max_iou = 1 - iou_threshold``).

    Returns:
        ``{"mota", "motp", "idf1", "idp", "idr", "precision", "recall", "num_switches",
        "num_false_positives", "num_misses", "num_objects", ...}``; ``motp`` is the mean IoU of matched pairs
        (MOTChallenge convention, higher is better), not motmetrics' mean distance. Floats are NaN where
        undefined (e.g. no GT at all).
    """
    import motmetrics as mm

    accumulator = mm.MOTAccumulator(auto_id=False)
    max_distance = 1.0 - iou_threshold
    for step, frame in enumerate(frames):
        gt_boxes = _boxes(f"frames[{frame.frame_index}].gt_boxes_xyxy", frame.gt_boxes_xyxy)
        hyp_boxes = _boxes(f"frames[{frame.frame_index}].hyp_boxes_xyxy", frame.hyp_boxes_xyxy)
        gt_ids = np.asarray(frame.gt_ids).reshape(-1)
        hyp_ids = np.asarray(frame.hyp_ids).reshape(-1)
        if gt_ids.shape[0] != gt_boxes.shape[0] or hyp_ids.shape[0] != hyp_boxes.shape[0]:
            raise ValueError(f"frames[{frame.frame_index}]: expected one id per box, got {gt_ids.shape[0]} GT ids "
                             f"for {gt_boxes.shape[0]} boxes, {hyp_ids.shape[0]} hyp ids for "
                             f"{hyp_boxes.shape[0]} boxes")
        ignore = _mask(f"frames[{frame.frame_index}].gt_ignore", frame.gt_ignore, gt_boxes.shape[0])
        if ignore.any() and hyp_boxes.shape[0]:
            # MOTChallenge preprocessing: match against all GT; hypotheses that land on an ignored GT vanish.
            pairs = match_predictions_to_gt(hyp_boxes, gt_boxes, None, iou_threshold)
            drop = {p for p, g in pairs if ignore[g]}
            keep_hyp = np.array([i not in drop for i in range(hyp_boxes.shape[0])], dtype=bool)
            hyp_boxes, hyp_ids = hyp_boxes[keep_hyp], hyp_ids[keep_hyp]
        gt_boxes, gt_ids = gt_boxes[~ignore], gt_ids[~ignore]
        distances = _iou_distance(gt_boxes, hyp_boxes, max_distance)
        accumulator.update(gt_ids.tolist(), hyp_ids.tolist(), distances, frameid=step)
    host = mm.metrics.create()
    summary = host.compute(accumulator, metrics=list(TRACKING_METRICS), name="all")
    row = summary.loc["all"]
    result: dict[str, float | int] = {}
    for key in TRACKING_METRICS:
        value = row[key]
        result[key] = int(value) if key.startswith("num_") or key.startswith("mostly") else float(value)
    result["motp"] = 1.0 - float(row["motp"]) if not np.isnan(row["motp"]) else float("nan")
    if result["num_objects"] == 0:
        result["mota"] = float("nan")  # motmetrics gives -inf with false positives and no GT
    return result


# ---------------------------------------------------------------------------------------- classification


def top1_accuracy(predicted_labels: Sequence[int] | np.ndarray, true_labels: Sequence[int] | np.ndarray) -> float:
    """Fraction of equal labels.

    Args:
        predicted_labels: [N] predicted class ids.
        true_labels: [N] true class ids.

    Returns:
        Accuracy in [0, 1]; 0.0 for empty input.
    """
    predicted = np.asarray(predicted_labels).reshape(-1)
    truth = np.asarray(true_labels).reshape(-1)
    if predicted.shape != truth.shape:
        raise ValueError(f"expected as many predicted as true labels, got {predicted.shape[0]} and "
                         f"{truth.shape[0]}")
    if predicted.size == 0:
        return 0.0
    return float(np.mean(predicted == truth))


def classification_accuracy(
    frames: Sequence[ClassifiedFrame], iou_threshold: float = MATCH_IOU_THRESHOLD
) -> dict[str, float | int]:
    """Top-1 accuracy of per-object predictions matched (IoU >= threshold) to non-ignored GT.

    Args:
        frames: per-frame classified objects and GT.
        iou_threshold: minimum IoU for a prediction to be scored against a GT object.

    Returns:
        ``{"top1": float, "num_matched": int, "num_gt": int (non-ignored), "coverage": num_matched / num_gt}``.
        Unmatched predictions and unmatched GT do not enter ``top1``; ``coverage`` tells how many GT were scored.
    """
    predicted: list[int] = []
    truth: list[int] = []
    num_gt = 0
    for frame in frames:
        gt_labels = np.asarray(frame.gt_labels).reshape(-1)
        pred_labels = np.asarray(frame.pred_labels).reshape(-1)
        ignore = _mask(f"frames[{frame.frame_index}].gt_ignore", frame.gt_ignore, gt_labels.shape[0])
        num_gt += int((~ignore).sum())
        for p, g in match_predictions_to_gt(frame.pred_boxes_xyxy, frame.gt_boxes_xyxy, ignore, iou_threshold):
            predicted.append(int(pred_labels[p]))
            truth.append(int(gt_labels[g]))
    return {
        "top1": top1_accuracy(predicted, truth),
        "num_matched": len(predicted),
        "num_gt": num_gt,
        "coverage": len(predicted) / num_gt if num_gt else 0.0,
    }
