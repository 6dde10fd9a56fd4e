"""Training material of multidnn-train: profile-keyed cache, appearance identities per profile."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from multidnn_sched.exceptions import ConfigError
from multidnn_sched.models.train import load_or_render, num_appearance_ids
from multidnn_sched.scenes.generator import HARD_PROFILE_VERSION


def test_cache_is_keyed_by_profile_and_ids_fit_the_profile(tmp_path: Path) -> None:
    hard = load_or_render(tmp_path, [201], 4, 2, 0, "hard")
    easy = load_or_render(tmp_path, [201], 4, 2, 0, "easy")
    names = sorted(p.name for p in tmp_path.iterdir())
    # The hard key carries the world-rules version, so a cache rendered by older rules is not reused.
    assert names == ["train_easy_s201-201_f4_k2_r0.pt", f"train_hardv{HARD_PROFILE_VERSION}_s201-201_f4_k2_r0.pt"]
    assert hard.images.shape[0] == easy.images.shape[0] == 2
    assert not torch.equal(hard.images, easy.images)
    assert int(hard.emb_ids.max()) < num_appearance_ids("hard") and int(easy.emb_ids.max()) < num_appearance_ids(
        "easy")
    assert num_appearance_ids("hard") > num_appearance_ids("easy")
    again = load_or_render(tmp_path, [201], 4, 2, 0, "hard")  # from the cache
    assert torch.equal(again.images, hard.images) and torch.equal(again.emb_ids, hard.emb_ids)
    assert again.profile == "hard"
    with pytest.raises(ConfigError, match="profile"):
        load_or_render(tmp_path, [201], 4, 2, 0, "medium")
