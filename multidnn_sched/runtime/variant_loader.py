"""Load a model's block variants from a compression manifest, verified and pre-loaded for the hot-swap.

Every file is checked against its manifest sha256 before anything is read from it (a mismatch raises
:class:`CheckpointError`); torch variants are rebuilt from safetensors + JSON (no pickles), ONNX variants become
:class:`~multidnn_sched.runtime.backends.ort.OrtBlock` sessions, TensorRT engines
:class:`~multidnn_sched.runtime.backends.trt.TrtBlock`
(only on a CUDA device). The result maps block names to ready :class:`BlockVariant` objects, so a swap is a
reference switch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from multidnn_sched.exceptions import CheckpointError, VariantError
from multidnn_sched.runtime.backends.manifest import (
    Manifest,
    VariantRecord,
    load_variant,
    read_manifest,
    verify_file,
    weights_fingerprint,
)
from multidnn_sched.runtime.block import BlockVariant, PartitionedModel
from multidnn_sched.runtime.kernels import use_onednn_pointwise, uses_onednn_pointwise

_log = logging.getLogger(__name__)


def _ready_module(record: VariantRecord, path: Path, pm: PartitionedModel, intra_op_threads: int | None,
                  device: str) -> Any:
    if record.format == "torch-safetensors":
        original = pm.block(record.block).module
        module = load_variant(path, original).to(device)
        if uses_onednn_pointwise(original):
            use_onednn_pointwise(module)  # the variant follows its block's kernel choice (runtime.kernels)
        return module
    if record.format == "onnx":
        from multidnn_sched.runtime.backends.ort import OrtBlock

        return OrtBlock(path, intra_op_threads)
    if record.format == "tensorrt":
        from multidnn_sched.runtime.backends.trt import TrtBlock

        return TrtBlock(path)
    raise CheckpointError(f"variant {record.model}/{record.block}/{record.name}: cannot load format {record.format!r}")


def check_weights(manifest: Manifest, manifest_path: Path, partitioned_model: PartitionedModel) -> None:
    """Refuse variants cut from other weights than the model's (retrained since, or random weights).

    Raises:
        CheckpointError: the manifest's ``weights_fingerprint`` of the model differs from the model's own.
    """
    baseline = manifest.models.get(partitioned_model.name)
    expected = baseline.weights_fingerprint if baseline is not None else ""
    if not expected:
        if any(r.model == partitioned_model.name and r.kind != "original" for r in manifest.variants):
            _log.warning("manifest %s records no weights fingerprint for %r (built before it was recorded): "
                         "cannot check that its variants were cut from these weights", manifest_path,
                         partitioned_model.name)
        return
    got = weights_fingerprint((b.name, b.module) for b in partitioned_model.blocks)
    if got != expected:
        raise CheckpointError(
            f"manifest {manifest_path}: the variants of {partitioned_model.name!r} were built from other weights "
            f"(fingerprint {expected[:12]}, this model's {got[:12]}): the model was retrained or loaded with other "
            f"weights since; rebuild its variants (multidnn-compress build-defaults, or build --model ...)")


def load_variants(
    manifest_path: Path,
    partitioned_model: PartitionedModel,
    *,
    intra_op_threads: int | None = None,
    device: str = "cpu",
    include_unusable: bool = False,
    device_key: str | None = None,
) -> dict[str, list[BlockVariant]]:
    """Load the variants of ``partitioned_model`` listed in a manifest.

    Args:
        manifest_path: ``manifest.json`` written by ``multidnn-compress``; files are relative to its directory.
        partitioned_model: the model whose blocks the variants replace (records of other models are ignored;
            torch variants are rebuilt on top of its original blocks).
        intra_op_threads: ORT intra-op threads of ONNX variants; ``None`` (default): follow the calling
            thread's torch thread count, which the executor sets per block.
        device: torch device for torch variants; TensorRT variants are loaded only when it is ``"cuda..."``.
        include_unusable: also return variants the manifest marks unusable (with ``usable=False``, not loaded:
            ``module`` is ``None``).
        device_key: which ``solo_latency_ms`` entry to copy (default: ``"cpu"`` or the first CUDA key).

    Returns:
        ``{block name: [BlockVariant, ...]}`` for blocks that have variants.

    Raises:
        CheckpointError: manifest unreadable, a file missing or failing its sha256 check, weights not fitting.
        VariantError: a record names a block the model does not have.
    """
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    check_weights(manifest, manifest_path, partitioned_model)
    root = manifest_path.parent
    result: dict[str, list[BlockVariant]] = {}
    for record in manifest.variants:
        if record.model != partitioned_model.name or record.kind == "original":
            continue
        if record.block not in partitioned_model.block_names:
            raise VariantError(f"manifest {manifest_path}: variant {record.name!r} is for block {record.block!r}, "
                               f"model {partitioned_model.name!r} has {partitioned_model.block_names}")
        if record.format == "tensorrt" and not device.startswith("cuda"):
            continue
        key = device_key or ("cpu" if device == "cpu" else next(
            (k for k in record.solo_latency_ms if k.startswith("cuda")), device))
        variant = BlockVariant(name=record.name, module=None, kind=record.kind,
                               solo_latency_ms=record.solo_latency_ms.get(key), accuracy=record.accuracy,
                               macs=record.macs, params=record.params, usable=record.usable)
        if record.usable:
            path = root / record.file
            verify_file(path, record.sha256)
            variant.module = _ready_module(record, path, partitioned_model, intra_op_threads, device)
        elif not include_unusable:
            continue
        result.setdefault(record.block, []).append(variant)
        _log.info("loaded variant %s/%s/%s (%s)", record.model, record.block, record.name, record.format)
    return result


def attach_variants(partitioned_model: PartitionedModel, variants: dict[str, list[BlockVariant]]) -> int:
    """Put loaded variants into ``Block.variants`` (keyed by name); returns how many were attached."""
    count = 0
    for block_name, items in variants.items():
        block = partitioned_model.block(block_name)
        for variant in items:
            if variant.module is not None:
                block.variants[variant.name] = variant
                count += 1
    return count
