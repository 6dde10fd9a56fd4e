"""Per-model benchmark tasks: the model, its per-frame input tensors, and its task metric.

Every mode of the benchmark feeds the same input tensors (pre-computed here, outside the timed region) and
scores the outputs of the frames it actually processed with the model's own task metric:

* ``detector``   — input: the frame pre-processed to ``[1, 3, 240, 320]``; metric: mAP@0.5 against the GT.
* ``embedder``   — input: crops of the frame's visible GT objects; metric: re-identification top-1 — for each
  crop, is its nearest neighbour (cosine) among the previous processed frame's crops the same track?
  That is exactly what the tracker's appearance association relies on.
* ``classifier`` — input: crops of the frame's visible GT objects; metric: attribute top-1.

Any other registry model (workload schema v2): a detector gets the frame at its input size, a classifier the
frame (``crops: 0``) or ``crops`` crops of the frame's objects. Their labels are not the scene's, so they have no
task metric here: accuracy is ``None`` (reported ``n/a``), latency only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from multidnn_sched.bench.workload import ModelLoad, SceneSource, loaded_entry
from multidnn_sched.runtime.kernels import use_onednn_pointwise

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


DEFAULT_METRICS: dict[str, str] = {"detector": "map50", "classifier": "attribute_top1", "embedder": "reid_top1"}
"""Task metric of each default model on the scene's ground truth."""


@dataclass
class TaskInputs:
    """Pre-computed inputs of one model for every unique frame, plus what its metric needs.

    Attributes:
        metric: ``"map50"``, ``"attribute_top1"``, ``"reid_top1"`` or ``None`` (no metric: the model's labels are
            not the scene's; accuracy ``n/a``). ``""`` (default): the default model's metric from ``name``.
    """

    name: str
    inputs: list[Tensor]
    truth: list[FrameTruth]
    image_size_wh: tuple[int, int]
    metric: str | None = ""

    def __post_init__(self) -> None:
        if self.metric == "":
            self.metric = DEFAULT_METRICS.get(self.name)

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


def resolve_load(model: str | ModelLoad) -> ModelLoad:
    """A workload entry for ``model``: itself, the loaded workload's entry of that name, a default model name or a
    registry name (defaults for everything else)."""
    if isinstance(model, ModelLoad):
        return model
    entry = loaded_entry(model)
    if entry is not None:
        return entry
    return ModelLoad(model, deadline_ms=100.0, model=model if ":" in model else f"default:{model}")


def _registry_model(load: ModelLoad) -> Any:
    from multidnn_sched.models.registry import load_model

    return load_model(
        load.model,
        weights=load.weights or None,
        labels_file=load.labels_file or None,
        input_hw=load.input_hw,
        task=load.task,
    )


def _crop_boxes(truth: FrameTruth, count: int, width: int, height: int) -> np.ndarray:
    """``count`` boxes: the frame's visible objects cycled, or the whole frame when it has none."""
    boxes = truth.boxes_xyxy if len(truth.boxes_xyxy) else np.array([[0, 0, width, height]], np.float32)
    return boxes[np.arange(count) % len(boxes)]


def build_task_inputs(model: str | ModelLoad, images: list[np.ndarray], truth: list[FrameTruth]) -> TaskInputs:
    """Pre-process every unique frame for ``model`` (a default model name, a workload entry or its name, or a
    registry name), outside any timed region."""
    load = resolve_load(model)
    if load.model != f"default:{load.name}" or load.input_hw is not None or load.crops:
        return _registry_task_inputs(load, images, truth)
    name = load.name
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


def _registry_task_inputs(load: ModelLoad, images: list[np.ndarray], truth: list[FrameTruth]) -> TaskInputs:
    loaded = _registry_model(load)
    h, w = images[0].shape[:2]
    if loaded.spec.task == "detection" or load.crops == 0:
        inputs = [loaded.preprocess(img) for img in images]
    else:
        inputs = [
            loaded.crops(img, _crop_boxes(t, load.crops, w, h)) for img, t in zip(images, truth, strict=True)
        ]
    metric = loaded.spec.metric if loaded.spec.source == "default" and not load.labels_file else None
    if metric in ("attribute_top1", "reid_top1") and load.crops:
        metric = None  # crops are cycled, not one per visible object: the GT pairing does not hold
    return TaskInputs(name=load.name, inputs=inputs, truth=truth, image_size_wh=(w, h), metric=metric)


def build_model(model: str | ModelLoad, *, random_init: bool = False, native_pointwise: bool = False) -> nn.Module:
    """The model (its runtime core: a torchvision detector's tensor core) in eval mode, its 1x1 convolutions on
    oneDNN at one intra-op thread (:func:`~multidnn_sched.runtime.kernels.use_onednn_pointwise`) unless
    ``native_pointwise`` — every mode of a bench serves the same kernels.

    Default models: the shipped weights unless ``random_init``. Other registry models (and default models with a
    v2 input size / crops): the registry's weights (random for torchvision unless the entry names a file).
    """
    from multidnn_sched.models import zoo

    load = resolve_load(model)
    name = load.name
    if load.model != f"default:{name}" or load.input_hw is not None or load.crops:
        core: nn.Module = _registry_model(load).core  # eval mode already (an exported program refuses .eval())
        if not native_pointwise:
            use_onednn_pointwise(core)
        return core
    if random_init:
        builders: dict[str, Callable[[], nn.Module]] = {
            "detector": zoo.build_detector, "embedder": zoo.build_embedder, "classifier": zoo.build_classifier,
        }
        network = builders[name]()
    else:
        network = getattr(zoo.load_default_models(device="cpu"), name)
    if not native_pointwise:
        use_onednn_pointwise(network)
    return network.eval()


def on_device(task: TaskInputs, device: str) -> TaskInputs:
    """``task`` with its input tensors on ``device`` (every mode then feeds the same device-resident inputs;
    transfers are not part of what the bench compares)."""
    if device == "cpu":
        return task
    task.inputs = [_to(x, device) for x in task.inputs]
    return task


def _to(value: Any, device: str) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, tuple | list):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def compact_output(name: str, output: object) -> object:
    """What to keep of a model output for scoring: detached CPU tensors, as a tensor or a flat tuple.

    Dicts (torchvision detection heads) and lists become a tuple of their tensors in order: the scored models'
    outputs are a tensor or a tuple, and a flat tuple of tensors also crosses the multiprocess boundary as numpy.
    """
    if isinstance(output, Tensor):
        return output.detach().cpu()
    if isinstance(output, dict):
        output = tuple(output.values())
    if isinstance(output, (tuple, list)):
        flat: list[Tensor] = []
        for value in output:
            kept = compact_output(name, value)
            flat.extend(kept if isinstance(kept, tuple) else (kept,))  # type: ignore[arg-type]
        return tuple(flat)
    raise TypeError(f"{name}: expected model outputs of tensors (tuple / list / dict), got {type(output).__name__}")


def task_accuracy(task: TaskInputs, outputs: dict[int, object]) -> float | None:
    """The model's task metric over the unique frames it processed (``outputs``: unique index -> output);
    ``None`` when nothing was processed or the model has no metric on the scene (``task.metric is None``)."""
    if not outputs or task.metric is None:
        return None
    if task.metric == "map50":
        return _detector_map50(task, outputs)
    if task.metric == "attribute_top1":
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
