"""``multidnn-train``: reproduce the default checkpoints from generated scenes, on a CPU.

Frames are rendered once from training seeds (never the evaluation seed 1234) and cached under ``--cache``:
detector inputs at 320x240, plus jittered object crops for the embedder (64x64) and the classifier (96x96).
Training uses AdamW with a warm-up + cosine schedule whose progress is ``step / steps`` (``--steps``) or
``elapsed / budget`` (``--minutes``). Each model is written as fp16 safetensors + a manifest entry. The loop
and the crop augmentation live in ``train_loop.py``; the embedder's losses (CosFace plus the hard profile's
look-alike term) in ``train_embedder.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align
from tqdm import tqdm

from multidnn_sched.exceptions import ConfigError
from multidnn_sched.models.checkpoints import (
    WEIGHTS_DIR,
    CheckpointEntry,
    save_checkpoint,
    write_manifest,
)
from multidnn_sched.models.classifier import CLASSIFIER_INPUT_HW
from multidnn_sched.models.detector import (
    DETECTOR_INPUT_HW,
    DETECTOR_STRIDE,
    detector_loss,
    detector_targets,
    normalize_images,
    resize_uint8,
)
from multidnn_sched.models.embedding import EMBEDDER_INPUT_HW
from multidnn_sched.models.train_embedder import LookalikeTraining, train_embedder
from multidnn_sched.models.train_loop import Schedule, augment_color, crop_aug, initial_model, make_optimizer, run_loop
from multidnn_sched.models.zoo import NUM_ATTRIBUTES, NUM_CLASSES, build_classifier, build_detector
from multidnn_sched.scenes.generator import HARD_PROFILE_VERSION, PATTERNS, PROFILES, SceneGenerator, profile_config

EVALUATION_SEED: int = 1234
"""Seed of the acceptance sequence; never used for training."""

TRAIN_THREADS: int = 1
"""Default intra-op threads for training. Measured on the shared 2-core CI box under load ~9 (detector,
batch 8 x 128x160, forward + backward): 1 thread 4.0-4.5 s/step, 2 threads 8.5-12.5 s/step."""

MIN_TRAIN_VISIBLE_FRACTION: float = 0.3
"""Objects less visible than this are left out of the training targets (evaluation ignores < 0.5)."""


@dataclass
class TrainData:
    """Rendered training material.

    Attributes:
        images: ``uint8[N, 3, 240, 320]`` detector inputs.
        boxes: per image ``float32[K, 4]`` boxes in detector-input pixels.
        labels: per image ``int64[K]`` class ids.
        emb_crops: ``uint8[M, 3, 64, 64]``; emb_ids: ``int64[M]`` appearance identity
            (``SceneFrame.appearance``: easy ``class * A + attribute``, hard also fill colour and texture).
        cls_crops: ``uint8[M, 3, 96, 96]``; cls_labels: ``int64[M]`` attribute ids.
        seeds: scene seeds used.
    """

    images: Tensor
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    emb_crops: Tensor
    emb_ids: Tensor
    cls_crops: Tensor
    cls_labels: Tensor
    seeds: list[int]
    profile: str = "hard"


def num_appearance_ids(profile: str) -> int:
    """Size of the appearance-identity space of a scene profile (see ``SceneFrame.appearance``)."""
    if profile == "hard":
        return NUM_CLASSES * NUM_ATTRIBUTES * NUM_ATTRIBUTES * len(PATTERNS)
    return NUM_CLASSES * NUM_ATTRIBUTES


def jitter_boxes(boxes: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Shift / rescale boxes by up to ``amount`` of their size (simulates detector box noise)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    d = rng.uniform(-amount, amount, size=(boxes.shape[0], 4)).astype(np.float32)
    return boxes + d * np.stack([w, h, w, h], axis=1)


def _crops_uint8(image: np.ndarray, boxes: np.ndarray, size_hw: tuple[int, int], pad: float) -> Tensor:
    """Like ``crop_batch`` but returns un-normalised ``uint8`` crops (compact cache)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    padded = np.stack(
        [boxes[:, 0] - pad * w, boxes[:, 1] - pad * h, boxes[:, 2] + pad * w, boxes[:, 3] + pad * h], 1
    )
    chw = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float()
    rois = torch.cat([torch.zeros((boxes.shape[0], 1)), torch.from_numpy(padded.astype(np.float32))], dim=1)
    crops = roi_align(chw, rois, output_size=size_hw, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return crops.round().clamp(0, 255).to(torch.uint8)


def render_training_data(
    seeds: list[int],
    frames_per_seed: int,
    keep_every: int,
    crop_every: int,
    crops_per_object: int,
    seed: int,
    profile: str = "hard",
) -> TrainData:
    """Render scenes and cut the training material (see ``TrainData``)."""
    if EVALUATION_SEED in seeds:
        raise ConfigError(
            f"training seeds must not include the evaluation seed {EVALUATION_SEED}, got {seeds}"
        )
    rng = np.random.default_rng(seed)
    images: list[Tensor] = []
    all_boxes: list[np.ndarray] = []
    all_labels: list[np.ndarray] = []
    emb_crops: list[Tensor] = []
    emb_ids: list[np.ndarray] = []
    cls_crops: list[Tensor] = []
    cls_labels: list[np.ndarray] = []
    config = profile_config(profile)
    scale_x = DETECTOR_INPUT_HW[1] / config.width
    scale_y = DETECTOR_INPUT_HW[0] / config.height
    progress = tqdm(total=len(seeds) * frames_per_seed, desc="render", unit="frame")
    for scene_seed in seeds:
        for frame in SceneGenerator(config, scene_seed).frames(frames_per_seed):
            progress.update(1)
            if frame.index % keep_every:
                continue
            objects = [o for o in frame.objects if o.visible_fraction >= MIN_TRAIN_VISIBLE_FRACTION]
            boxes = np.array([o.box_xyxy for o in objects], np.float32).reshape(-1, 4)
            labels = np.array([o.class_id for o in objects], np.int64)
            images.append(resize_uint8(frame.image, DETECTOR_INPUT_HW)[0])
            all_boxes.append(boxes * np.array([scale_x, scale_y, scale_x, scale_y], np.float32))
            all_labels.append(labels)
            if (frame.index // keep_every) % crop_every or not objects:
                continue
            attrs = np.array([o.attribute_id for o in objects], np.int64)
            ids = np.array([frame.appearance[o.track_id] for o in objects], np.int64)
            for _ in range(crops_per_object):
                jittered = jitter_boxes(boxes, rng, 0.12)
                emb_crops.append(_crops_uint8(frame.image, jittered, EMBEDDER_INPUT_HW, 0.1))
                emb_ids.append(ids)
                cls_crops.append(_crops_uint8(frame.image, jittered, CLASSIFIER_INPUT_HW, 0.1))
                cls_labels.append(attrs)
    progress.close()
    return TrainData(
        images=torch.stack(images),
        boxes=all_boxes,
        labels=all_labels,
        emb_crops=torch.cat(emb_crops),
        emb_ids=torch.from_numpy(np.concatenate(emb_ids)),
        cls_crops=torch.cat(cls_crops),
        cls_labels=torch.from_numpy(np.concatenate(cls_labels)),
        seeds=list(seeds),
        profile=profile,
    )


def load_or_render(
    cache_dir: Path,
    seeds: list[int],
    frames_per_seed: int,
    keep_every: int,
    seed: int,
    profile: str = "hard",
    crop_every: int = 2,
) -> TrainData:
    """Render once, then reuse ``cache_dir/train_<profile>_<...>.pt`` (plain tensors; weights_only=True)."""
    if profile not in PROFILES:
        raise ConfigError(f"scene profile: expected one of {PROFILES}, got {profile!r}")
    version = f"v{HARD_PROFILE_VERSION}" if profile == "hard" else ""
    if crop_every < 1:
        raise ConfigError(f"--crop-every: expected >= 1, got {crop_every}")
    crops = "" if crop_every == 2 else f"_c{crop_every}"  # crop_every 2 keeps the name of older caches
    key = f"train_{profile}{version}_s{seeds[0]}-{seeds[-1]}_f{frames_per_seed}_k{keep_every}{crops}_r{seed}.pt"
    path = cache_dir / key
    if path.is_file():
        raw = torch.load(path, weights_only=True)
        return TrainData(
            images=raw["images"],
            boxes=[b.numpy() for b in raw["boxes"]],
            labels=[lb.numpy() for lb in raw["labels"]],
            emb_crops=raw["emb_crops"],
            emb_ids=raw["emb_ids"],
            cls_crops=raw["cls_crops"],
            cls_labels=raw["cls_labels"],
            seeds=[int(s) for s in raw["seeds"].tolist()],
            profile=profile,
        )
    data = render_training_data(
        seeds, frames_per_seed, keep_every, crop_every=crop_every, crops_per_object=2, seed=seed, profile=profile
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "images": data.images,
            "boxes": [torch.from_numpy(b) for b in data.boxes],
            "labels": [torch.from_numpy(lb) for lb in data.labels],
            "emb_crops": data.emb_crops,
            "emb_ids": data.emb_ids,
            "cls_crops": data.cls_crops,
            "cls_labels": data.cls_labels,
            "seeds": torch.tensor(data.seeds),
        },
        path,
    )
    return data


def detector_batch(
    data: TrainData,
    indices: np.ndarray,
    crop_hw: tuple[int, int],
    rng: np.random.Generator,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random crops (native scale) + flips of the cached inputs, with their targets."""
    ch, cw = crop_hw
    h, w = data.images.shape[2:]
    out_hw = (ch // DETECTOR_STRIDE, cw // DETECTOR_STRIDE)
    imgs, heats, boxes_t, weights = [], [], [], []
    for i in indices:
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
        img = data.images[i, :, y0 : y0 + ch, x0 : x0 + cw]
        boxes = data.boxes[i].copy()
        boxes[:, 0::2] = np.clip(boxes[:, 0::2] - x0, 0, cw)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2] - y0, 0, ch)
        orig_area = np.maximum(
            (data.boxes[i][:, 2] - data.boxes[i][:, 0]) * (data.boxes[i][:, 3] - data.boxes[i][:, 1]), 1
        )
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        keep = (
            (area / orig_area >= 0.35) & (boxes[:, 2] - boxes[:, 0] >= 3) & (boxes[:, 3] - boxes[:, 1] >= 3)
        )
        boxes, labels = boxes[keep], data.labels[i][keep]
        if rng.uniform() < 0.5:
            img = img.flip(2)
            boxes = np.stack([cw - boxes[:, 2], boxes[:, 1], cw - boxes[:, 0], boxes[:, 3]], 1)
        if rng.uniform() < 0.5:
            img = img.flip(1)
            boxes = np.stack([boxes[:, 0], ch - boxes[:, 3], boxes[:, 2], ch - boxes[:, 1]], 1)
        heat, box, weight = detector_targets(
            boxes.reshape(-1, 4), labels, NUM_CLASSES, out_hw, DETECTOR_STRIDE
        )
        imgs.append(img)
        heats.append(torch.from_numpy(heat))
        boxes_t.append(torch.from_numpy(box))
        weights.append(torch.from_numpy(weight))
    images = augment_color(torch.stack(imgs).float(), generator).clamp(0, 255)
    return normalize_images(images), torch.stack(heats), torch.stack(boxes_t), torch.stack(weights)


def train_detector(
    data: TrainData,
    schedule: Schedule,
    seed: int,
    batch_size: int,
    crop_hw: tuple[int, int],
    init: Path | None = None,
) -> tuple[nn.Module, int]:
    """Focal heatmap + GIoU training on random native-scale crops of the cached 320x240 inputs."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    model = initial_model(build_detector(), "detector", init)
    optimizer = make_optimizer(model, schedule.lr_max, 0.05)
    n = data.images.shape[0]

    def step_fn(step: int) -> tuple[Tensor, dict[str, float]]:
        idx = rng.integers(0, n, size=batch_size)
        images, heat, box, weight = detector_batch(data, idx, crop_hw, rng, generator)
        return detector_loss(model(images), heat, box, weight, DETECTOR_STRIDE)

    steps = run_loop(model, "detector", schedule, optimizer, step_fn)
    return model, steps


def train_classifier(
    data: TrainData, schedule: Schedule, seed: int, batch_size: int, init: Path | None = None
) -> tuple[nn.Module, int]:
    """Cross-entropy (label smoothing 0.05) over attributes on jittered crops."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = initial_model(build_classifier(), "classifier", init)
    optimizer = make_optimizer(model, schedule.lr_max, 0.05)
    n = data.cls_crops.shape[0]

    def step_fn(step: int) -> tuple[Tensor, dict[str, float]]:
        idx = torch.randint(0, n, (batch_size,), generator=generator)
        logits = model(crop_aug(data.cls_crops[idx], generator))
        labels = data.cls_labels[idx]
        loss = F.cross_entropy(logits, labels, label_smoothing=0.05)
        return loss, {"acc": float((logits.argmax(1) == labels).float().mean())}

    steps = run_loop(model, "classifier", schedule, optimizer, step_fn)
    return model, steps


ARCHITECTURES: dict[str, tuple[str, tuple[int, int]]] = {
    "detector": ("resnet18_fpn_centernet", DETECTOR_INPUT_HW),
    "embedder": ("resnet18_l3_embedding128", EMBEDDER_INPUT_HW),
    "classifier": ("regnet_y_400mf_attributes", CLASSIFIER_INPUT_HW),
}
LR_MAX: dict[str, float] = {"detector": 2e-3, "embedder": 2e-3, "classifier": 2e-3}
BATCH_SIZE: dict[str, int] = {"detector": 8, "embedder": 32, "classifier": 32}


def _parse_seeds(text: str) -> list[int]:
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-", 1))
            return list(range(lo, hi + 1))
        return [int(v) for v in text.split(",") if v]
    except ValueError as exc:
        raise ConfigError(f"--train-seeds: expected 'LO-HI' or 'A,B,C', got {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multidnn-train", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["detector", "embedder", "classifier", "all"], default="all")
    parser.add_argument("--minutes", type=float, default=None, help="wall-time budget PER MODEL")
    parser.add_argument("--steps", type=int, default=None, help="steps per model (overrides --minutes)")
    parser.add_argument(
        "--out", type=Path, default=WEIGHTS_DIR, help="weights directory (manifest is merged)"
    )
    parser.add_argument("--cache", type=Path, default=Path("runs/train_cache"), help="rendered-frame cache")
    parser.add_argument("--train-seeds", default="101-116", help="scene seeds, 'LO-HI' or 'A,B,C' (not 1234)")
    parser.add_argument("--profile", choices=PROFILES, default="hard", help="scene profile (default hard)")
    parser.add_argument("--frames-per-seed", type=int, default=120)
    parser.add_argument("--keep-every", type=int, default=2, help="keep every k-th rendered frame")
    parser.add_argument(
        "--crop-every", type=int, default=2, help="cut embedder / classifier crops from every k-th kept frame"
    )
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: per model, LR_MAX)")
    parser.add_argument(
        "--erase-probability",
        type=float,
        default=LookalikeTraining.erase_probability,
        help="embedder, hard profile: per-crop probability of a random occluding rectangle",
    )
    parser.add_argument(
        "--hard-mining",
        type=float,
        default=LookalikeTraining.hard_mining,
        help="embedder, hard profile: share of look-alike group draws weighted by each group's running loss",
    )
    parser.add_argument(
        "--no-lookalike", action="store_true", help="embedder: plain CosFace (no look-alike term, no rotations)"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (init, batches, augmentation)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the per-model batch size")
    parser.add_argument(
        "--detector-crop", default="128x160", help="detector training crop HxW (native scale)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=TRAIN_THREADS,
        help="torch intra-op threads (1: best on a shared 2-core CPU, see TRAIN_THREADS)",
    )
    parser.add_argument("--fp32", action="store_true", help="store fp32 instead of fp16")
    parser.add_argument(
        "--init-from", type=Path, default=None, help="weights dir to fine-tune from (same names)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``multidnn-train``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    try:
        seeds = _parse_seeds(args.train_seeds)
        if args.steps is None and args.minutes is None:
            args.minutes = 15.0
        crop_h, crop_w = (int(v) for v in args.detector_crop.lower().split("x"))
        t0 = time.perf_counter()
        data = load_or_render(
            args.cache, seeds, args.frames_per_seed, args.keep_every, args.seed, args.profile, args.crop_every
        )
        print(
            f"data: {data.images.shape[0]} frames, {data.emb_crops.shape[0]} crops from seeds "
            f"{seeds[0]}..{seeds[-1]} ({time.perf_counter() - t0:.0f} s)"
        )
    except (ConfigError, ValueError) as exc:
        print(f"multidnn-train: error: {exc}", file=sys.stderr)
        return 2
    names = ["detector", "embedder", "classifier"] if args.model == "all" else [args.model]
    lookalike = None
    if data.profile == "hard" and not args.no_lookalike:
        lookalike = LookalikeTraining(erase_probability=args.erase_probability, hard_mining=args.hard_mining)
    entries: dict[str, CheckpointEntry] = {}
    for name in names:
        budget = None if args.steps is not None else args.minutes * 60.0
        lr_max = args.lr if args.lr is not None else LR_MAX[name]
        schedule = Schedule(lr_max, args.steps, budget)
        batch = args.batch_size or BATCH_SIZE[name]
        start = time.perf_counter()
        if name == "detector":
            model, steps = train_detector(data, schedule, args.seed, batch, (crop_h, crop_w), args.init_from)
        elif name == "embedder":
            model, steps = train_embedder(
                data.emb_crops, data.emb_ids, num_appearance_ids(data.profile), schedule, args.seed, batch,
                args.init_from, lookalike,
            )
        else:
            model, steps = train_classifier(data, schedule, args.seed, batch, args.init_from)
        elapsed = time.perf_counter() - start
        architecture, input_hw = ARCHITECTURES[name]
        entries[name] = save_checkpoint(
            model,
            Path(args.out) / f"{name}.safetensors",
            architecture,
            input_hw,
            storage_dtype=torch.float32 if args.fp32 else torch.float16,
            training={
                "train_seeds": f"{seeds[0]}-{seeds[-1]}",
                "scene_profile": args.profile,
                "init_from": str(args.init_from) if args.init_from is not None else None,
                "frames_per_seed": args.frames_per_seed,
                "keep_every": args.keep_every,
                "seed": args.seed,
                "steps": steps,
                "batch_size": batch,
                "lr_max": lr_max,
                "crop_every": args.crop_every,
                "lookalike": asdict(lookalike) if name == "embedder" and lookalike is not None else None,
                "train_time_sec": round(elapsed, 1),
                "torch_threads": torch.get_num_threads(),
            },
        )
        write_manifest({name: entries[name]}, Path(args.out))
        print(f"{name}: {steps} steps in {elapsed / 60:.1f} min -> {Path(args.out) / entries[name].file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
