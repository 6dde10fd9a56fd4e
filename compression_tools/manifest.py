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

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from multidnn_sched.exceptions import VariantError
from multidnn_sched.runtime.backends.manifest import (  # noqa: F401 - re-exported: the runtime reads, this writes
    _CONTAINERS,
    _SAFETENSORS_TAG,
    _SPEC_ARGS,
    FORMATS,
    MANIFEST_VERSION,
    Manifest,
    ModelBaseline,
    VariantRecord,
    _record,
    _resize_to,
    _set_submodule,
    apply_delta,
    build_from_spec,
    load_variant,
    read_manifest,
    sha256_file,
    verify_file,
    weights_fingerprint,
)


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


