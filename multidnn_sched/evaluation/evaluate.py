"""Task accuracy of the three default models over a bag (or generated frames) with ground truth.

Runs ``PerceptionPipeline`` frame by frame and scores: detector mAP (every detection >= the low score
threshold), tracker MOTA / IDF1 (confirmed tracks), classifier top-1 (attribute of each track matched to a
ground-truth object). Ground truth less than ``MIN_VISIBLE_FRACTION`` visible is ignored (neither TP nor FP).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multidnn_sched.evaluation.metrics import (
    ClassifiedFrame,
    FrameGroundTruth,
    FramePredictions,
    TrackingFrame,
    classification_accuracy,
    detection_map,
    tracking_metrics,
)
from multidnn_sched.exceptions import BagError
from multidnn_sched.models.checkpoints import WEIGHTS_DIR
from multidnn_sched.models.classifier import CLASSIFIER_INPUT_HW
from multidnn_sched.models.detector import DETECTOR_INPUT_HW
from multidnn_sched.models.embedding import EMBEDDER_INPUT_HW
from multidnn_sched.models.profiling import DEFAULT_CROPS_PER_FRAME, model_cost
from multidnn_sched.models.zoo import DefaultModels, PerceptionPipeline, load_default_models
from multidnn_sched.scenes.generator import GroundTruthObject, SceneConfig, SceneGenerator, hard_config

MIN_VISIBLE_FRACTION: float = 0.5


@dataclass
class LabelledFrame:
    """A frame with its ground truth (from a bag or the generator)."""

    image: np.ndarray
    objects: list[GroundTruthObject]


def bag_frames(path: Path, max_frames: int | None = None) -> Iterator[LabelledFrame]:
    """Frames of a bag written by ``multidnn-scenes``.

    Raises:
        BagError: unreadable / truncated bag, no image topic, no ground-truth topic, or no image message.
    """
    from multidnn_sched.scenes.bag import iter_bag_frames

    count = 0
    for frame in iter_bag_frames(path):
        if max_frames is not None and count >= max_frames:
            return
        if frame.objects is None:
            raise BagError(
                f"{path}: bag has no ground-truth topic; evaluation needs one (write the bag with multidnn-scenes)"
            )
        count += 1
        yield LabelledFrame(frame.image, frame.objects)
    if count == 0:
        raise BagError(f"{path}: bag holds no image message to evaluate")


def generated_frames(
    seed: int, num_frames: int, config: SceneConfig | None = None
) -> Iterator[LabelledFrame]:
    """Frames straight from ``SceneGenerator`` (same content as a bag written with that seed and profile).

    ``config`` defaults to the hard profile (``hard_config()``), the evaluation default.
    """
    for frame in SceneGenerator(config or hard_config(), seed).frames(num_frames):
        yield LabelledFrame(frame.image, frame.objects)


def evaluate_frames(frames: Iterable[LabelledFrame], pipeline: PerceptionPipeline) -> dict[str, Any]:
    """Run the pipeline over one sequence and compute the task metrics.

    Returns:
        ``{"detector": {"map50", "map", ...}, "tracker": {"mota", "idf1", ...}, "classifier": {"top1", ...},
        "frames": int, "pipeline_latency_ms": {stage: mean}}``.
    """
    pipeline.reset()
    det_preds: list[FramePredictions] = []
    det_gt: list[FrameGroundTruth] = []
    track_frames: list[TrackingFrame] = []
    cls_frames: list[ClassifiedFrame] = []
    latency_sum: dict[str, float] = {}
    index = -1
    for index, frame in enumerate(frames):
        result = pipeline(frame.image)
        for stage, ms in result.latency_ms.items():
            latency_sum[stage] = latency_sum.get(stage, 0.0) + ms
        gt_boxes = np.array([o.box_xyxy for o in frame.objects], np.float64).reshape(-1, 4)
        visible = np.array([o.visible_fraction for o in frame.objects], np.float64)
        ignore = visible < MIN_VISIBLE_FRACTION
        det = result.detections
        det_preds.append(FramePredictions(index, det.boxes_xyxy, det.scores, det.labels))
        det_gt.append(
            FrameGroundTruth(index, gt_boxes, np.array([o.class_id for o in frame.objects], np.int64), ignore)
        )
        hyp_boxes = np.array([t.box_xyxy for t in result.tracks], np.float64).reshape(-1, 4)
        track_frames.append(
            TrackingFrame(
                index,
                np.array([o.track_id for o in frame.objects], np.int64),
                gt_boxes,
                np.array([t.track_id for t in result.tracks], np.int64),
                hyp_boxes,
                ignore,
            )
        )
        cls_frames.append(
            ClassifiedFrame(
                index,
                hyp_boxes,
                np.array([t.attribute for t in result.tracks], np.int64),
                gt_boxes,
                np.array([o.attribute_id for o in frame.objects], np.int64),
                ignore,
            )
        )
    num_frames = index + 1
    if num_frames == 0:
        raise BagError("no frames to evaluate: the input holds no image message")
    return {
        "detector": detection_map(det_preds, det_gt),
        "tracker": tracking_metrics(track_frames),
        "classifier": classification_accuracy(cls_frames),
        "frames": num_frames,
        "pipeline_latency_ms": {k: round(v / num_frames, 2) for k, v in latency_sum.items()},
    }


def model_costs(models: DefaultModels, repeats: int = 10) -> dict[str, dict[str, Any]]:
    """Solo latency and GMACs of each network on its per-frame input (6 crops for embedder / classifier)."""
    examples = {
        "detector": torch.zeros((1, 3, *DETECTOR_INPUT_HW)),
        "embedder": torch.zeros((DEFAULT_CROPS_PER_FRAME, 3, *EMBEDDER_INPUT_HW)),
        "classifier": torch.zeros((DEFAULT_CROPS_PER_FRAME, 3, *CLASSIFIER_INPUT_HW)),
    }
    costs: dict[str, dict[str, Any]] = {}
    for name, model in models.as_dict().items():
        device = next(model.parameters()).device
        cost = model_cost(model, examples[name].to(device), warmup=3, repeats=repeats)
        costs[name] = {
            "solo_latency_ms": cost.solo_latency_ms,
            "p90_latency_ms": cost.p90_latency_ms,
            "gmacs": cost.gmacs,
            "params_m": cost.params_m,
            "input_shape": cost.input_shape,
            "threads": cost.threads,
        }
    return costs


def evaluate(
    frames: Iterable[LabelledFrame],
    weights_dir: Path = WEIGHTS_DIR,
    device: str = "cpu",
    profile: bool = True,
) -> dict[str, Any]:
    """Load the default models, evaluate ``frames``, optionally add solo cost figures under ``"models"``."""
    iterator = iter(frames)
    first = next(iterator, None)  # read (and validate) the input before the slower model loading
    if first is None:
        raise BagError("no frames to evaluate: the input holds no image message")
    models = load_default_models(device, weights_dir)
    start = time.perf_counter()
    report = evaluate_frames(itertools.chain([first], iterator), PerceptionPipeline(models, device=device))
    report["wall_time_sec"] = round(time.perf_counter() - start, 1)
    if profile:
        report["models"] = model_costs(models)
    return report
