"""Checkpoint files: sha256 / shape / missing-file errors name the file; fp16 round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from multidnn_sched.exceptions import CheckpointError
from multidnn_sched.models.checkpoints import (
    CheckpointEntry,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
    sha256_of,
    write_manifest,
)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


@pytest.fixture()
def weights_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = _net()
    entry = save_checkpoint(model, tmp_path / "net.safetensors", "tiny_net", (8, 8), training={"steps": 3})
    write_manifest({"net": entry}, tmp_path)
    torch.save(model.state_dict(), tmp_path / "reference.pt")
    return tmp_path


def test_round_trip_fp16(weights_dir: Path) -> None:
    reference = torch.load(weights_dir / "reference.pt", weights_only=True)
    model = _net()
    entry = load_checkpoint(model, "net", weights_dir)
    assert entry.architecture == "tiny_net" and entry.storage_dtype == "float16"
    assert entry.training == {"steps": 3}
    for key, value in model.state_dict().items():
        assert value.dtype == reference[key].dtype
        assert torch.allclose(value.float(), reference[key].float(), atol=1e-3, rtol=1e-3)
    manifest = json.loads((weights_dir / "manifest.json").read_text())
    assert manifest["models"]["net"]["sha256"] == sha256_of(weights_dir / "net.safetensors")
    assert manifest["models"]["net"]["bytes"] == (weights_dir / "net.safetensors").stat().st_size


def test_tampered_file_fails_sha256(weights_dir: Path) -> None:
    path = weights_dir / "net.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"net\.safetensors: sha256 mismatch"):
        load_checkpoint(_net(), "net", weights_dir)


def test_wrong_shape_tensor_is_named(weights_dir: Path) -> None:
    path = weights_dir / "net.safetensors"
    wrong = {k: v.half() if v.is_floating_point() else v for k, v in _net().state_dict().items()}
    wrong["3.weight"] = torch.zeros(5, 4, 1, 1, dtype=torch.float16)
    save_file(wrong, str(path))
    entries = read_manifest(weights_dir)
    entries["net"].sha256 = sha256_of(path)  # a consistent manifest: only the shape is wrong
    write_manifest(entries, weights_dir)
    with pytest.raises(
        CheckpointError, match=r"net\.safetensors .*: tensor '3\.weight' has shape \[5, 4, 1, 1\]"
    ):
        load_checkpoint(_net(), "net", weights_dir)


def test_missing_tensor_is_reported(weights_dir: Path) -> None:
    other = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(CheckpointError, match=r"net\.safetensors .*: tensor names do not match.*unexpected"):
        load_checkpoint(other, "net", weights_dir)


def test_missing_file(weights_dir: Path) -> None:
    (weights_dir / "net.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"net\.safetensors: checkpoint file for 'net' is missing"):
        load_checkpoint(_net(), "net", weights_dir)


def test_unknown_name_and_missing_manifest(
    weights_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint called 'detector'"):
        load_checkpoint(_net(), "detector", weights_dir)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(CheckpointError, match="manifest.json: checkpoint manifest not found"):
        load_checkpoint(_net(), "net", empty)


def test_corrupt_manifest(weights_dir: Path) -> None:
    (weights_dir / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="manifest.json: expected a JSON checkpoint manifest"):
        read_manifest(weights_dir)


def test_not_a_safetensors_file(weights_dir: Path) -> None:
    path = weights_dir / "net.safetensors"
    path.write_bytes(b"garbage" * 10)
    entries = read_manifest(weights_dir)
    entries["net"] = CheckpointEntry(**{**entries["net"].__dict__, "sha256": sha256_of(path)})
    write_manifest(entries, weights_dir)
    with pytest.raises(CheckpointError, match=r"net\.safetensors: not a readable safetensors file"):
        load_checkpoint(_net(), "net", weights_dir)


def test_shipped_manifest_matches_files() -> None:
    """The shipped weights verify and stay within the 40 MB budget."""
    from multidnn_sched.models.checkpoints import WEIGHTS_DIR

    entries = read_manifest(WEIGHTS_DIR)
    assert set(entries) == {"detector", "embedder", "classifier"}
    total = 0
    for entry in entries.values():
        path = WEIGHTS_DIR / entry.file
        assert sha256_of(path) == entry.sha256
        assert path.stat().st_size == entry.bytes
        total += entry.bytes
    assert total <= 40 * 1024 * 1024
