"""Shipped checkpoints: safetensors files + ``manifest.json`` with sha256, size, architecture and training facts.

Loading verifies the file's sha256 against the manifest and every tensor's name and shape against the
architecture; any mismatch raises :class:`~multidnn_sched.exceptions.CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from multidnn_sched.exceptions import CheckpointError
from multidnn_sched.models.weights_io import fit_state_dict

WEIGHTS_DIR: Path = Path(__file__).resolve().parent / "weights"
MANIFEST_NAME: str = "manifest.json"


@dataclass
class CheckpointEntry:
    """One model's line in ``manifest.json``.

    Attributes:
        file: file name inside the weights directory.
        sha256: hex digest of the file.
        bytes: file size.
        architecture: architecture name, e.g. ``"resnet18_fpn_centernet"``.
        input_size_hw: network input (height, width), pixels.
        storage_dtype: ``"float16"`` or ``"float32"`` (floating tensors; integer buffers keep their dtype).
        training: seed(s), steps, time and anything else that reproduces the run.
        metrics: validation figures measured at the end of training.
    """

    file: str
    sha256: str
    bytes: int
    architecture: str
    input_size_hw: list[int]
    storage_dtype: str = "float16"
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    model: nn.Module,
    path: Path,
    architecture: str,
    input_size_hw: tuple[int, int],
    storage_dtype: torch.dtype = torch.float16,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> CheckpointEntry:
    """Write ``model``'s state dict to ``path`` (safetensors) and return its manifest entry."""
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        state[name] = tensor.to(storage_dtype) if tensor.is_floating_point() else tensor
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"architecture": architecture})
    return CheckpointEntry(
        file=path.name,
        sha256=sha256_of(path),
        bytes=path.stat().st_size,
        architecture=architecture,
        input_size_hw=list(input_size_hw),
        storage_dtype=str(storage_dtype).replace("torch.", ""),
        training=dict(training or {}),
        metrics=dict(metrics or {}),
    )


def read_manifest(weights_dir: Path = WEIGHTS_DIR) -> dict[str, CheckpointEntry]:
    """Read ``weights_dir/manifest.json`` -> {model name: entry}.

    Raises:
        CheckpointError: the manifest is missing, not JSON, or lacks a field.
    """
    path = Path(weights_dir) / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: checkpoint manifest not found") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{path}: expected a JSON checkpoint manifest, could not read it: {exc}"
        ) from exc
    models = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(models, dict):
        raise CheckpointError(f"{path}: expected an object with a 'models' mapping, got {type(raw).__name__}")
    entries: dict[str, CheckpointEntry] = {}
    for name, fields in models.items():
        try:
            entries[name] = CheckpointEntry(**fields)
        except TypeError as exc:
            raise CheckpointError(f"{path}: entry {name!r} is malformed: {exc}") from exc
    return entries


def write_manifest(entries: dict[str, CheckpointEntry], weights_dir: Path = WEIGHTS_DIR) -> Path:
    """Write (merge into) ``weights_dir/manifest.json``; returns its path."""
    path = Path(weights_dir) / MANIFEST_NAME
    existing: dict[str, Any] = {}
    if path.exists():
        existing = {name: asdict(entry) for name, entry in read_manifest(weights_dir).items()}
    existing.update({name: asdict(entry) for name, entry in entries.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"format": 1, "models": existing}, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return path


def load_checkpoint(model: nn.Module, name: str, weights_dir: Path = WEIGHTS_DIR) -> CheckpointEntry:
    """Load the checkpoint called ``name`` into ``model`` after verifying sha256, names and shapes.

    Args:
        model: an instance of the right architecture (weights are copied in, cast to its dtype).
        name: manifest key, e.g. ``"detector"``.
        weights_dir: directory holding ``manifest.json`` and the safetensors files.

    Returns:
        The manifest entry.

    Raises:
        CheckpointError: missing manifest entry or file, sha256 mismatch, unreadable file, missing / unexpected
            tensors or a tensor of the wrong shape. The message names the file.
    """
    entries = read_manifest(weights_dir)
    if name not in entries:
        raise CheckpointError(
            f"{Path(weights_dir) / MANIFEST_NAME}: no checkpoint called {name!r}; has {sorted(entries)}"
        )
    entry = entries[name]
    path = Path(weights_dir) / entry.file
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file for {name!r} is missing")
    actual_sha = sha256_of(path)
    if actual_sha != entry.sha256:
        raise CheckpointError(
            f"{path}: sha256 mismatch, expected {entry.sha256} (manifest), got {actual_sha}; "
            "the file is corrupt or was replaced"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from exc
    model.load_state_dict(fit_state_dict(model, state, f"{path} (architecture {entry.architecture!r})"))
    return entry
