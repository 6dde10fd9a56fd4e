"""multidnn-replay's player process, image accounting, per-stage breakdown and compressed bags (tiny models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_replay import tiny_models

from multidnn_sched.evaluation.replay import ReplayOptions, load_bag, parse_options, run_replay
from multidnn_sched.evaluation.replay_breakdown import BREAKDOWN_COLUMNS
from multidnn_sched.ros.timing import BREAKDOWN_STAGES
from multidnn_sched.scenes.bag import write_scene_bag
from multidnn_sched.scenes.generator import SceneConfig

FRAMES = 10


def _bag(tmp_path_factory: pytest.TempPathFactory, image_format: str) -> Path:
    path = tmp_path_factory.mktemp("bags") / f"scene_{image_format}"
    config = SceneConfig(width=320, height=240, min_size_px=30.0, max_size_px=60.0, min_objects=2, max_objects=3)
    return write_scene_bag(path, config=config, seed=7, n_frames=FRAMES, progress=False, image_format=image_format)


@pytest.fixture(scope="module")
def raw_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bag(tmp_path_factory, "raw")


@pytest.fixture(scope="module")
def jpeg_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bag(tmp_path_factory, "jpeg")


def _check_mode(entry: dict, frames: int) -> None:
    accounting = entry["accounting"]
    assert accounting["published"] == frames
    assert accounting["received"] == frames and accounting["lost_in_transport"] == 0, accounting
    assert accounting["bad"] == 0 and accounting["decoded"] == frames
    for node, counts in accounting["nodes"].items():
        assert counts["unaccounted"] == 0, (node, counts)
        assert counts["processed"] + counts["dropped"] + counts["bad"] == counts["received"]
        assert counts["input"] == {"detector": "images", "tracker": "detections", "classifier": "tracks"}[node]
    detector = accounting["nodes"]["detector"]
    assert detector["received"] == frames
    for node, breakdown in entry["breakdown"].items():
        assert breakdown["frames"] >= frames - 2, (node, breakdown["frames"])
        assert breakdown["max_sum_error_ms"] < 1e-3  # the stages add up to the stage latency, frame by frame
        assert breakdown["sum_of_means_vs_stage"] == pytest.approx(1.0, abs=0.05)
        assert set(BREAKDOWN_COLUMNS) <= set(breakdown)
        assert all(breakdown[s]["p50_ms"] is not None for s in BREAKDOWN_STAGES)
        assert breakdown["model"]["p50_ms"] > 0.0
        # the recorder's stage latency and the breakdown's agree
        assert breakdown["stage"]["p50_ms"] == pytest.approx(entry["models"][node]["p50_ms"], rel=0.05, abs=0.5)
    assert entry["cpu"]["cpu_percent"] is not None and entry["cpu"]["cpu_percent"] > 0.0


def test_replay_from_a_player_process_delivers_and_accounts_for_every_image(raw_bag: Path, tmp_path: Path) -> None:
    options = ReplayOptions(bag=raw_bag, modes=["blocks"], report_dir=tmp_path / "r", rate_hz=8.0, progress=False)
    path = run_replay(options, models=tiny_models())
    report = json.loads(path.read_text())
    entry = report["modes"]["blocks"]
    assert entry["player"] == "process"
    assert entry["cpu"]["player_cpu_sec"] > 0.0  # the player ran in its own process
    _check_mode(entry, FRAMES)
    text = (path.parent / "report.md").read_text()
    assert "| blocks | detector |" in text and "lost in transport" in text and "container CPU" in text


def test_inprocess_player_and_compressed_bag_replay(jpeg_bag: Path, tmp_path: Path) -> None:
    bag = load_bag(jpeg_bag, "/camera/image_raw", "/ground_truth/detections")
    assert bag.compressed and bag.topic == "/camera/image_raw/compressed" and len(bag.images) == FRAMES
    options = ReplayOptions(
        bag=jpeg_bag, modes=["baseline"], report_dir=tmp_path / "c", rate_hz=8.0, progress=False, player="inprocess"
    )
    report = json.loads(run_replay(options, models=tiny_models()).read_text())
    entry = report["modes"]["baseline"]
    assert entry["player"] == "inprocess" and entry["cpu"]["player_cpu_sec"] is None
    _check_mode(entry, FRAMES)


def test_replay_options_choose_player_and_qos() -> None:
    options = parse_options(["bag", "--player", "inprocess", "--qos", "sensor", "--image-depth", "7"])
    assert options.player == "inprocess" and options.reliable is False and options.image_depth == 7
    defaults = parse_options(["bag"])
    assert defaults.player == "process" and defaults.reliable is True and defaults.image_depth == 30


def test_scene_bags_can_be_written_compressed(tmp_path: Path, raw_bag: Path) -> None:
    from multidnn_sched.exceptions import ConfigError
    from multidnn_sched.scenes.bag import bag_info, iter_bag_frames

    png = _bag_at(tmp_path / "png", "png")
    assert bag_info(png).topics["/camera/image_raw/compressed"].msgtype == "sensor_msgs/msg/CompressedImage"
    raw_frames = list(iter_bag_frames(raw_bag))
    png_frames = list(iter_bag_frames(png))  # finds <topic>/compressed and decodes it
    assert [f.stamp_ns for f in png_frames] == [f.stamp_ns for f in raw_frames]
    assert all((a.image == b.image).all() for a, b in zip(png_frames, raw_frames, strict=True))  # PNG: lossless
    assert png_frames[0].objects == raw_frames[0].objects
    with pytest.raises(ConfigError, match="image_format"):
        _bag_at(tmp_path / "webp", "webp")


def _bag_at(path: Path, image_format: str) -> Path:
    config = SceneConfig(width=320, height=240, min_size_px=30.0, max_size_px=60.0, min_objects=2, max_objects=3)
    return write_scene_bag(path, config=config, seed=7, n_frames=FRAMES, progress=False, image_format=image_format)


def test_image_accounting_and_breakdown_maths() -> None:
    from multidnn_sched.evaluation.replay_breakdown import image_accounting, stage_breakdown
    from multidnn_sched.evaluation.replay_records import ModeRun, Output
    from multidnn_sched.ros.timing import FrameTiming

    run = ModeRun("blocks")
    run.published = {1: 10.0, 2: 10.1, 3: 10.2, 4: 10.3}
    run.image_input = {"received": 3, "decoded": 2, "bad": 1}
    run.node_counters = {
        "detector": {"received": 3, "processed": 1, "dropped": 1, "drop_causes": {"runtime_queue_full": 1},
                     "bad_inputs": {"short_data": 1}, "input": "images"},
        "tracker": {"received": 1, "processed": 1, "dropped": 0, "drop_causes": {},
                    "bad_inputs": {"short_data": 1}, "input": "detections"},
    }
    accounting = image_accounting(run)
    assert accounting["lost_in_transport"] == 1 and accounting["bad"] == 1
    assert accounting["nodes"]["detector"]["unaccounted"] == 0
    assert accounting["nodes"]["tracker"]["unaccounted"] == 0  # a bad image is not one of its inputs

    def output(stamp: int, t: float) -> Output:
        import numpy as np

        return Output(stamp, t, np.zeros((0, 4), np.float32), np.zeros(0, np.float32), [], [], [])

    run.outputs = {"detections": [output(1, 10.050)], "tracks": [], "classified": []}
    # image published at 10.000 s; callback 10.004; submitted 10.010; ran 10.015-10.040; built 10.043;
    # received by the recorder at 10.050
    run.timings = {"detector": [FrameTiming(1, 10004.0, 10010.0, 10015.0, 10040.0, 10043.0, 10044.0)]}
    detector = stage_breakdown(run)["detector"]
    expected = {"transport": 4.0, "decode": 6.0, "queue": 5.0, "model": 25.0, "postprocess": 3.0, "publish": 7.0}
    for stage, value in expected.items():
        assert detector[stage]["p50_ms"] == pytest.approx(value, abs=1e-6), stage
    assert detector["stage"]["p50_ms"] == pytest.approx(50.0) and detector["overhead"]["p50_ms"] == pytest.approx(20.0)
    assert detector["max_sum_error_ms"] == pytest.approx(0.0, abs=1e-6) and detector["frames"] == 1
