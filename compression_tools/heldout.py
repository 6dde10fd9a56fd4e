"""Held-out evaluation of variants: scene seeds kept apart from calibration, fine-tuning and training, and the
batched task metrics of the default models on those frames.

A variant's accuracy is the task metric of the whole model with only that block swapped, compared with the fp32
model on the *same* frames. Those frames must be new to everything that shaped the variant or the model:

- calibration (int8 min-max ranges) and pruning fine-tune (``+ft`` distillation) use the carries of
  :data:`CALIBRATION_SEEDS`;
- the shipped weights were trained on the ``train_seeds`` of ``multidnn_sched/models/weights/manifest.json``;
- the evaluation frames come from :data:`HELDOUT_SEEDS`, hard scene profile, consecutive frames per seed (the
  embedder's re-identification pairs frames 15 apart).

:func:`check_disjoint` refuses a held-out seed that collides with any of the others (:class:`ConfigError` naming
the seeds and their roles); the seeds are recorded in the variant manifest (``ModelBaseline``).

Metrics (percent, so a drop reads in points): detector ``mAP50`` over GT boxes (objects < 50 % visible ignored);
embedder ``reid_top1`` (re-identification top-1 of ground-truth crops against the objects of the frame
:data:`~multidnn_sched.evaluation.sanity.REID_GAP_FRAMES` earlier, the protocol of ``multidnn-evaluate
--sanity``); classifier ``attribute_top1`` on ground-truth crops of objects >= 50 % visible.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from multidnn_sched.exceptions import CheckpointError, ConfigError
from multidnn_sched.runtime.block import Carry

HELDOUT_SEEDS: tuple[int, ...] = (7001, 7002, 7003)
"""Scene seeds of the held-out evaluation frames (not a training, calibration, demo, bench or test seed)."""
HELDOUT_FRAMES: int = 300
"""Held-out frames in all (split evenly over :data:`HELDOUT_SEEDS`, consecutive frames per seed)."""
CALIBRATION_SEEDS: tuple[int, ...] = (6001,)
"""Scene seeds of the int8 calibration and ``+ft`` distillation carries (every 3rd frame)."""
SCENE_PROFILE: str = "hard"
DETECTOR_BATCH: int = 16
CROP_BATCH: int = 256
MIN_VISIBLE_FRACTION: float = 0.5


@dataclass
class SeedPlan:
    """Which scene seeds played which role in a build (recorded in the manifest).

    Attributes:
        heldout: seeds of the evaluation frames.
        calibration: seeds of the int8 calibration carries.
        finetune: seeds of the ``+ft`` distillation carries.
        training: the model's training seeds (from the shipped weights' manifest; empty: unknown).
        profile: scene profile of every rendered frame.
    """

    heldout: list[int]
    calibration: list[int]
    finetune: list[int]
    training: list[int] = field(default_factory=list)
    profile: str = SCENE_PROFILE


def parse_seeds(text: str, what: str) -> list[int]:
    """``"7001-7003"`` or ``"7001,7002"`` -> list of ints.

    Raises:
        ConfigError: not a range or comma-separated integers, or empty.
    """
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-", 1))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ConfigError(f"{what}: expected 'LO-HI' or 'A,B,C' integers, got {text!r}") from exc
    if not seeds:
        raise ConfigError(f"{what}: expected at least one seed, got {text!r}")
    return seeds


def training_seeds(model: str) -> list[int]:
    """Training scene seeds of a shipped default model (``train_seeds`` in the weights' manifest).

    Returns an empty list when the model is not shipped or its manifest names no seeds.

    Raises:
        ConfigError: ``train_seeds`` present but not a seed range / list.
    """
    from multidnn_sched.models.checkpoints import read_manifest

    try:
        entry = read_manifest().get(model)
    except CheckpointError:
        return []
    raw = entry.training.get("train_seeds") if entry is not None else None
    if raw is None:
        return []
    if isinstance(raw, list):
        return [int(s) for s in raw]
    return parse_seeds(str(raw), f"shipped weights of {model}: train_seeds")


def check_disjoint(plan: SeedPlan) -> None:
    """Raise :class:`ConfigError` unless the held-out seeds are disjoint from every other role's seeds.

    The message names each colliding seed and its role, e.g. ``held-out seeds [101] collide with training
    seeds [101]``.
    """
    if not plan.heldout:
        raise ConfigError("held-out evaluation: expected at least one scene seed, got none")
    problems = []
    for role, seeds in (("calibration", plan.calibration), ("pruning fine-tune", plan.finetune),
                        ("training", plan.training)):
        clash = sorted(set(plan.heldout) & set(seeds))
        if clash:
            problems.append(f"{role} seeds {clash}")
    if problems:
        raise ConfigError(f"held-out evaluation seeds {sorted(plan.heldout)} must be disjoint from the seeds that "
                          f"calibrated, fine-tuned or trained the model; they collide with " + "; ".join(problems)
                          + " (choose other --heldout-seeds)")


def render_heldout(seeds: Sequence[int], frames: int, profile: str = SCENE_PROFILE,
                   progress: bool = False) -> list[Any]:
    """``frames`` consecutive frames in all, split evenly over ``seeds`` (at least one per seed).

    The last rendering is cached (``build-defaults`` scores its three models on the same frames); treat the
    returned frames as read-only.
    """
    return list(_render_heldout(tuple(int(s) for s in seeds), int(frames), profile, progress))


@functools.lru_cache(maxsize=1)
def _render_heldout(seeds: tuple[int, ...], frames: int, profile: str, progress: bool) -> tuple[Any, ...]:
    from tqdm import tqdm

    from multidnn_sched.scenes.generator import SceneGenerator, profile_config

    per_seed = max(1, math.ceil(frames / len(seeds)))
    out: list[Any] = []
    with tqdm(total=per_seed * len(seeds), desc="render held-out", unit="frame", disable=not progress,
              leave=False) as bar:
        for seed in seeds:
            for frame in SceneGenerator(profile_config(profile), seed=seed).frames(per_seed):
                out.append(frame)
                bar.update()
    return tuple(out)


def render_calibration(seeds: Sequence[int], frames: int, profile: str = SCENE_PROFILE) -> list[Any]:
    """``frames`` frames, every 3rd of each seed's sequence (more varied than consecutive ones)."""
    from multidnn_sched.scenes.generator import SceneGenerator, profile_config

    per_seed = max(1, math.ceil(frames / len(seeds)))
    out: list[Any] = []
    for seed in seeds:
        out.extend(list(SceneGenerator(profile_config(profile), seed=seed).frames(per_seed * 3))[::3])
    return out[:max(frames, 1)]


@dataclass
class TaskMetric:
    """A whole-model task metric on fixed evaluation frames, with its sample size.

    Calling it with an ``input carry -> output`` callable returns the metric in percent.

    Attributes:
        name: metric name (``mAP50``, ``reid_top1``, ``attribute_top1``...).
        frames: evaluation frames.
        samples: scored units (GT objects, re-ID queries, crops).
        fn: the scoring function.
        inputs: the model inputs it scores, one carry per frame (frames without objects have none for crop
            models), e.g. for calibration-free checks and example shapes.
    """

    name: str
    frames: int
    samples: int
    fn: Callable[[Callable[[Carry], Carry]], float]
    inputs: list[Carry] = field(default_factory=list)

    def __call__(self, model: Callable[[Carry], Carry]) -> float:
        with torch.no_grad():
            return self.fn(model)


def _batches(items: Sequence[torch.Tensor], size: int) -> list[torch.Tensor]:
    return [torch.cat(list(items[i:i + size])) for i in range(0, len(items), size)]


def detector_metric(frames: Sequence[Any]) -> TaskMetric:
    """mAP@0.5 (percent) of the detector on ``frames``, batched by :data:`DETECTOR_BATCH` images."""
    from multidnn_sched.evaluation.metrics import FrameGroundTruth, FramePredictions, detection_map
    from multidnn_sched.models.detector import detector_postprocess, detector_preprocess

    per_frame = [detector_preprocess(f.image) for f in frames]
    images = _batches(per_frame, DETECTOR_BATCH)
    sizes = [(f.image.shape[1], f.image.shape[0]) for f in frames]
    truth = [FrameGroundTruth(i, np.array([o.box_xyxy for o in f.objects], dtype=np.float32).reshape(-1, 4),
                              np.array([o.class_id for o in f.objects], dtype=np.int64),
                              visible_fraction=np.array([o.visible_fraction for o in f.objects], dtype=np.float32))
             for i, f in enumerate(frames)]
    scored = sum(int(sum(o.visible_fraction >= MIN_VISIBLE_FRACTION for o in f.objects)) for f in frames)

    def score(model: Callable[[Carry], Carry]) -> float:
        predictions = []
        for batch in images:
            heat, box = model(batch)
            for k in range(batch.shape[0]):
                i = len(predictions)
                det = detector_postprocess((heat[k:k + 1], box[k:k + 1]), image_size=sizes[i])
                predictions.append(FramePredictions(i, det.boxes_xyxy, det.scores, det.labels))
        return 100.0 * detection_map(predictions, truth)["map50"]

    return TaskMetric("mAP50", len(frames), scored, score, per_frame)


def _crops(frames: Sequence[Any], size_hw: tuple[int, int], visible_only: bool) -> tuple[list[torch.Tensor],
                                                                                         list[int]]:
    from multidnn_sched.models.crops import crop_batch

    crops, counts = [], []
    for f in frames:
        objects = [o for o in f.objects if o.visible_fraction >= MIN_VISIBLE_FRACTION or not visible_only]
        boxes = np.array([o.box_xyxy for o in objects], np.float32).reshape(-1, 4)
        crops.append(crop_batch(f.image, boxes, size_hw))
        counts.append(len(objects))
    return crops, counts


def _crop_batches(crops: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Fixed batches of :data:`CROP_BATCH` crops (the same tensor objects on every call, which lets
    :class:`~compression_tools.variants.PrefixCache` reuse the unchanged blocks' outputs)."""
    flat = torch.cat(list(crops))
    return [flat[i:i + CROP_BATCH] for i in range(0, flat.shape[0], CROP_BATCH)]


def _run_crops(model: Callable[[Carry], Carry], batches: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([model(batch) for batch in batches])


def embedder_metric(frames: Sequence[Any], gap: int | None = None) -> TaskMetric:
    """Re-identification top-1 (percent) of ground-truth crops, the protocol of ``multidnn-evaluate --sanity``
    (all-object gallery of the frame ``gap`` earlier, same seed only), batched by :data:`CROP_BATCH` crops."""
    from multidnn_sched.evaluation.sanity import REID_GAP_FRAMES, reid_scores
    from multidnn_sched.models.embedding import EMBEDDER_INPUT_HW

    gap = REID_GAP_FRAMES if gap is None else gap
    sequences = _sequences(frames)
    crops, counts = _crops(frames, EMBEDDER_INPUT_HW, visible_only=False)
    batches = _crop_batches(crops)
    gap = max(1, min(gap, min(len(s) for s in sequences) // 2))
    # the query count depends on the ground truth only (any embeddings give it)
    queries = sum(int(reid_scores(s, [np.zeros((len(f.objects), 1), np.float32) for f in s], gap)[0]["queries"])
                  for s in sequences)

    def score(model: Callable[[Carry], Carry]) -> float:
        embeddings = F.normalize(_run_crops(model, batches).float(), dim=1).numpy()
        per_frame = np.split(embeddings, np.cumsum(counts)[:-1])
        hits = total = 0
        start = 0
        for seq in sequences:
            result = reid_scores(seq, per_frame[start:start + len(seq)], gap)[0]
            start += len(seq)
            hits += round(float(result["top1"]) * int(result["queries"])) if result["queries"] else 0
            total += int(result["queries"])
        return 100.0 * hits / total if total else float("nan")

    return TaskMetric("reid_top1", len(frames), queries, score, [c for c in crops if len(c)])


def _sequences(frames: Sequence[Any]) -> list[list[Any]]:
    """Split consecutive frames into sequences where the frame index restarts (one per seed)."""
    sequences: list[list[Any]] = []
    for frame in frames:
        if not sequences or frame.index <= sequences[-1][-1].index:
            sequences.append([])
        sequences[-1].append(frame)
    return sequences


def classifier_metric(frames: Sequence[Any]) -> TaskMetric:
    """Attribute top-1 (percent) on ground-truth crops of objects >= 50 % visible, batched by crops."""
    from multidnn_sched.models.classifier import CLASSIFIER_INPUT_HW

    crops = _crops(frames, CLASSIFIER_INPUT_HW, visible_only=True)[0]
    batches = _crop_batches(crops)
    labels = torch.tensor([o.attribute_id for f in frames for o in f.objects
                           if o.visible_fraction >= MIN_VISIBLE_FRACTION], dtype=torch.long)

    def score(model: Callable[[Carry], Carry]) -> float:
        predicted = _run_crops(model, batches).argmax(1)
        return 100.0 * float((predicted == labels).float().mean()) if len(labels) else float("nan")

    return TaskMetric("attribute_top1", len(frames), len(labels), score, [c for c in crops if len(c)])


TASK_METRICS: Mapping[str, Callable[[Sequence[Any]], TaskMetric]] = {
    "detector": detector_metric, "embedder": embedder_metric, "classifier": classifier_metric}
"""The held-out task metric of each default model."""
