"""Tests of compression_tools.manifest and multidnn_sched.runtime.variant_loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from compression_tools.manifest import (
    Manifest,
    ModelBaseline,
    VariantRecord,
    load_variant,
    mark_usability,
    read_manifest,
    save_variant,
    sha256_file,
    write_manifest,
)
from compression_tools.prune import prune_block
from compression_tools.quantize import OrtBlock, quantize_block_ort_int8
from multidnn_sched.exceptions import CheckpointError, VariantError
from multidnn_sched.runtime.block import Block, PartitionedModel
from multidnn_sched.runtime.variant_loader import attach_variants, load_variants


def _model() -> PartitionedModel:
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()).eval()
    body = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 16, 3, padding=1), nn.ReLU()).eval()
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()
    return PartitionedModel("toy", [Block("stem", stem), Block("body", body), Block("head", head)])


def _tucker_like(body: nn.Sequential) -> nn.Sequential:
    """Replace conv 0 by a 1x1 -> 3x3 -> 1x1 Sequential (what Tucker-2 produces)."""
    import copy

    out = copy.deepcopy(body)
    out[0] = nn.Sequential(nn.Conv2d(16, 4, 1, bias=False), nn.Conv2d(4, 8, 3, padding=1, bias=False),
                           nn.Conv2d(8, 32, 1))
    return out.eval()


def test_pruned_variant_round_trips_through_safetensors(tmp_path: Path) -> None:
    pm = _model()
    body = pm.block("body").module
    x = torch.randn(2, 16, 8, 8)
    pruned = prune_block(body, x[:1], 0.5, round_to=None)
    path = save_variant(pruned, body, tmp_path / "p.safetensors")
    loaded = load_variant(path, body)
    assert loaded[0].out_channels == pruned[0].out_channels == 16
    torch.testing.assert_close(loaded(x), pruned(x))
    assert body[0].out_channels == 32  # the original is not modified by loading


def test_replaced_submodule_round_trips(tmp_path: Path) -> None:
    body = _model().block("body").module
    variant = _tucker_like(body)
    loaded = load_variant(save_variant(variant, body, tmp_path / "t.safetensors"), body)
    assert isinstance(loaded[0], nn.Sequential) and loaded[0][1].in_channels == 4
    x = torch.randn(1, 16, 8, 8)
    torch.testing.assert_close(loaded(x), variant(x))


def test_unknown_replacement_layer_type_is_refused(tmp_path: Path) -> None:
    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    body = _model().block("body").module
    import copy

    variant = copy.deepcopy(body)
    variant[2] = Odd()
    with pytest.raises(VariantError, match="Odd"):
        save_variant(variant, body, tmp_path / "o.safetensors")


def _write_manifest(tmp_path: Path, pm: PartitionedModel) -> Path:
    body = pm.block("body").module
    x = torch.randn(1, 16, 8, 8)
    pruned = prune_block(body, x, 0.5, round_to=None)
    pruned_path = save_variant(pruned, body, tmp_path / "toy/body/prune50.safetensors")
    calibration = [torch.rand(1, 16, 8, 8) for _ in range(4)]
    int8_path = quantize_block_ort_int8(body, calibration, tmp_path / "toy/body/int8.onnx")
    records = [
        VariantRecord("toy", "body", "original", "original", "builtin", accuracy=90.0),
        VariantRecord("toy", "body", "prune50", "prune50", "torch-safetensors", str(pruned_path.relative_to(tmp_path)),
                      sha256_file(pruned_path), pruned_path.stat().st_size, solo_latency_ms={"cpu": 1.0},
                      accuracy=89.5),
        VariantRecord("toy", "body", "int8", "int8", "onnx", str(int8_path.relative_to(tmp_path)),
                      sha256_file(int8_path), int8_path.stat().st_size, solo_latency_ms={"cpu": 0.5}, accuracy=70.0),
    ]
    manifest = Manifest(variants=records, models={"toy": ModelBaseline(90.0, "top1", 10)}, max_accuracy_drop=1.0)
    assert [r.name for r in mark_usability(manifest)] == ["int8"]
    return write_manifest(manifest, tmp_path / "manifest.json")


def test_manifest_round_trip_and_unusable_variant(tmp_path: Path) -> None:
    path = _write_manifest(tmp_path, _model())
    manifest = read_manifest(path)
    assert [r.usable for r in manifest.variants] == [True, True, False]
    assert "below floor 89.00" in manifest.variants[2].reason
    assert manifest.original("toy", "body").kind == "original"


def test_load_variants_preloads_usable_ones(tmp_path: Path) -> None:
    pm = _model()
    path = _write_manifest(tmp_path, pm)
    variants = load_variants(path, pm)
    assert [v.name for v in variants["body"]] == ["prune50"]
    assert variants["body"][0].solo_latency_ms == 1.0
    everything = load_variants(path, pm, include_unusable=True)
    assert [(v.name, v.usable, v.module is None) for v in everything["body"]] == [
        ("prune50", True, False), ("int8", False, True)]
    assert attach_variants(pm, variants) == 1
    x = torch.randn(1, 16, 8, 8)
    assert pm.block("body").variants["prune50"].module(x).shape == pm.block("body")(x).shape


def test_tampered_variant_file_is_refused(tmp_path: Path) -> None:
    pm = _model()
    path = _write_manifest(tmp_path, pm)
    weights = tmp_path / "toy/body/prune50.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"prune50\.safetensors fails its sha256 check"):
        load_variants(path, pm)


def test_onnx_variant_loads_as_ort_block(tmp_path: Path) -> None:
    pm = _model()
    path = _write_manifest(tmp_path, pm)
    raw = json.loads(path.read_text())
    raw["variants"][2]["usable"] = True
    path.write_text(json.dumps(raw))
    variants = load_variants(path, pm, intra_op_threads=1)
    module = next(v.module for v in variants["body"] if v.name == "int8")
    assert isinstance(module, OrtBlock) and module.intra_op_threads == 1


def test_bad_manifests_are_refused(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    with pytest.raises(CheckpointError, match="does not exist"):
        read_manifest(missing)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 99, "variants": []}))
    with pytest.raises(CheckpointError, match="expected schema version 1, got 99"):
        read_manifest(bad)
    bad.write_text(json.dumps({"version": 1, "variants": [{"model": "m", "block": "b", "name": "n",
                                                            "kind": "k", "format": "pickle"}]}))
    with pytest.raises(CheckpointError, match="format expected one of"):
        read_manifest(bad)


def test_variant_for_unknown_block_is_refused(tmp_path: Path) -> None:
    pm = _model()
    path = _write_manifest(tmp_path, pm)
    other = PartitionedModel("toy", [Block("stem", pm.block("stem").module)])
    with pytest.raises(VariantError, match="block 'body'"):
        load_variants(path, other)


def test_variants_cut_from_other_weights_are_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from compression_tools.manifest import weights_fingerprint

    pm = _model()
    path = _write_manifest(tmp_path, pm)
    with caplog.at_level("WARNING"):
        assert load_variants(path, pm)  # a manifest from before the fingerprint: loads, says it cannot check
    assert "records no weights fingerprint" in caplog.text
    raw = json.loads(path.read_text())
    raw["models"]["toy"]["weights_fingerprint"] = weights_fingerprint((b.name, b.module) for b in pm.blocks)
    path.write_text(json.dumps(raw))
    assert [v.name for v in load_variants(path, pm)["body"]] == ["prune50"]  # the same weights
    retrained = _model()
    with torch.no_grad():
        next(retrained.block("body").module.parameters()).add_(1e-3)
    with pytest.raises(CheckpointError, match="'toy' were built from other weights"):
        load_variants(path, retrained)
