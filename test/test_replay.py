"""multidnn-replay: options, bag reading, stamp rewriting, report maths, and a small end-to-end replay."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from torch import Tensor, nn

from multidnn_sched.evaluation.replay import (
    BagData,
    ModeRun,
    Output,
    ReplayOptions,
    _read_stamp,
    _with_stamp,
    load_bag,
    main,
    parse_options,
    run_replay,
)
from multidnn_sched.evaluation.replay_report import accuracy, markdown, stage_latencies, summarize
from multidnn_sched.exceptions import BagError, ConfigError
from multidnn_sched.models.detector import DETECTOR_INPUT_HW, DETECTOR_STRIDE
from multidnn_sched.runtime.block import Block, PartitionedModel
from multidnn_sched.scenes.bag import write_scene_bag
from multidnn_sched.scenes.generator import GroundTruthObject, SceneConfig


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "small"
    config = SceneConfig(
        width=320, height=240, min_size_px=30.0, max_size_px=60.0, min_objects=2, max_objects=3
    )
    write_scene_bag(path, config=config, seed=5, n_frames=8, progress=False)
    return path


def test_parse_options_rejects_bad_values_with_reasons() -> None:
    options = parse_options(
        [
            "bag",
            "--mode",
            "baseline,blocks+swap",
            "--rate",
            "15",
            "--set",
            "workers=3",
            "--set",
            "policy.swap_enabled=false",
        ]
    )
    assert options.modes == ["baseline", "blocks+swap"] and options.rate_hz == 15.0
    assert options.container_params == {"workers": 3, "policy.swap_enabled": False}
    assert parse_options(["bag", "--set", "detector:score_threshold=0.4"]).node_params == {
        "detector": {"score_threshold": 0.4}
    }
    with pytest.raises(ConfigError, match="NODE"):
        parse_options(["bag", "--set", "segmenter:x=1"])
    with pytest.raises(ConfigError, match="--mode"):
        parse_options(["bag", "--mode", "turbo"])
    with pytest.raises(ConfigError, match="--rate"):
        parse_options(["bag", "--rate", "0"])
    with pytest.raises(ConfigError, match="--set"):
        parse_options(["bag", "--set", "novalue"])


def test_stamp_rewrite_matches_rclpy_serialization() -> None:
    msg = Image(encoding="rgb8", width=2, height=1, step=6, data=bytes(range(6)))
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
    msg.header.frame_id = "camera"
    raw = serialize_message(msg)
    assert _read_stamp(raw) == 12_000_000_345
    moved = deserialize_message(_with_stamp(raw, 99_000_000_007), Image)
    assert (moved.header.stamp.sec, moved.header.stamp.nanosec) == (99, 7)
    assert bytes(moved.data) == bytes(range(6)) and moved.header.frame_id == "camera"


def test_load_bag_reads_images_and_ground_truth(small_bag: Path) -> None:
    bag = load_bag(small_bag, "/camera/image_raw", "/ground_truth/detections")
    assert len(bag.images) == 8 and bag.ground_truth is not None and len(bag.ground_truth) == 8
    assert bag.period_ns == pytest.approx(1e9 / 15.0, rel=1e-3)
    assert bag.stamps_ns == sorted(bag.stamps_ns)


def test_bag_missing_topic_fails_with_clear_message(
    small_bag: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(BagError, match="/camera/image_raw"):
        load_bag(small_bag, "/front/image", "/ground_truth/detections")
    assert main([str(small_bag), "--image-topic", "/front/image", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "expected image topic '/front/image'" in err and "/camera/image_raw" in err
    assert main([str(small_bag.parent / "nope"), "--no-progress"]) == 2


def _output(stamp: int, t: float, boxes: list[list[float]], attrs: list[str] | None = None) -> Output:
    n = len(boxes)
    return Output(
        stamp,
        t,
        np.array(boxes, np.float32).reshape(-1, 4),
        np.full(n, 0.9, np.float32),
        ["square"] * n,
        [str(i + 1) for i in range(n)],
        attrs or [""] * n,
    )


def _made_up_run(mode: str, detector_delay_sec: float, answer_last: bool = True) -> ModeRun:
    run = ModeRun(mode)
    box = [10.0, 10.0, 50.0, 50.0]
    for i in range(4):
        stamp = 1000 + i
        run.published[stamp] = float(i)
        run.frame_of_stamp[stamp] = i
    run.outputs = {"detections": [], "tracks": [], "classified": []}
    for i in range(4 if answer_last else 3):
        stamp, t = 1000 + i, float(i) + detector_delay_sec
        run.outputs["detections"].append(_output(stamp, t, [box]))
        run.outputs["tracks"].append(_output(stamp, t + 0.01, [box]))
        run.outputs["classified"].append(_output(stamp, t + 0.03, [box], ["red"]))
    run.wall_sec, run.loops = 4.0, 1
    return run


def _bag_with_gt() -> BagData:
    obj = GroundTruthObject(
        track_id=1, class_id=1, attribute_id=0, box_xyxy=(10.0, 10.0, 50.0, 50.0), visible_fraction=1.0
    )
    return BagData([b""] * 4, [1000, 1001, 1002, 1003], 1, [[obj] for _ in range(4)])


def test_stage_latencies_and_missing_frames() -> None:
    figures = stage_latencies(_made_up_run("blocks", 0.1, answer_last=False))
    assert figures["detector"]["p50_ms"] == pytest.approx(100.0)
    assert figures["tracker"]["p50_ms"] == pytest.approx(10.0)
    assert figures["classifier"]["p99_ms"] == pytest.approx(20.0)
    assert figures["classifier"]["e2e_p50_ms"] == pytest.approx(130.0)
    assert figures["detector"]["missing"] == 1 and figures["detector"]["answered"] == 3


def test_accuracy_separates_quality_coverage_and_held_answers() -> None:
    bag = _bag_with_gt()
    deadlines = {"detector": 150.0, "tracker": 200.0, "classifier": 250.0}
    full = accuracy(_made_up_run("baseline", 0.1), bag, None, deadlines)
    assert full["detector"]["accuracy_answered"] == pytest.approx(1.0, abs=0.02)
    assert full["classifier"]["accuracy_answered"] == pytest.approx(1.0)
    assert full["classifier"]["coverage"] == pytest.approx(1.0) and full["detector"]["late_answers"] == 0
    partial = accuracy(_made_up_run("blocks", 0.1, answer_last=False), bag, None, deadlines)
    # Quality is scored on the answered frames only; coverage says how many; neither hides the other.
    assert partial["classifier"]["accuracy_answered"] == pytest.approx(1.0)
    assert partial["classifier"]["coverage"] == pytest.approx(0.75)
    assert partial["detector"]["accuracy_answered"] == pytest.approx(full["detector"]["accuracy_answered"])
    # Held at the deadline: the unanswered last frame reuses frame 2's answer; the object did not move, so the
    # stale answer is still right here.
    assert partial["classifier"]["accuracy_held"] == pytest.approx(1.0)


def test_held_accuracy_punishes_late_and_stale_answers() -> None:
    bag = _bag_with_gt()
    # Every answer arrives 0.3 s after its image: past a 150 ms detector deadline, so at each frame's deadline
    # only the previous frame's answer (or none) is available.
    late = accuracy(_made_up_run("blocks", 0.3), bag, None, {"detector": 150.0, "tracker": 500.0,
                                                             "classifier": 500.0})
    assert late["detector"]["late_answers"] == 4
    assert late["detector"]["accuracy_answered"] == pytest.approx(1.0, abs=0.02), "late answers are still right"
    assert late["detector"]["accuracy_held"] < 0.9, "frame 0 had no answer by its deadline"
    moving = _bag_with_gt()
    for i, objects in enumerate(moving.ground_truth or []):
        x = 10.0 + 60.0 * i  # the object moves by more than its size every frame: a stale box misses
        objects[0] = GroundTruthObject(track_id=1, class_id=1, attribute_id=0, box_xyxy=(x, 10.0, x + 40.0, 50.0),
                                       visible_fraction=1.0)
    run = _made_up_run("blocks", 0.1, answer_last=False)
    for topic in ("detections", "tracks", "classified"):
        run.outputs[topic] = [replace(o, boxes_xyxy=np.array([[10.0 + 60.0 * (o.stamp_ns - 1000), 10.0,
                                                                 50.0 + 60.0 * (o.stamp_ns - 1000), 50.0]],
                                                               np.float32)) for o in run.outputs[topic]]
    scores = accuracy(run, moving, None, {"detector": 150.0, "tracker": 200.0, "classifier": 250.0})
    assert scores["detector"]["accuracy_answered"] == pytest.approx(1.0, abs=0.02)
    assert scores["detector"]["accuracy_held"] < scores["detector"]["accuracy_answered"]


def test_quality_ratio_ignores_coverage() -> None:
    # A mode that answers 3 of 4 frames with exactly the baseline's outputs: quality ratio 1.0, coverage 0.75.
    bag = _bag_with_gt()
    runs = [_made_up_run("baseline", 0.05), _made_up_run("blocks+swap", 0.05, answer_last=False)]
    options = ReplayOptions(bag=Path("x"), modes=["baseline", "blocks+swap"], report_dir=Path("y"), rate_hz=15.0)
    report = summarize(runs, bag, options)
    ratios = report["comparison"]["blocks+swap"]
    for node in ("detector", "tracker", "classifier"):
        assert ratios[node]["quality_ratio"] == pytest.approx(1.0), node
        assert ratios[node]["coverage_ratio"] == pytest.approx(0.75), node
    assert report["deadlines_from_publish_ms"]["classifier"] > report["deadlines_from_publish_ms"]["detector"]


def test_summary_without_ground_truth_uses_agreement_with_baseline() -> None:
    bag = BagData([b""] * 4, [1000, 1001, 1002, 1003], 1, None)
    runs = [_made_up_run("baseline", 0.2), _made_up_run("blocks+swap", 0.1)]
    options = ReplayOptions(
        bag=Path("x"), modes=["baseline", "blocks+swap"], report_dir=Path("y"), rate_hz=15.0
    )
    report = summarize(runs, bag, options)
    swap = report["modes"]["blocks+swap"]["models"]
    assert "agreement with baseline" in swap["classifier"]["accuracy_metric"]
    assert swap["classifier"]["accuracy_answered"] == pytest.approx(1.0)
    assert report["comparison"]["blocks+swap"]["detector"]["p99_ratio"] == pytest.approx(0.5)
    text = markdown(report)
    assert "| blocks+swap | detector | 0.50 |" in text


# ------------------------------------------------------------------------------------------ end to end


class _FixedHeat(nn.Module):
    """Detector stand-in: a strided conv (so the input matters for timing) plus fixed peaks."""

    def __init__(self) -> None:
        super().__init__()
        h, w = DETECTOR_INPUT_HW[0] // DETECTOR_STRIDE, DETECTOR_INPUT_HW[1] // DETECTOR_STRIDE
        heat = torch.full((1, 5, h, w), -10.0)
        heat[0, 1, 5, 5] = heat[0, 2, 20, 30] = 5.0
        self.register_buffer("heat", heat)
        self.conv = nn.Conv2d(3, 9, DETECTOR_STRIDE, stride=DETECTOR_STRIDE)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.conv(x) * 0.0
        return y[:, :5] + self.heat, y[:, 5:] + 16.0


class _Embed(nn.Module):
    def forward(self, crops: Tensor) -> Tensor:
        return nn.functional.normalize(crops.mean(dim=(2, 3)), dim=1)


class _Classify(nn.Module):
    def forward(self, crops: Tensor) -> Tensor:
        return torch.cat([crops.mean(dim=(2, 3)), torch.zeros(crops.shape[0], 1)], dim=1)


def tiny_models() -> dict[str, PartitionedModel]:
    return {
        "detector": PartitionedModel("detector", [Block("stem", nn.Identity()), Block("head", _FixedHeat())]),
        "embedder": PartitionedModel("embedder", [Block("body", _Embed())]),
        "classifier": PartitionedModel("classifier", [Block("body", _Classify())]),
    }


def test_replay_end_to_end_writes_report_for_both_modes(small_bag: Path, tmp_path: Path) -> None:
    options = ReplayOptions(
        bag=small_bag,
        modes=["baseline", "blocks+swap"],
        report_dir=tmp_path / "report",
        rate_hz=4.0,
        progress=False,
    )
    path = run_replay(options, models=tiny_models())
    report = json.loads(path.read_text())
    assert set(report["modes"]) == {"baseline", "blocks+swap"}
    for mode in ("baseline", "blocks+swap"):
        models = report["modes"][mode]["models"]
        assert set(models) == {"detector", "tracker", "classifier"}
        for node, figures in models.items():
            assert figures["answered"] >= 6, (mode, node, figures)
            assert figures["p99_ms"] is not None and figures["p50_ms"] <= figures["p99_ms"]
            assert figures["accuracy_metric"]
        assert report["modes"][mode]["messages"]["published_images"] == 8
    assert report["comparison"]["blocks+swap"]["tracker"]["p99_ratio"] is not None
    for name in report["plots"]:
        assert (path.parent / name).stat().st_size > 1000, name
    assert "| baseline | detector |" in (path.parent / "report.md").read_text()


def test_loop_replays_with_increasing_stamps_and_reports_memory(small_bag: Path, tmp_path: Path) -> None:
    options = ReplayOptions(
        bag=small_bag, modes=["blocks"], report_dir=tmp_path / "soak", rate_hz=8.0, loops=2, progress=False
    )
    report = json.loads(run_replay(options, models=tiny_models()).read_text())
    entry = report["modes"]["blocks"]
    assert entry["loops"] == 2 and entry["published"] == 16
    assert entry["models"]["tracker"]["answered"] >= 12
    assert entry["rss"]["end_mb"] > 0 and entry["rss"]["growth_after_first_loop_pct"] is not None
    detector = entry["messages"]["detector"]
    assert detector["received"] + entry["messages"]["detector_lost_in_transport"] == 16
    assert entry["messages"]["detector_unaccounted"] == 0


def test_shared_runtime_preloads_manifest_variants_and_forced_variant_runs(tmp_path: Path) -> None:
    from compression_tools.manifest import Manifest, ModelBaseline, VariantRecord, save_variant, sha256_file
    from compression_tools.manifest import write_manifest as write_variant_manifest
    from multidnn_sched.ros.container import CONTAINER_PARAMS
    from multidnn_sched.ros.shared_runtime import SharedRuntime

    models = tiny_models()
    head = models["detector"].block("head").module
    lighter = _FixedHeat()
    lighter.load_state_dict(head.state_dict())
    lighter.heat[0, 1, 5, 5] = -10.0  # the variant loses one of the two peaks: visible in its output
    file = save_variant(lighter, head, tmp_path / "head_light.safetensors")
    record = VariantRecord(
        "detector",
        "head",
        "light",
        "prune",
        "torch-safetensors",
        file.name,
        sha256_file(file),
        accuracy=0.9,
        solo_latency_ms={"cpu": 0.1},
    )
    manifest = write_variant_manifest(
        Manifest(variants=[record], models={"detector": ModelBaseline(accuracy=0.95)}),
        tmp_path / "manifest.json",
    )
    values = {spec.name: spec.default for spec in CONTAINER_PARAMS}
    runtime = SharedRuntime(models, values, example_inputs={}, variants_manifest=manifest, profile=False)
    try:
        x = torch.zeros(1, 3, *DETECTOR_INPUT_HW)
        before = runtime.submit("detector", x).result(timeout=30)[0]
        runtime.set_override("detector", "head", variant="light")
        after = runtime.submit("detector", x).result(timeout=30)[0]
        assert float(before.max()) == pytest.approx(5.0) and float(after[0, 1, 5, 5]) == pytest.approx(-10.0)
        variants = {(b.model, b.block): b.variant for b in runtime.status().blocks}
        assert variants[("detector", "head")] == "light"
        with pytest.raises(ConfigError, match="no block"):
            runtime.set_override("detector", "tail", variant="light")
    finally:
        assert runtime.shutdown(5.0)
