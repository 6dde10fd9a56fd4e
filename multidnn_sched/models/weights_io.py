"""Weights files of registry models: ``.safetensors`` or a ``torch.save`` state dict read with ``weights_only``.

Neither format can execute code. Every tensor is checked against the architecture before anything is copied;
a mismatch raises :class:`~multidnn_sched.exceptions.CheckpointError` naming the file, the tensor and both
shapes.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from multidnn_sched.exceptions import CheckpointError

STATE_DICT_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin", ".ckpt")
"""File endings read with ``torch.load(..., weights_only=True)``."""

NESTED_STATE_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model")
"""Training checkpoints often nest the state dict under one of these keys; it is taken from there."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read the tensors of a weights file.

    Args:
        path: a ``.safetensors`` file, or a ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` state dict (possibly
            nested under ``state_dict`` / ``model_state_dict`` / ``model``).

    Raises:
        CheckpointError: the file is missing, has another ending, or is not readable as that format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: expected a safetensors file, could not read it: {exc}") from exc
    if suffix not in STATE_DICT_SUFFIXES:
        raise CheckpointError(
            f"{path}: expected a weights file ending in .safetensors or {', '.join(STATE_DICT_SUFFIXES)}, "
            f"got {suffix or 'no ending'!r}"
        )
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(
            f"{path}: expected a state dict saved with torch.save (loaded with weights_only=True), "
            f"could not read it: {exc}"
        ) from exc
    if isinstance(raw, dict):
        for key in NESTED_STATE_KEYS:
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(
            f"{path}: expected a state dict (tensor name -> tensor), got {type(raw).__name__}"
            + (" with non-tensor values" if isinstance(raw, dict) else "")
        )
    return {str(k): v for k, v in raw.items()}


def fit_state_dict(model: nn.Module, state: dict[str, Tensor], where: str) -> dict[str, Tensor]:
    """``state`` checked against ``model``'s tensor names and shapes and cast to its dtypes.

    ``num_batches_tracked`` buffers may be absent (torchvision's BatchNorm counts batches in them; older
    exports do not carry them: not a weight). ``where`` starts every message (file and model).

    Raises:
        CheckpointError: missing / unexpected tensors, or a tensor of the wrong shape (named, with both shapes).
    """
    expected = model.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: tensor names do not match: missing {len(missing)} {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {len(unexpected)} {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    fitted = dict(state)
    for key, tensor in expected.items():
        if key not in fitted:
            continue
        if tuple(fitted[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{where}: tensor {key!r} has shape {list(fitted[key].shape)}, expected {list(tensor.shape)}"
            )
        fitted[key] = fitted[key].to(tensor.dtype)
    return fitted


def load_weights(model: nn.Module, path: str | Path, what: str) -> None:
    """Copy the weights in ``path`` into ``model`` (cast to its dtypes) after checking names and shapes.

    Args:
        model: an instance of the architecture.
        path: weights file (see :func:`read_state_dict`).
        what: the model's registry name, for messages.

    Raises:
        CheckpointError: unreadable file, missing / unexpected tensors, or a tensor of the wrong shape (the
            message names the file, the tensor, the expected and the found shape).
    """
    path = Path(path)
    model.load_state_dict(fit_state_dict(model, read_state_dict(path), f"{path}: weights do not fit {what}"),
                          strict=False)


def read_labels_file(path: str | Path) -> tuple[str, ...]:
    """Class names, one per line (blank lines and lines starting with ``#`` skipped).

    Raises:
        CheckpointError: missing or unreadable file, or a file without any name.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: labels file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: expected a UTF-8 text file of class names, could not read it: {exc}") from exc
    labels = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    if not labels:
        raise CheckpointError(f"{path}: expected one class name per line, got no names")
    return labels
