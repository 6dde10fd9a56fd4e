"""Default model zoo: constructors, shipped weights, and the per-frame perception pipeline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.ops import nms

from multidnn_sched.models.checkpoints import WEIGHTS_DIR, load_checkpoint
from multidnn_sched.models.classifier import CLASSIFIER_INPUT_HW, AttributeClassifier
from multidnn_sched.models.crops import crop_batch
from multidnn_sched.models.detector import Detections, Detector, detector_postprocess, detector_preprocess
from multidnn_sched.models.embedding import EMBEDDER_INPUT_HW, Embedder
from multidnn_sched.models.tracker import Tracker, TrackerConfig
from multidnn_sched.scenes.generator import ATTRIBUTES, CLASSES

NUM_CLASSES: int = len(CLASSES)
NUM_ATTRIBUTES: int = len(ATTRIBUTES)


def build_detector() -> Detector:
    """ResNet-18 + FPN + anchor-free head over ``CLASSES``, random init."""
    return Detector(NUM_CLASSES)


def build_embedder() -> Embedder:
    """ResNet-18 (to layer3) appearance embedding network, 128-d, random init."""
    return Embedder()


def build_classifier() -> AttributeClassifier:
    """RegNetY-400MF attribute classifier over ``ATTRIBUTES``, random init."""
    return AttributeClassifier(NUM_ATTRIBUTES)


@dataclass
class DefaultModels:
    """The three default networks, in eval mode on one device."""

    detector: Detector
    embedder: Embedder
    classifier: AttributeClassifier

    def as_dict(self) -> dict[str, nn.Module]:
        return {"detector": self.detector, "embedder": self.embedder, "classifier": self.classifier}


def load_default_models(device: str | torch.device = "cpu", weights_dir: Path = WEIGHTS_DIR) -> DefaultModels:
    """Build the three networks and load the shipped (sha256-verified) weights.

    Args:
        device: torch device for the models.
        weights_dir: directory with ``manifest.json`` and the safetensors files.

    Raises:
        CheckpointError: a file is missing, fails its sha256 check, or has the wrong tensors / shapes.
    """
    models = DefaultModels(build_detector(), build_embedder(), build_classifier())
    for name, model in models.as_dict().items():
        load_checkpoint(model, name, weights_dir)
        model.to(device).eval()
    return models


@dataclass
class TrackResult:
    """One tracked object with its attribute.

    Attributes:
        track_id: stable tracker id.
        box_xyxy: ``float32[4]`` (x1, y1, x2, y2), pixels in the original image.
        label: class id (index into ``CLASSES``).
        score: detection score of the matched detection.
        attribute: attribute id (index into ``ATTRIBUTES``).
        attribute_score: softmax probability of ``attribute``.
    """

    track_id: int
    box_xyxy: np.ndarray
    label: int
    score: float
    attribute: int
    attribute_score: float


@dataclass
class FrameResult:
    """Output of the perception pipeline for one frame.

    Attributes:
        detections: every decoded detection (score >= the pipeline's ``score_threshold``).
        tracks: confirmed tracks of this frame with their attributes.
        latency_ms: wall time per stage (``detector``, ``embedder``, ``tracker``, ``classifier``).
    """

    detections: Detections
    tracks: list[TrackResult]
    latency_ms: dict[str, float] = field(default_factory=dict)


class PerceptionPipeline:
    """detect -> crop -> embed -> track -> crop -> classify, on one frame at a time (sequential reference).

    Args:
        models: the three networks (``load_default_models()`` when ``None``).
        tracker_config: DeepSORT parameters (defaults when ``None``).
        score_threshold: minimum detection score reported in ``FrameResult.detections`` (low, for mAP).
        track_score_threshold: minimum detection score handed to the tracker.
        nms_iou_threshold: per-class NMS IoU.
        device: torch device the models live on.
        max_detections: keep at most this many detections per frame (highest scores).
        track_nms_iou_threshold: class-agnostic NMS IoU applied to the tracker's input (one object detected
            as two classes at one place must not start two tracks).
    """

    def __init__(
        self,
        models: DefaultModels | None = None,
        tracker_config: TrackerConfig | None = None,
        score_threshold: float = 0.05,
        track_score_threshold: float = 0.4,
        nms_iou_threshold: float = 0.5,
        device: str | torch.device = "cpu",
        max_detections: int = 100,
        track_nms_iou_threshold: float = 0.6,
    ) -> None:
        self.models = models if models is not None else load_default_models(device)
        self.tracker = Tracker(tracker_config)
        self.score_threshold = score_threshold
        self.track_score_threshold = track_score_threshold
        self.nms_iou_threshold = nms_iou_threshold
        self.device = torch.device(device)
        self.max_detections = max_detections
        self.track_nms_iou_threshold = track_nms_iou_threshold

    def reset(self) -> None:
        """Start a new sequence (forget tracks)."""
        self.tracker.reset()

    @torch.inference_mode()
    def detect(self, image_rgb_uint8: np.ndarray) -> Detections:
        """Run the detector on one ``uint8[H, W, 3]`` RGB frame."""
        height, width = image_rgb_uint8.shape[:2]
        outputs = self.models.detector(detector_preprocess(image_rgb_uint8).to(self.device))
        return detector_postprocess(
            outputs, self.score_threshold, self.nms_iou_threshold, (width, height), self.max_detections
        )

    @torch.inference_mode()
    def embed(self, image_rgb_uint8: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Appearance embeddings ``float32[N, 128]`` of the boxed objects."""
        if len(boxes_xyxy) == 0:
            return np.zeros((0, self.models.embedder.embedding_dim), np.float32)
        crops = crop_batch(image_rgb_uint8, boxes_xyxy, EMBEDDER_INPUT_HW).to(self.device)
        return self.models.embedder(crops).float().cpu().numpy()

    @torch.inference_mode()
    def classify(self, image_rgb_uint8: np.ndarray, boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Attribute ids ``int64[N]`` and their softmax scores ``float32[N]`` for the boxed objects."""
        if len(boxes_xyxy) == 0:
            return np.zeros((0,), np.int64), np.zeros((0,), np.float32)
        crops = crop_batch(image_rgb_uint8, boxes_xyxy, CLASSIFIER_INPUT_HW).to(self.device)
        probs = torch.softmax(self.models.classifier(crops).float(), dim=1).cpu()
        scores, ids = probs.max(dim=1)
        return ids.numpy().astype(np.int64), scores.numpy().astype(np.float32)

    def tracker_inputs(self, detections: Detections) -> Detections:
        """Detections handed to the tracker: score >= ``track_score_threshold``, class-agnostic NMS."""
        keep = np.flatnonzero(detections.scores >= self.track_score_threshold)
        if keep.size > 1:
            order = nms(
                torch.from_numpy(detections.boxes_xyxy[keep]),
                torch.from_numpy(detections.scores[keep]),
                self.track_nms_iou_threshold,
            )
            keep = keep[order.numpy()]
        return Detections(detections.boxes_xyxy[keep], detections.scores[keep], detections.labels[keep])

    def __call__(self, image_rgb_uint8: np.ndarray) -> FrameResult:
        """Process one frame (frames of one sequence must come in order)."""
        latency: dict[str, float] = {}
        t0 = time.perf_counter()
        detections = self.detect(image_rgb_uint8)
        t1 = time.perf_counter()
        inputs = self.tracker_inputs(detections)
        embeddings = self.embed(image_rgb_uint8, inputs.boxes_xyxy)
        t2 = time.perf_counter()
        tracks = self.tracker.update(inputs.boxes_xyxy, inputs.scores, inputs.labels, embeddings)
        t3 = time.perf_counter()
        track_boxes = np.array([t.box_xyxy for t in tracks], np.float32).reshape(-1, 4)
        attributes, attribute_scores = self.classify(image_rgb_uint8, track_boxes)
        t4 = time.perf_counter()
        latency.update(
            detector=(t1 - t0) * 1e3,
            embedder=(t2 - t1) * 1e3,
            tracker=(t3 - t2) * 1e3,
            classifier=(t4 - t3) * 1e3,
        )
        results = [
            TrackResult(t.track_id, t.box_xyxy, t.label, t.score, int(a), float(s))
            for t, a, s in zip(tracks, attributes, attribute_scores, strict=True)
        ]
        return FrameResult(detections, results, latency)
