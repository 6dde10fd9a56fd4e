"""Variant accuracy on held-out frames: disjoint seeds, sample sizes in the manifest, the task metrics, the
prefix cache, and the policy's accuracy floor judged from manifest figures (compression_tools.heldout / report)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from compression_tools.cli import main
from compression_tools.heldout import (
    CALIBRATION_SEEDS,
    HELDOUT_SEEDS,
    SeedPlan,
    check_disjoint,
    embedder_metric,
    parse_seeds,
    render_heldout,
    training_seeds,
)
from compression_tools.manifest import (
    Manifest,
    ModelBaseline,
    VariantRecord,
    mark_usability,
    read_manifest,
    save_variant,
    sha256_file,
    write_manifest,
)
from compression_tools.prune import prune_block
from compression_tools.quantize import quantize_block_ort_int8
from compression_tools.report import ACCEPTED, NOT_LOADED, REFUSED_FLOOR, floor_verdicts, write_report
from compression_tools.variants import PrefixCache, swapped
from multidnn_sched.exceptions import ConfigError
from multidnn_sched.models.checkpoints import WEIGHTS_DIR
from multidnn_sched.runtime.block import Block, PartitionedModel
from multidnn_sched.runtime.executor import BlockExecutor
from multidnn_sched.runtime.policy import (
    ORIGINAL,
    ModelObservation,
    Observations,
    Policy,
    PolicyConfig,
    relative_accuracy,
)
from multidnn_sched.runtime.variant_loader import attach_variants, load_variants

FAST = ["--calibration", "2", "--repeats", "2", "--threads", "1", "--quiet", "--finetune-steps", "2"]


def test_default_seeds_are_disjoint_from_training_and_calibration() -> None:
    trained_on = training_seeds("detector")
    assert trained_on == list(range(101, 117)), "seeds from the shipped weights' manifest"
    assert training_seeds("embedder") == list(range(101, 133))  # round 3 trained on 32 seeds
    assert not set(HELDOUT_SEEDS) & (set(trained_on) | set(training_seeds("embedder")) | set(CALIBRATION_SEEDS))
    check_disjoint(SeedPlan(list(HELDOUT_SEEDS), list(CALIBRATION_SEEDS), list(CALIBRATION_SEEDS), trained_on))


@pytest.mark.parametrize("plan, message", [
    (SeedPlan([7001, 105], [6001], [6001], [101, 105]), r"collide with training seeds \[105\]"),
    (SeedPlan([6001], [6001], [6002], []), r"collide with calibration seeds \[6001\]"),
    (SeedPlan([7001, 9], [6001], [9], []), r"collide with pruning fine-tune seeds \[9\]"),
    (SeedPlan([], [6001], [6001], []), "at least one scene seed"),
])
def test_colliding_heldout_seeds_are_refused(plan: SeedPlan, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_disjoint(plan)


def test_parse_seeds() -> None:
    assert parse_seeds("7001-7003", "x") == [7001, 7002, 7003]
    assert parse_seeds("5,9", "x") == [5, 9]
    with pytest.raises(ConfigError, match="--heldout-seeds: expected"):
        parse_seeds("a-b", "--heldout-seeds")


def test_cli_refuses_a_training_seed_as_heldout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build", "--model", "embedder", "--kinds", "int8", "--heldout-seeds", "116,7001", "--frames", "2",
                 "--out", str(tmp_path), *FAST])
    assert code == 2
    err = capsys.readouterr().err
    assert "held-out evaluation seeds [116, 7001]" in err and "training seeds [116]" in err
    assert not (tmp_path / "manifest.json").exists()
    assert main(["build", "--model", "resnet18", "--kinds", "int8", "--heldout-seeds", "6001", "--frames", "2",
                 "--out", str(tmp_path), *FAST]) == 2
    assert "calibration seeds [6001]" in capsys.readouterr().err


def test_build_records_seeds_and_sample_sizes(tmp_path: Path) -> None:
    out = tmp_path / "v"
    assert main(["build", "--model", "classifier", "--block", "block1", "--kinds", "int8", "--frames", "6",
                 "--out", str(out), *FAST]) == 0
    manifest = read_manifest(out / "manifest.json")
    base = manifest.models["classifier"]
    assert base.accuracy_metric == "attribute_top1" and base.eval_frames == 6 and base.eval_samples > 0
    assert base.heldout_seeds == list(HELDOUT_SEEDS) and base.calibration_seeds == list(CALIBRATION_SEEDS)
    # Every default model's training seeds (the pipeline's accuracy depends on all three), read straight from
    # the shipped weights' manifest: detector and classifier 101-116, the round-3 embedder 101-132.
    shipped = json.loads((WEIGHTS_DIR / "manifest.json").read_text())["models"]
    trained_on = set()
    for entry in shipped.values():
        lo, hi = (int(v) for v in entry["training"]["train_seeds"].split("-"))
        trained_on |= set(range(lo, hi + 1))
    assert base.finetune_seeds == list(CALIBRATION_SEEDS) and base.training_seeds == sorted(trained_on)
    assert base.training_seeds == list(range(101, 133))
    assert base.scene_profile == "hard"
    int8 = next(r for r in manifest.variants if r.name == "int8")
    assert (int8.eval_frames, int8.eval_samples) == (6, base.eval_samples)
    assert abs(int8.accuracy - base.accuracy) < 20.0
    assert main(["report", "--manifest", str(out / "manifest.json")]) == 0
    text = (out / "report.md").read_text()
    assert "| n frames |" in text and "held-out seeds [7001, 7002, 7003] (hard profile)" in text
    assert "training seeds 101-132" in text and "## Policy accuracy floor" in text


def test_reid_metric_tells_a_trained_embedder_from_a_constant_one() -> None:
    from multidnn_sched.models.zoo import load_default_models

    frames = render_heldout([HELDOUT_SEEDS[0]], 40)
    metric = embedder_metric(frames)
    assert metric.name == "reid_top1" and metric.frames == 40 and metric.samples >= 50
    embedder = load_default_models().embedder
    trained = metric(embedder)

    def constant(crops: torch.Tensor) -> torch.Tensor:
        return torch.ones(crops.shape[0], 8)

    assert trained >= metric(constant) + 20.0


def test_prefix_cache_is_exact_and_runs_the_prefix_once() -> None:
    torch.manual_seed(0)
    calls = []

    class Counting(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            return x * 2.0

    pm = PartitionedModel("toy", [Block("a", Counting()), Block("b", nn.Linear(4, 4)), Block("c", nn.ReLU())])
    inputs = [torch.randn(3, 4) for _ in range(2)]
    cache = PrefixCache(pm, "b")
    variant = nn.Linear(4, 4)
    for _ in range(3):
        for x in inputs:
            torch.testing.assert_close(cache.swapped(variant)(x), swapped(pm, "b", variant)(x))
    assert len(calls) == 2 + 3 * 2, "the cache ran block a once per input; swapped() every time"


def _toy() -> PartitionedModel:
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()).eval()
    body = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1)).eval()
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()
    return PartitionedModel("toy", [Block("stem", stem), Block("body", body), Block("head", head)])


def _floor_manifest(tmp_path: Path, pm: PartitionedModel) -> Path:
    """Held-out figures: original 80.0, int8 79.6 (relative 0.995), prune50 74.0 (0.925), broken 50.0."""
    body = pm.block("body").module
    pruned = save_variant(prune_block(body, torch.randn(1, 16, 8, 8), 0.5, round_to=None), body,
                          tmp_path / "toy/body/prune50.safetensors")
    int8 = quantize_block_ort_int8(body, [torch.rand(1, 16, 8, 8) for _ in range(4)], tmp_path / "toy/body/int8.onnx")

    def record(name: str, fmt: str, path: Path | None, ms: float, accuracy: float) -> VariantRecord:
        return VariantRecord("toy", "body", name, name if name != "original" else "original", fmt,
                             str(path.relative_to(tmp_path)) if path else "", sha256_file(path) if path else "",
                             path.stat().st_size if path else 0, solo_latency_ms={"cpu": ms}, accuracy=accuracy,
                             accuracy_metric="top1", eval_frames=300, eval_samples=900)

    records = [record("original", "builtin", None, 10.0, 80.0), record("int8", "onnx", int8, 6.0, 79.6),
               record("prune50", "torch-safetensors", pruned, 3.0, 74.0),
               record("unstructured90", "torch-safetensors", pruned, 9.0, 50.0)]
    manifest = Manifest(variants=records, models={"toy": ModelBaseline(80.0, "top1", 300, 900,
                                                                      heldout_seeds=[7001])}, max_accuracy_drop=10.0)
    assert [r.name for r in mark_usability(manifest)] == ["unstructured90"]
    return write_manifest(manifest, tmp_path / "manifest.json")


def test_floor_refuses_one_variant_and_accepts_another_from_manifest_figures(tmp_path: Path) -> None:
    pm = _toy()
    path = _floor_manifest(tmp_path, pm)
    manifest = read_manifest(path)
    verdicts = {v.variant: v for v in floor_verdicts(manifest, accuracy_floor=0.97)}
    assert verdicts["int8"].verdict == ACCEPTED and verdicts["int8"].relative == pytest.approx(0.995)
    assert verdicts["prune50"].verdict == REFUSED_FLOOR and verdicts["prune50"].drop == pytest.approx(6.0)
    assert verdicts["unstructured90"].verdict == NOT_LOADED
    assert verdicts["prune50"].eval_frames == 300 and verdicts["prune50"].gain_ms == pytest.approx(7.0)
    # a looser floor accepts prune50 too
    assert {v.variant: v.verdict for v in floor_verdicts(manifest, 0.9)}["prune50"] == ACCEPTED

    # the runtime: variants loaded from the manifest, the model registered with the manifest's baseline; the
    # relative accuracies the executor hands the policy are the manifest's held-out figures
    attach_variants(pm, load_variants(path, pm))
    with BlockExecutor("cpu", Policy(PolicyConfig())) as executor:
        executor.register_model(pm, deadline_ms=50.0, accuracy=manifest.models["toy"].accuracy)
        observed = executor.observations()
    body = next(b for b in observed.blocks if b.block == "body")
    rel = {o.name: o.relative_accuracy for o in body.options}
    assert rel == {ORIGINAL: 1.0, "int8": pytest.approx(79.6 / 80.0), "prune50": pytest.approx(74.0 / 80.0)}
    assert rel["prune50"] == relative_accuracy(74.0, 80.0)

    solo = {ORIGINAL: 10.0, "int8": 6.0, "prune50": 3.0}
    body = replace(body, solo_ms=10.0, options=tuple(replace(o, solo_ms=solo[o.name]) for o in body.options))
    late = ModelObservation("toy", 50.0, 80.0, 0, samples=20)
    config = {"serialize_enabled": False, "min_dwell_sec": 0.0, "settle_sec": 0.0, "max_changes": 1}

    def decide(floor: float, variant: str) -> list[tuple[str, str]]:
        policy = Policy(PolicyConfig(accuracy_floor=floor, **config))  # type: ignore[arg-type]
        blocks = tuple(replace(b, variant=variant) if b.block == "body" else b
                       for b in (body, *[b for b in observed.blocks if b.block != "body"]))
        return [(d.block, d.value) for d in policy.decide(Observations((late,), blocks), now_sec=100.0)]

    assert decide(0.97, ORIGINAL) == [("body", "int8")], "prune50 gains more but is below the floor"
    assert decide(0.97, "int8") == [], "from int8 the only faster variant, prune50, is refused by the floor"
    assert decide(0.90, "int8") == [("body", "prune50")], "a looser floor accepts it"


def test_report_shows_floor_verdicts(tmp_path: Path) -> None:
    path = _floor_manifest(tmp_path, _toy())
    paths = write_report(read_manifest(path), tmp_path / "r", accuracy_floor=0.97)
    text = paths.markdown.read_text()
    assert "Floor 0.970" in text and "1 accepted, 1 refused by the floor, 1 not loaded" in text
    assert "| toy | body | prune50 | top1 | 300 | 80.00 | 74.00 | 6.00 | 0.9250 | 7.00 | refused: below floor |" in text
    data = json.loads(paths.json.read_text())
    assert data["accuracy_floor"] == 0.97 and data["models"]["toy"]["heldout_seeds"] == [7001]
    assert {v["variant"]: v["verdict"] for v in data["floor_verdicts"]}["int8"] == ACCEPTED


def test_ros_runtime_takes_the_manifest_baseline_or_none(tmp_path: Path) -> None:
    from multidnn_sched.ros.shared_runtime import _attach_manifest_variants

    path = _floor_manifest(tmp_path, _toy())
    assert _attach_manifest_variants(path, _toy()) == 80.0
    manifest = read_manifest(path)
    manifest.models = {}
    write_manifest(manifest, path)
    pm = _toy()
    assert _attach_manifest_variants(path, pm) is None, "no baseline: relative accuracy unknown, never 1.0"
    assert set(pm.block("body").variants) == {"int8", "prune50"}
