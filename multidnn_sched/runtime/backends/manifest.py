"""Reading block-variant manifests and loading their files (the runtime side; the writers live with the
offline compression tool).

File formats (none can execute code when loaded):

- ``torch-safetensors``: the variant's ``state_dict`` in safetensors; the header's metadata holds a JSON
  *architecture delta* against the original block (changed attributes, replaced sub-modules as plain JSON
  specs). Loading deep-copies the original block, applies the delta, resizes parameters and loads the weights
  with ``strict=True``.
- ``onnx``: an ONNX graph (ORT int8 / fp32), run by :class:`~multidnn_sched.runtime.backends.ort.OrtBlock`.
- ``tensorrt``: a serialized TensorRT engine, run by :class:`~multidnn_sched.runtime.backends.trt.TrtBlock`.

The manifest (``manifest.json``) has one :class:`VariantRecord` per variant, including one ``original`` record
per block (no file). Every file is sha256-checked (:func:`verify_file`) before it is loaded.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multidnn_sched.exceptions import CheckpointError, VariantError

MANIFEST_VERSION = 1


FORMATS: tuple[str, ...] = ("builtin", "torch-safetensors", "onnx", "tensorrt")


_SAFETENSORS_TAG = "multidnn_sched.variant/1"


@dataclass
class VariantRecord:
    """One variant of one block, as listed in the manifest.

    Attributes:
        model: model name (``PartitionedModel.name``).
        block: block name within the model.
        name: variant name unique within the block, e.g. ``"prune50+int8"``; ``"original"`` for the baseline.
        kind: ``"original"``, ``"prune"``, ``"int8"``, ``"tucker"``, ``"trt_fp16"``... joined by ``+``.
        format: one of :data:`FORMATS` (``"builtin"``: the original block, no file).
        file: path of the variant file relative to the manifest's directory (``""`` for builtin).
        sha256: hex digest of the file (``""`` for builtin).
        bytes: file size in bytes (for builtin: fp32 parameter + buffer bytes).
        params: parameter count (non-zero count for unstructured pruning).
        macs: multiply-accumulates per inference at the profiled input shape (``None``: not counted).
        settings: how it was made (ratio, importance, calibration frames, thread count...).
        solo_latency_ms: solo latency (20th percentile of timed runs) per device key (``"cpu"``, ``"cuda:..."``).
        accuracy: task metric (or fidelity, see ``accuracy_metric``) of the model with only this block swapped.
        accuracy_metric: what ``accuracy`` measures, e.g. ``"top1_agreement_pct"``, ``"mAP50"``.
        eval_frames: held-out frames ``accuracy`` was measured on (0: unknown, older manifests).
        eval_samples: scored units within them (GT objects, re-identification queries, crops; 0: unknown).
        usable: ``False`` when the variant must not be swapped in (accuracy below the floor, failed check).
        reason: why it is unusable (empty when usable).
    """

    model: str
    block: str
    name: str
    kind: str
    format: str
    file: str = ""
    sha256: str = ""
    bytes: int = 0
    params: int | None = None
    macs: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    solo_latency_ms: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None
    accuracy_metric: str = ""
    eval_frames: int = 0
    eval_samples: int = 0
    usable: bool = True
    reason: str = ""


@dataclass
class ModelBaseline:
    """Whole-model reference figures of the original model.

    Attributes:
        accuracy: task metric of the original model on the evaluation frames.
        accuracy_metric: metric name (same as the variants' ``accuracy_metric``).
        eval_frames: number of frames the metric was computed on.
        eval_samples: scored units within them (GT objects, re-identification queries, crops).
        scene_profile: scene profile of the evaluation, calibration and fine-tune frames.
        heldout_seeds: scene seeds of the evaluation frames, disjoint from the three lists below.
        calibration_seeds: scene seeds of the int8 calibration carries.
        finetune_seeds: scene seeds of the ``+ft`` distillation carries.
        training_seeds: scene seeds the model's weights were trained on (empty: unknown).
        weights_fingerprint: :func:`weights_fingerprint` of the original model the variants were built from
            (empty: a manifest from before it was recorded). Variants cut from other weights (the model was
            retrained, or runs with random weights) would be silently wrong, so loading refuses them.
    """

    accuracy: float | None = None
    accuracy_metric: str = ""
    eval_frames: int = 0
    eval_samples: int = 0
    scene_profile: str = ""
    heldout_seeds: list[int] = field(default_factory=list)
    calibration_seeds: list[int] = field(default_factory=list)
    finetune_seeds: list[int] = field(default_factory=list)
    training_seeds: list[int] = field(default_factory=list)
    weights_fingerprint: str = ""


def weights_fingerprint(blocks: Iterable[tuple[str, nn.Module]]) -> str:
    """sha256 over the blocks' state dicts (names, dtypes, shapes, values) in order: which weights a model has.

    ``blocks``: ``(block name, module)`` pairs, e.g. ``(b.name, b.module) for b in partitioned_model.blocks``
    before any variant is active. Computed on the loaded tensors, so it does not depend on the file format the
    weights came in (fp16 safetensors are compared after loading into the model)."""
    digest = hashlib.sha256()
    for block_name, module in blocks:
        for key, tensor in module.state_dict().items():
            value = tensor.detach().cpu().contiguous()
            digest.update(f"{block_name}.{key}:{value.dtype}:{tuple(value.shape)};".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


@dataclass
class Manifest:
    """All variants of all blocks of one or more models.

    Attributes:
        variants: one record per variant (``original`` records included).
        models: baseline figures per model name.
        max_accuracy_drop: accuracy floor used for ``usable``: baseline minus this many metric points.
        created_utc: ISO-8601 creation time.
        version: manifest schema version.
    """

    variants: list[VariantRecord] = field(default_factory=list)
    models: dict[str, ModelBaseline] = field(default_factory=dict)
    max_accuracy_drop: float = 1.0
    created_utc: str = ""
    version: int = MANIFEST_VERSION

    def for_block(self, model: str, block: str) -> list[VariantRecord]:
        """Return the records of one block, ``original`` first."""
        records = [r for r in self.variants if r.model == model and r.block == block]
        return sorted(records, key=lambda r: r.kind != "original")

    def original(self, model: str, block: str) -> VariantRecord | None:
        """Return the ``original`` record of one block, or ``None``."""
        return next((r for r in self.for_block(model, block) if r.kind == "original"), None)


def sha256_file(path: Path) -> str:
    """Return the hex sha256 digest of the file at ``path``."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str) -> None:
    """Raise :class:`CheckpointError` unless the file exists and its sha256 equals ``expected_sha256``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"variant file {path} is missing")
    got = sha256_file(path)
    if got != expected_sha256:
        raise CheckpointError(f"variant file {path} fails its sha256 check: expected {expected_sha256}, got {got} "
                              "(modified or corrupted; rebuild it with multidnn-compress)")


def _record(raw: dict[str, Any], path: Path, index: int) -> VariantRecord:
    known = {f.name for f in fields(VariantRecord)}
    missing = [k for k in ("model", "block", "name", "kind", "format") if k not in raw]
    if missing or not set(raw) <= known:
        raise CheckpointError(f"manifest {path}: variant #{index} expected keys {sorted(known)}, "
                              f"missing {missing}, unknown {sorted(set(raw) - known)}")
    record = VariantRecord(**raw)
    if record.format not in FORMATS:
        raise CheckpointError(f"manifest {path}: variant #{index} format expected one of {FORMATS}, "
                              f"got {record.format!r}")
    return record


def read_manifest(path: Path) -> Manifest:
    """Read and validate a manifest written by :func:`write_manifest`.

    Raises:
        CheckpointError: missing file, invalid JSON, wrong schema version or malformed records.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"manifest {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"manifest {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("version") != MANIFEST_VERSION:
        got = raw.get("version") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"manifest {path}: expected schema version {MANIFEST_VERSION}, got {got!r}")
    variants = [_record(item, path, i) for i, item in enumerate(raw.get("variants", []))]
    models: dict[str, ModelBaseline] = {}
    for name, info in raw.get("models", {}).items():
        try:
            models[name] = ModelBaseline(**info)
        except TypeError as exc:
            raise CheckpointError(f"manifest {path}: model {name!r} expected keys "
                                  f"{sorted(f.name for f in fields(ModelBaseline))}: {exc}") from exc
    return Manifest(variants=variants, models=models, max_accuracy_drop=float(raw.get("max_accuracy_drop", 1.0)),
                    created_utc=str(raw.get("created_utc", "")), version=MANIFEST_VERSION)


_SPEC_ARGS: dict[str, tuple[str, ...]] = {
    "Conv1d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"),
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"),
    "Linear": ("in_features", "out_features"),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "ReLU": ("inplace",),
    "ReLU6": ("inplace",),
    "SiLU": ("inplace",),
    "Hardswish": ("inplace",),
    "Hardsigmoid": ("inplace",),
    "Identity": (),
    "Flatten": ("start_dim", "end_dim"),
    "Dropout": ("p", "inplace"),
}


_CONTAINERS = ("Sequential", "ModuleList")


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a module from :func:`module_spec` output (weights uninitialised until a state dict is loaded).

    Raises:
        VariantError: an unknown type in the spec.
    """
    kind = spec.get("type")
    if kind in _CONTAINERS:
        container = getattr(nn, kind)()
        for name, child in spec.get("children", []):
            container.add_module(name, build_from_spec(child))
        return container
    if kind not in _SPEC_ARGS:
        raise VariantError(f"expected a layer type in {sorted(_SPEC_ARGS)}, got {kind!r}")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("args", {}).items()}
    return getattr(nn, kind)(**args)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> nn.Module:
    if not name:
        return module
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, module)
    return root


def apply_delta(original: nn.Module, delta: dict[str, Any]) -> nn.Module:
    """Return a deep copy of ``original`` with an :func:`architecture_delta` applied (weights not loaded)."""
    module = copy.deepcopy(original)
    for name, spec in delta.get("replaced", {}).items():
        module = _set_submodule(module, name, build_from_spec(spec))
    for name, attrs in delta.get("resized", {}).items():
        target = module.get_submodule(name) if name else module
        for key, value in attrs.items():
            current = getattr(target, key, None)
            setattr(target, key, tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value)
    return module


def _resize_to(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for key, tensor in state.items():
        owner_name, _, leaf = key.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if leaf in owner._parameters and owner._parameters[leaf] is not None:
            if owner._parameters[leaf].shape != tensor.shape:
                owner._parameters[leaf] = nn.Parameter(torch.empty_like(tensor), requires_grad=False)
        elif leaf in owner._buffers and owner._buffers[leaf] is not None:
            if owner._buffers[leaf].shape != tensor.shape:
                owner._buffers[leaf] = torch.empty_like(tensor)


def load_variant(path: Path, original: nn.Module) -> nn.Module:
    """Rebuild a torch variant saved by :func:`save_variant` on top of a copy of ``original``.

    Verify the sha256 first (:func:`verify_file`); this function only checks the format and shapes.

    Raises:
        CheckpointError: not a variant file, or weights that do not fit the rebuilt architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"variant file {path} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != _SAFETENSORS_TAG or "arch" not in meta:
        raise CheckpointError(f"variant file {path}: expected metadata format {_SAFETENSORS_TAG!r} with 'arch', "
                              f"got format {meta.get('format')!r}")
    try:
        module = apply_delta(original, json.loads(meta["arch"]))
        _resize_to(module, state)
        module.load_state_dict(state, strict=True)
    except (RuntimeError, AttributeError, KeyError, VariantError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"variant file {path} does not fit block {type(original).__name__}: {exc}") from exc
    return module.eval()
