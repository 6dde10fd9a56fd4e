"""Pre- and post-processing the nodes wrap around each model, as injectable records.

The nodes never import the networks: they call a task's ``preprocess`` (numpy frame -> model input carry),
submit the carry to the runtime, and call ``postprocess`` on the output. :func:`default_tasks` wires the
default zoo's functions; tests pass tiny fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from multidnn_sched.models.detector import Detections

Carry = Any


@dataclass
class TrackOutput:
    """One confirmed track in one frame.

    Attributes:
        track_id: stable id (published as ``Detection2D.id``).
        box_xyxy: ``(x1, y1, x2, y2)``, pixels.
        score: detection score of the matched detection.
        label: class index.
    """

    track_id: int
    box_xyxy: tuple[float, float, float, float]
    score: float
    label: int


class TrackerLike(Protocol):
    """A multi-object tracker stepped once per frame, in frame order."""

    def update(self, detections: Detections, embeddings: np.ndarray) -> list[TrackOutput]: ...


TrackerFactory = Callable[[dict[str, Any]], TrackerLike]
"""Tracker parameters (``max_age_frames``, ``min_hits``...) -> a fresh tracker."""


@dataclass
class DetectorTask:
    """Detector pre/post-processing.

    Attributes:
        preprocess: RGB ``uint8[H, W, 3]`` -> model input.
        postprocess: ``(output, score_threshold, nms_iou_threshold, (width, height), max_detections)`` ->
            ``Detections`` in image pixels.
        class_names: class index -> name (``ObjectHypothesis.class_id``).
    """

    preprocess: Callable[[np.ndarray], Carry]
    postprocess: Callable[[Carry, float, float, tuple[int, int], int], Detections]
    class_names: Sequence[str]


@dataclass
class CropTask:
    """A model that runs on crops of objects (the embedder, the attribute classifier).

    Attributes:
        preprocess: ``(RGB frame, boxes_xyxy float[N, 4])`` -> model input (``N`` crops).
        full_frame: RGB frame -> model input of ONE crop covering the frame (classifier full-frame mode).
        labels: output index -> name (classifier); empty for the embedder.
    """

    preprocess: Callable[[np.ndarray, np.ndarray], Carry]
    full_frame: Callable[[np.ndarray], Carry]
    labels: Sequence[str] = ()


@dataclass
class PerceptionTasks:
    """Everything model-specific the three nodes need.

    Attributes:
        detector: detector pre/post-processing.
        embedder: appearance-embedding crops.
        classifier: attribute-classifier crops and labels.
        make_tracker: ``(tracker parameters) -> TrackerLike`` (a fresh tracker state).
    """

    detector: DetectorTask
    embedder: CropTask
    classifier: CropTask
    make_tracker: TrackerFactory


def default_tasks() -> PerceptionTasks:
    """The default zoo's pre/post-processing and the DeepSORT tracker."""
    from multidnn_sched.models.classifier import CLASSIFIER_INPUT_HW
    from multidnn_sched.models.crops import crop_batch
    from multidnn_sched.models.detector import detector_postprocess, detector_preprocess
    from multidnn_sched.models.embedding import EMBEDDER_INPUT_HW
    from multidnn_sched.scenes.generator import ATTRIBUTES, CLASSES

    def postprocess(output: Carry, score: float, nms: float, size: tuple[int, int], top_k: int) -> Detections:
        return detector_postprocess(
            output, score_threshold=score, nms_iou_threshold=nms, image_size=size, max_detections=top_k
        )

    def whole(frame: np.ndarray, size_hw: tuple[int, int]) -> Carry:
        h, w = frame.shape[:2]
        return crop_batch(
            frame, np.array([[0.0, 0.0, float(w), float(h)]], np.float32), size_hw, pad_fraction=0.0
        )

    return PerceptionTasks(
        detector=DetectorTask(detector_preprocess, postprocess, CLASSES),
        embedder=CropTask(
            lambda frame, boxes: crop_batch(frame, boxes, EMBEDDER_INPUT_HW),
            lambda frame: whole(frame, EMBEDDER_INPUT_HW),
        ),
        classifier=CropTask(
            lambda frame, boxes: crop_batch(frame, boxes, CLASSIFIER_INPUT_HW),
            lambda frame: whole(frame, CLASSIFIER_INPUT_HW),
            ATTRIBUTES,
        ),
        make_tracker=make_default_tracker,
    )


TRACKER_CONFIG_FIELDS: dict[str, str] = {
    "max_age_frames": "max_age",
    "min_hits": "n_init",
    "max_cosine_distance": "max_cosine_distance",
    "max_iou_distance": "max_iou_distance",
    "appearance_weight": "appearance_weight",
}
"""Tracker node parameter -> ``TrackerConfig`` field."""


def make_default_tracker(params: dict[str, Any]) -> TrackerLike:
    """The models package's DeepSORT tracker behind :class:`TrackerLike`."""
    from multidnn_sched.models.tracker import Tracker, TrackerConfig

    config = TrackerConfig(
        **{field: params[name] for name, field in TRACKER_CONFIG_FIELDS.items() if name in params}
    )
    return _DeepSortAdapter(Tracker(config))


class _DeepSortAdapter:
    def __init__(self, tracker: Any) -> None:
        self._tracker = tracker

    def update(self, detections: Detections, embeddings: np.ndarray) -> list[TrackOutput]:
        features = embeddings if len(detections) else None
        tracks = self._tracker.update(detections.boxes_xyxy, detections.scores, detections.labels, features)
        return [
            TrackOutput(int(t.track_id), tuple(float(v) for v in t.box_xyxy), float(t.score), int(t.label))
            for t in tracks
        ]
