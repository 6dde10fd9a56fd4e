"""Embedder training: the look-alike term, look-alike groups, crop augmentation and a short real run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from multidnn_sched.exceptions import ConfigError
from multidnn_sched.models.train import load_or_render, main, num_appearance_ids
from multidnn_sched.models.train_embedder import (
    GroupSampler,
    LookalikeTraining,
    group_cosface_loss,
    lookalike_groups,
    train_embedder,
)
from multidnn_sched.models.train_loop import Schedule, crop_aug, random_erase
from multidnn_sched.scenes.generator import PATTERNS


def test_lookalike_groups_need_two_identities() -> None:
    k = len(PATTERNS)
    ids = torch.tensor([0, 1, 1, k, k, 2 * k + 3, 2 * k + 3])  # group 0: ids 0, 1; group 1: one id; group 2: one id
    groups = lookalike_groups(ids)
    assert list(groups) == [0]
    assert groups[0].tolist() == [0, 1, 2]


def test_group_cosface_loss_only_sees_the_group_and_rewards_the_right_texture() -> None:
    k = len(PATTERNS)
    ids = torch.tensor([k + 2])  # group 1, texture 2
    right = torch.full((1, 4 * k), -1.0)
    right[0, k:2 * k] = torch.tensor([0.1, 0.1, 0.9, 0.1])
    wrong = right.clone()
    wrong[0, k:2 * k] = torch.tensor([0.9, 0.1, 0.1, 0.1])
    assert float(group_cosface_loss(right, ids, 0.3)) < float(group_cosface_loss(wrong, ids, 0.3))
    # Columns outside the group do not change the loss (the all-identity CosFace covers them).
    other = right.clone()
    other[0, :k] = 1.0
    assert float(group_cosface_loss(other, ids, 0.3)) == pytest.approx(float(group_cosface_loss(right, ids, 0.3)))
    cos = right.clone().requires_grad_(True)
    group_cosface_loss(cos, ids, 0.3).backward()
    assert cos.grad is not None
    assert torch.count_nonzero(cos.grad[0, :k]) == 0 and torch.count_nonzero(cos.grad[0, k:2 * k]) == k


def test_random_erase_paints_one_flat_rectangle_or_nothing() -> None:
    images = torch.zeros((6, 3, 64, 64))
    random_erase(images, torch.Generator().manual_seed(0), probability=1.0)
    for img in images:
        painted = (img != 0).any(0)
        frac = float(painted.float().mean())
        assert 0.05 <= frac <= 0.45, frac
        rows, cols = torch.nonzero(painted, as_tuple=True)
        box = img[:, int(rows.min()):int(rows.max()) + 1, int(cols.min()):int(cols.max()) + 1]
        assert box.flatten(1).std(1).max() == 0.0  # one flat colour, one rectangle
    untouched = torch.zeros((4, 3, 16, 16))
    random_erase(untouched, torch.Generator().manual_seed(0), probability=0.0)
    assert torch.count_nonzero(untouched) == 0


def test_crop_aug_keeps_the_shape_and_rotates() -> None:
    crops = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8).to(torch.uint8)
    seen = set()
    for s in range(12):
        out = crop_aug(crops, torch.Generator().manual_seed(s), rotate=True)
        assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float32
        seen.add(tuple(out[0, 0].argmax(1).tolist()))
    assert len(seen) >= 3  # different orientations


def test_short_lookalike_run_trains_and_the_cli_records_it(tmp_path: Path) -> None:
    data = load_or_render(tmp_path / "cache", [201], 8, 2, 0, "hard", crop_every=1)
    assert data.emb_crops.shape[0] > 0
    model, steps = train_embedder(
        data.emb_crops, data.emb_ids, num_appearance_ids("hard"), Schedule(1e-3, 2, None), 0, 8, None,
        LookalikeTraining(erase_probability=0.5),
    )
    assert steps == 2 and not model.training
    assert (tmp_path / "cache" / next(iter((tmp_path / "cache").iterdir())).name).name.endswith("_c1_r0.pt")
    with pytest.raises(ConfigError, match="crop-every"):
        load_or_render(tmp_path / "cache", [201], 8, 2, 0, "hard", crop_every=0)
    out = tmp_path / "w"
    rc = main(["--model", "embedder", "--steps", "2", "--frames-per-seed", "8", "--train-seeds", "201",
               "--crop-every", "1", "--cache", str(tmp_path / "cache"), "--out", str(out), "--batch-size", "8"])
    assert rc == 0
    manifest = (out / "manifest.json").read_text()
    assert '"crop_every": 1' in manifest and '"erase_probability": 0.5' in manifest
    # Fine-tuning from those weights warm-starts the proxies from their embeddings and trains.
    again = tmp_path / "w2"
    rc = main(["--model", "embedder", "--steps", "1", "--frames-per-seed", "8", "--train-seeds", "201",
               "--crop-every", "1", "--cache", str(tmp_path / "cache"), "--out", str(again), "--batch-size", "8",
               "--init-from", str(out)])
    assert rc == 0 and str(out) in (again / "manifest.json").read_text()


def test_hard_group_mining_draws_the_groups_with_the_highest_running_loss_more_often() -> None:
    with pytest.raises(ValueError, match="hard_mining"):
        GroupSampler([1, 2], 1.5, torch.Generator())
    sampler = GroupSampler([10, 20, 30], 0.5, torch.Generator().manual_seed(0))
    for _ in range(50):
        sampler.update(10, 3.0)  # confused group
        sampler.update(20, 0.1)
        sampler.update(30, 0.1)
    counts = Counter(sampler.draw() for _ in range(3000))
    # p(10) = 0.5 / 3 + 0.5 * ~3 / ~3.2 ~ 0.63; the others ~ 0.19 each, never zero
    assert counts[10] / 3000 == pytest.approx(0.63, abs=0.05)
    assert min(counts[20], counts[30]) > 400
    uniform = GroupSampler([10, 20, 30], 0.0, torch.Generator().manual_seed(0))
    uniform.update(10, 3.0)
    counts = Counter(uniform.draw() for _ in range(3000))
    assert all(abs(c / 3000 - 1 / 3) < 0.05 for c in counts.values())
