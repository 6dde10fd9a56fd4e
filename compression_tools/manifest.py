"""Variant files and the manifest that lists them.

File formats (none can execute code when loaded):

- ``torch-safetensors``: the variant's ``state_dict`` in safetensors; the header's metadata holds a JSON
  *architecture delta* against the original block: attributes that changed (channel counts after pruning:
  ``{"layer3.0.conv1": {"out_channels": 128}}``) and sub-modules that were replaced by standard layers
  (a Tucker-2 ``Sequential`` of three convolutions), described as plain JSON specs. Loading deep-copies the
  original block, applies the delta with code, resizes parameters and loads the weights with ``strict=True``.
- ``onnx``: an ONNX graph (ORT int8 / fp32); the carry structure is in the model's ``metadata_props``.
- ``tensorrt``: a serialized TensorRT engine (GPU only, built per TensorRT version and GPU).

The manifest (``manifest.json``) has one :class:`VariantRecord` per variant, including one ``original``
record per block (no file) so reports and the scheduler can compare against the baseline.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
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
    usable: bool = True
    reason: str = ""


@dataclass
class ModelBaseline:
    """Whole-model reference figures of the original model.

    Attributes:
        accuracy: task metric of the original model on the evaluation frames.
        accuracy_metric: metric name (same as the variants' ``accuracy_metric``).
        eval_frames: number of frames the metric was computed on.
    """

    accuracy: float | None = None
    accuracy_metric: str = ""
    eval_frames: int = 0


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


def write_manifest(manifest: Manifest, path: Path) -> Path:
    """Write ``manifest`` as JSON to ``path`` (directories created); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not manifest.created_utc:
        manifest.created_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(asdict(manifest), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


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
    models = {name: ModelBaseline(**info) for name, info in raw.get("models", {}).items()}
    return Manifest(variants=variants, models=models, max_accuracy_drop=float(raw.get("max_accuracy_drop", 1.0)),
                    created_utc=str(raw.get("created_utc", "")), version=MANIFEST_VERSION)


def mark_usability(manifest: Manifest) -> list[VariantRecord]:
    """Set ``usable=False`` (with a reason) on variants whose accuracy is below their model's floor.

    The floor is ``baseline accuracy - manifest.max_accuracy_drop``. Returns the records marked unusable.
    """
    marked: list[VariantRecord] = []
    for record in manifest.variants:
        baseline = manifest.models.get(record.model)
        if record.kind == "original" or baseline is None or baseline.accuracy is None or record.accuracy is None:
            continue
        floor = baseline.accuracy - manifest.max_accuracy_drop
        if record.accuracy < floor:
            record.usable = False
            record.reason = (f"accuracy {record.accuracy:.2f} below floor {floor:.2f} "
                             f"(baseline {baseline.accuracy:.2f} - {manifest.max_accuracy_drop})")
            marked.append(record)
    return marked


# --- torch variants: safetensors + JSON architecture delta -------------------------------------------------

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


def module_spec(module: nn.Module) -> dict[str, Any]:
    """Describe a standard layer (or a Sequential / ModuleList of them) as plain JSON.

    Raises:
        VariantError: a layer type outside the supported set (named in the message).
    """
    kind = type(module).__name__
    if kind in _CONTAINERS:
        return {"type": kind, "children": [[name, module_spec(child)] for name, child in module.named_children()]}
    if kind not in _SPEC_ARGS or type(module) is not getattr(nn, kind):
        raise VariantError(f"cannot describe layer type {type(module).__module__}.{kind} as JSON; supported: "
                           f"{sorted(_SPEC_ARGS) + list(_CONTAINERS)}")
    args: dict[str, Any] = {key: getattr(module, key) for key in _SPEC_ARGS[kind]}
    if kind in ("Conv1d", "Conv2d", "Linear"):
        args["bias"] = module.bias is not None
    if kind in ("Conv1d", "Conv2d"):
        args["padding_mode"] = module.padding_mode
    return {"type": kind, "args": _jsonable(args)}


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


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


_PLAIN = (bool, int, float, str, tuple, type(None))


def architecture_delta(original: nn.Module, variant: nn.Module) -> dict[str, Any]:
    """Describe how ``variant``'s module tree differs from ``original``'s (see the module docstring)."""
    resized: dict[str, dict[str, Any]] = {}
    replaced: dict[str, dict[str, Any]] = {}

    def walk(orig: nn.Module, var: nn.Module, prefix: str) -> None:
        if type(orig) is not type(var) or list(orig._modules) != list(var._modules):
            replaced[prefix] = module_spec(var)
            return
        changed = {key: _jsonable(val) for key, val in vars(var).items()
                   if not key.startswith("_") and key != "training" and isinstance(val, _PLAIN)
                   and vars(orig).get(key) != val}
        if changed:
            resized[prefix] = changed
        for name, child in var._modules.items():
            sub = orig._modules[name]
            if child is None or sub is None:
                if (child is None) != (sub is None):
                    raise VariantError(f"sub-module {prefix + name!r} is None in one of the two modules only")
                continue
            walk(sub, child, f"{prefix}{name}.")

    walk(original, variant, "")
    return {"resized": {k.rstrip("."): v for k, v in resized.items()},
            "replaced": {k.rstrip("."): v for k, v in replaced.items()}}


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


def save_variant(variant: nn.Module, original: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Save a torch variant of ``original`` as safetensors + JSON architecture delta; returns ``path``.

    Raises:
        VariantError: the variant holds a replaced layer type that cannot be described as JSON.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    delta = architecture_delta(original, variant)
    state = {k: v.detach().contiguous().clone() for k, v in variant.state_dict().items()}
    meta = {"format": _SAFETENSORS_TAG, "arch": json.dumps(delta, sort_keys=True)}
    meta.update(metadata or {})
    save_file(state, str(path), metadata=meta)
    return path


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
