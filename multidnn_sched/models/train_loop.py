"""The training loop shared by ``multidnn-train``'s models: schedule, optimiser, loop and crop augmentation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from multidnn_sched.exceptions import ConfigError
from multidnn_sched.models.checkpoints import load_checkpoint
from multidnn_sched.models.detector import normalize_images


class Schedule:
    """Warm-up + cosine learning rate; progress from steps (deterministic) or wall time.

    Args:
        lr_max: peak learning rate.
        steps: total steps, or ``None`` to use ``budget_sec``.
        budget_sec: wall-time budget when ``steps`` is ``None``.
        warmup_fraction: fraction of the run spent warming up linearly.
        clock: time source (injectable for tests).
    """

    def __init__(
        self,
        lr_max: float,
        steps: int | None,
        budget_sec: float | None,
        warmup_fraction: float = 0.05,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if steps is None and budget_sec is None:
            raise ConfigError("training needs --steps or --minutes, got neither")
        self.lr_max = lr_max
        self.steps = steps
        self.budget_sec = budget_sec
        self.warmup_fraction = warmup_fraction
        self.clock = clock
        self.start = clock()

    def progress(self, step: int) -> float:
        if self.steps is not None:
            return step / max(self.steps, 1)
        return (self.clock() - self.start) / max(float(self.budget_sec or 0.0), 1e-9)

    def lr(self, progress: float) -> float:
        if progress < self.warmup_fraction:
            return self.lr_max * max(progress / self.warmup_fraction, 0.02)
        t = min((progress - self.warmup_fraction) / (1.0 - self.warmup_fraction), 1.0)
        return self.lr_max * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t)))


def augment_color(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random per-image brightness (x0.8..1.2) and contrast on float [B, 3, H, W] 0..255 images."""
    b = images.shape[0]
    gain = 0.8 + 0.4 * torch.rand((b, 1, 1, 1), generator=generator)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 0.85 + 0.3 * torch.rand((b, 1, 1, 1), generator=generator)
    return ((images - mean) * contrast + mean) * gain


def initial_model(model: nn.Module, name: str, init: Path | None) -> nn.Module:
    """Load ``init/<name>`` weights into ``model`` when fine-tuning, else return it unchanged."""
    if init is not None:
        load_checkpoint(model, name, init)
    return model


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )


def run_loop(
    model: nn.Module,
    name: str,
    schedule: Schedule,
    optimizer: torch.optim.Optimizer,
    step_fn: Callable[[int], tuple[Tensor, dict[str, float]]],
) -> int:
    """Generic loop: lr from the schedule, step, clip, tqdm postfix; returns the number of steps taken."""
    model.train()
    step = 0
    total = schedule.steps if schedule.steps is not None else None
    bar = tqdm(total=total, desc=f"train {name}", unit="step")
    while True:
        progress = schedule.progress(step)
        if progress >= 1.0:
            break
        lr = schedule.lr(progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, parts = step_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        step += 1
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(
                loss=f"{float(loss):.3f}", lr=f"{lr:.2e}", **{k: f"{v:.3f}" for k, v in parts.items()}
            )
    bar.close()
    model.eval()
    return step


def crop_aug(
    crops_uint8: Tensor, generator: torch.Generator, rotate: bool = False, erase_probability: float = 0.0
) -> Tensor:
    """Normalised float crops: random flips, brightness / contrast, optionally a random multiple of 90 degrees
    (the scenes spin their objects, so texture must be read at any orientation) and, per crop with probability
    ``erase_probability``, one rectangle of 10-40 % of the crop painted a random flat colour (partial occlusion).
    """
    x = crops_uint8.float()
    if rotate:
        x = torch.rot90(x, int(torch.randint(0, 4, (1,), generator=generator)), (2, 3))
    if torch.rand((), generator=generator) < 0.5:
        x = x.flip(3)
    if torch.rand((), generator=generator) < 0.5:
        x = x.flip(2)
    if erase_probability > 0.0:
        x = random_erase(x, generator, erase_probability)
    return normalize_images(augment_color(x, generator).clamp(0, 255))


def random_erase(images: Tensor, generator: torch.Generator, probability: float) -> Tensor:
    """Paint one random rectangle (10-40 % of the area, aspect 0.45-2.2) a random flat colour in each image
    with ``probability``; float [B, 3, H, W] 0..255 images, modified in place and returned."""
    b, _, h, w = images.shape
    for i in range(b):
        if float(torch.rand((), generator=generator)) >= probability:
            continue
        area = float(0.1 + 0.3 * torch.rand((), generator=generator)) * h * w
        aspect = math.exp(float(torch.empty(()).uniform_(-0.8, 0.8, generator=generator)))
        eh = max(1, min(h, int(round(math.sqrt(area * aspect)))))
        ew = max(1, min(w, int(round(math.sqrt(area / aspect)))))
        y0 = int(torch.randint(0, h - eh + 1, (1,), generator=generator))
        x0 = int(torch.randint(0, w - ew + 1, (1,), generator=generator))
        images[i, :, y0:y0 + eh, x0:x0 + ew] = torch.rand((3, 1, 1), generator=generator) * 255.0
    return images
