"""Tests of the multidnn-compress CLI and the report (small settings: a few frames, few timing repeats)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compression_tools.cli import main
from compression_tools.manifest import Manifest, ModelBaseline, VariantRecord, read_manifest
from compression_tools.report import pareto_front, report_rows, write_report
from compression_tools.variants import parse_kind
from multidnn_sched.exceptions import ConfigError

FAST = ["--frames", "2", "--calibration", "2", "--repeats", "2", "--threads", "1", "--quiet", "--finetune-steps", "2"]


def test_parse_kind() -> None:
    recipe = parse_kind("prune30+ft+int8")
    assert (recipe.stage, recipe.ratio, recipe.finetune, recipe.backend) == ("prune", 0.3, True, "int8")
    assert parse_kind("tucker+trt_fp16").backend == "trt_fp16"
    for bad in ("int8+prune50", "prune50+banana", "ft"):
        with pytest.raises(ConfigError):
            parse_kind(bad)


def test_build_then_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "variants"
    assert main(["build", "--model", "resnet18", "--block", "layer4", "--kinds", "prune50+int8,unstructured50",
                 "--out", str(out), *FAST]) == 0
    manifest = read_manifest(out / "manifest.json")
    names = [(r.block, r.name, r.format) for r in manifest.variants]
    assert names == [("layer4", "original", "builtin"), ("layer4", "prune50+int8", "onnx"),
                     ("layer4", "unstructured50", "torch-safetensors")]
    original, small, sparse = manifest.variants
    assert small.bytes * 6 < original.bytes  # prune 50 % + int8: > 6x smaller
    assert sparse.params < 0.6 * original.params and sparse.bytes >= original.bytes  # zeros only, honest size
    assert (out / small.file).is_file() and all(r.solo_latency_ms["cpu"] > 0 for r in manifest.variants)
    assert manifest.models["resnet18"].accuracy_metric == "top1_agreement_pct"
    assert main(["report", "--manifest", str(out / "manifest.json")]) == 0
    text = (out / "report.md").read_text()
    assert "| resnet18 | layer4 | prune50+int8 | onnx |" in text
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert len(rows) == 3 and rows[1]["size_ratio"] > 6
    assert (out / "pareto.png").stat().st_size > 1000
    assert "manifest:" in capsys.readouterr().out


def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--model", "no_such_net", "--out", str(tmp_path), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown model 'no_such_net'" in err
    assert main(["build", "--model", "resnet18", "--kinds", "int8+prune50", "--out", str(tmp_path), *FAST]) == 2
    assert "unexpected part" in capsys.readouterr().err
    assert main(["report", "--manifest", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_pareto_front_and_report_rows(tmp_path: Path) -> None:
    assert pareto_front([(10.0, 90.0), (5.0, 89.0), (6.0, 85.0), (2.0, 80.0)]) == [0, 1, 3]
    records = [VariantRecord("m", "b", "original", "original", "builtin", bytes=4000, solo_latency_ms={"cpu": 8.0},
                             accuracy=90.0),
               VariantRecord("m", "b", "int8", "int8", "onnx", "f.onnx", "x", 1000, solo_latency_ms={"cpu": 2.0},
                             accuracy=89.5),
               VariantRecord("m", "b", "bad", "prune90", "torch-safetensors", "g", "y", 500,
                             solo_latency_ms={"cpu": 4.0}, accuracy=60.0, usable=False, reason="accuracy ...")]
    manifest = Manifest(records, {"m": ModelBaseline(90.0, "top1", 10)})
    rows = report_rows(manifest)
    assert [(r.variant, r.speedup, r.size_ratio, r.pareto) for r in rows] == [
        ("original", 1.0, 1.0, True), ("int8", 4.0, 4.0, True), ("bad", 2.0, 8.0, False)]
    paths = write_report(manifest, tmp_path)
    assert "| no |" in paths.markdown.read_text() and paths.png.is_file()
