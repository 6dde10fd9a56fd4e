"""Per-model benchmark tasks: the model, its per-frame input tensors, and its task metric.

Every mode of the benchmark feeds the same input tensors (pre-computed here, outside the timed region) and
scores the outputs of the frames it actually processed with the model's own task metric:

* ``detector``   — input: the frame pre-processed to ``[1, 3, 240, 320]``; metric: mAP@0.5 against the GT.
* ``embedder``   — input: crops of the frame's visible GT objects; metric: re-identification top-1 — for each
  crop, is its nearest neighbour (cosine) among the previous processed frame's crops the same track?
  That is exactly what the tracker's appearance association relies on.
* ``classifier`` — input: crops of the frame's visible GT objects; metric: attribute top-1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from multidnn_sched.bench.workload import SceneSource

VISIBLE_FRACTION_MIN: float = 0.5
"""Objects less visible than this are neither cropped nor scored (same rule as the evaluation's ignore flag)."""

REID_MAX_GAP_FRAMES: int = 3
"""The re-identification metric pairs a processed frame with the previous processed one at most this far back."""


@dataclass
class FrameTruth:
    """Ground truth of one unique frame: visible objects only."""

    boxes_xyxy: np.ndarray  # float32[M, 4], pixels
    class_ids: np.ndarray  # int64[M]
    attribute_ids: np.ndarray  # int64[M]
    track_ids: np.ndarray  # int64[M]
    all_boxes_xyxy: np.ndarray  # every object, for the detector's ignore regions
    all_class_ids: np.ndarray
    all_visible: np.ndarray


@dataclass
class TaskInputs:
    """Pre-computed inputs of one model for every unique frame, plus what its metric needs."""

    name: str
    inputs: list[Tensor]
    truth: list[FrameTruth]
    image_size_wh: tuple[int, int]

    def input_for(self, frame_index: int) -> Tensor:
        return self.inputs[frame_index % len(self.inputs)]


def render_truth_and_frames(scene: SceneSource, rate_hz: float) -> tuple[list[np.ndarray], list[FrameTruth]]:
    """Render the workload's unique frames (deterministic) and their visible-object ground truth."""
    from multidnn_sched.scenes.generator import SceneConfig, SceneGenerator

    config = SceneConfig(width=scene.width, height=scene.height, rate_hz=rate_hz)
    images: list[np.ndarray] = []
    truth: list[FrameTruth] = []
    for frame in SceneGenerator(config, seed=scene.seed).frames(scene.unique_frames):
        images.append(frame.image)
        objs = frame.objects
        vis = [o for o in objs if o.visible_fraction >= VISIBLE_FRACTION_MIN]
        truth.append(
            FrameTruth(
                boxes_xyxy=np.array([o.box_xyxy for o in vis], np.float32).reshape(-1, 4),
                class_ids=np.array([o.class_id for o in vis], np.int64),
                attribute_ids=np.array([o.attribute_id for o in vis], np.int64),
                track_ids=np.array([o.track_id for o in vis], np.int64),
                all_boxes_xyxy=np.array([o.box_xyxy for o in objs], np.float32).reshape(-1, 4),
                all_class_ids=np.array([o.class_id for o in objs], np.int64),
                all_visible=np.array([o.visible_fraction for o in objs], np.float32),
            )
        )
    return images, truth


def build_task_inputs(name: str, images: list[np.ndarray], truth: list[FrameTruth]) -> TaskInputs:
    """Pre-process every unique frame for model ``name`` (outside any timed region)."""
    from multidnn_sched.models.classifier import CLASSIFIER_INPUT_HW
    from multidnn_sched.models.crops import crop_batch
    from multidnn_sched.models.detector import detector_preprocess
    from multidnn_sched.models.embedding import EMBEDDER_INPUT_HW

    h, w = images[0].shape[:2]
    if name == "detector":
        inputs = [detector_preprocess(img) for img in images]
    elif name == "embedder":
        inputs = [crop_batch(img, t.boxes_xyxy, EMBEDDER_INPUT_HW) for img, t in zip(images, truth, strict=True)]
    elif name == "classifier":
        inputs = [crop_batch(img, t.boxes_xyxy, CLASSIFIER_INPUT_HW) for img, t in zip(images, truth, strict=True)]
    else:
        raise ValueError(f"expected a model name detector/embedder/classifier, got {name!r}")
    # Frames without visible objects would give empty crop batches; every frame still costs a forward so that
    # all modes see the same load: give those frames one crop of the whole image instead (not scored).
    if name != "detector":
        size = EMBEDDER_INPUT_HW if name == "embedder" else CLASSIFIER_INPUT_HW
        for i, x in enumerate(inputs):
            if x.shape[0] == 0:
                inputs[i] = crop_batch(images[i], np.array([[0, 0, w, h]], np.float32), size)
    return TaskInputs(name=name, inputs=inputs, truth=truth, image_size_wh=(w, h))


def build_model(name: str, *, random_init: bool = False) -> nn.Module:
    """The default model ``name`` in eval mode, with the shipped weights unless ``random_init``."""
    from multidnn_sched.models import zoo

    if random_init:
        builders: dict[str, Callable[[], nn.Module]] = {
            "detector": zoo.build_detector, "embedder": zoo.build_embedder, "classifier": zoo.build_classifier,
        }
        model = builders[name]()
    else:
        models = zoo.load_default_models(device="cpu")
        model = getattr(models, name)
    return model.eval()


def compact_output(name: str, output: object) -> object:
    """What to keep of a model output for scoring (small, detached, CPU)."""
    if isinstance(output, tuple):
        return tuple(t.detach().cpu() for t in output)
    assert isinstance(output, Tensor), type(output)
    return output.detach().cpu()


def task_accuracy(task: TaskInputs, outputs: dict[int, object]) -> float | None:
    """The model's task metric over the unique frames it processed (``outputs``: unique index -> output)."""
    if not outputs:
        return None
    if task.name == "detector":
        return _detector_map50(task, outputs)
    if task.name == "classifier":
        return _classifier_top1(task, outputs)
    return _embedder_reid_top1(task, outputs)


def _detector_map50(task: TaskInputs, outputs: dict[int, object]) -> float:
    from multidnn_sched.evaluation.metrics import FrameGroundTruth, FramePredictions, detection_map
    from multidnn_sched.models.detector import detector_postprocess

    preds, gts = [], []
    for idx, out in sorted(outputs.items()):
        det = detector_postprocess(out, image_size=task.image_size_wh)  # type: ignore[arg-type]
        preds.append(FramePredictions(idx, det.boxes_xyxy, det.scores, det.labels))
        t = task.truth[idx]
        gts.append(FrameGroundTruth(idx, t.all_boxes_xyxy, t.all_class_ids, visible_fraction=t.all_visible))
    return float(detection_map(preds, gts)["map50"])


def _classifier_top1(task: TaskInputs, outputs: dict[int, object]) -> float:
    correct = total = 0
    for idx, out in outputs.items():
        truth = task.truth[idx].attribute_ids
        if truth.size == 0:
            continue
        pred = torch.as_tensor(out).argmax(dim=1).numpy()
        correct += int((pred == truth).sum())
        total += int(truth.size)
    return correct / total if total else 0.0


def _embedder_reid_top1(task: TaskInputs, outputs: dict[int, object]) -> float:
    correct = total = 0
    done = sorted(outputs)
    for prev, cur in zip(done, done[1:], strict=False):
        if cur - prev > REID_MAX_GAP_FRAMES:
            continue
        ids_prev, ids_cur = task.truth[prev].track_ids, task.truth[cur].track_ids
        if ids_prev.size == 0 or ids_cur.size == 0:
            continue
        e_prev = torch.as_tensor(outputs[prev])
        e_cur = torch.as_tensor(outputs[cur])
        nearest = (e_cur @ e_prev.T).argmax(dim=1).numpy()
        for j, tid in enumerate(ids_cur):
            if tid in ids_prev:
                total += 1
                correct += int(ids_prev[nearest[j]] == tid)
    return correct / total if total else 0.0
