"""multidnn-evaluate: clear one-line errors (exit 2) on bad input; metric wiring on a tiny sequence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from multidnn_sched.evaluation import cli
from multidnn_sched.evaluation.evaluate import LabelledFrame, evaluate_frames
from multidnn_sched.models.checkpoints import save_checkpoint, write_manifest
from multidnn_sched.models.detector import Detections
from multidnn_sched.models.zoo import (
    DefaultModels,
    FrameResult,
    PerceptionPipeline,
    TrackResult,
    build_classifier,
    build_detector,
    build_embedder,
)
from multidnn_sched.scenes.bag import write_scene_bag
from multidnn_sched.scenes.generator import GroundTruthObject, SceneConfig

SMALL = SceneConfig(width=160, height=120, min_size_px=20, max_size_px=40, max_objects=3)


@pytest.fixture(scope="module")
def tiny_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scene_bag(
        tmp_path_factory.mktemp("bags") / "tiny", SMALL, seed=5, n_frames=3, progress=False
    )


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


def test_missing_bag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["--bag", str(tmp_path / "nope"), "--json", str(tmp_path / "o.json")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'nope'}: no such bag" in err


def test_not_a_bag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "metadata.yaml").write_text("this: [is not a rosbag2")
    code, err = _run(["--bag", str(junk)], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("multidnn-evaluate: error: ") and str(junk) in err


def test_truncated_bag(tiny_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_bag.iterdir():
        data = item.read_bytes()
        if item.suffix == ".mcap":
            data = data[: len(data) // 2]
        (broken / item.name).write_bytes(data)
    code, err = _run(["--bag", str(broken)], capsys)
    assert code == 2 and "Traceback" not in err
    assert str(broken) in err and ("truncated" in err or "unreadable" in err)


def test_bag_without_image_topic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    path = tmp_path / "strings"
    msg = typestore.types["std_msgs/msg/String"](data="hello")
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=typestore)
        writer.write(conn, 1, bytes(typestore.serialize_cdr(msg, "std_msgs/msg/String")))
    code, err = _run(["--bag", str(path)], capsys)
    assert code == 2 and "Traceback" not in err
    assert str(path) in err and "expected topic" in err and "/chatter" in err


def test_bad_checkpoint_dir(tiny_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["--bag", str(tiny_bag), "--weights", str(tmp_path), "--no-profile"], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{tmp_path / 'manifest.json'}: checkpoint manifest not found" in err


def test_tampered_checkpoint(tiny_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entries = {}
    for name, build in (
        ("detector", build_detector),
        ("embedder", build_embedder),
        ("classifier", build_classifier),
    ):
        entries[name] = save_checkpoint(build(), tmp_path / f"{name}.safetensors", name, (1, 1))
    write_manifest(entries, tmp_path)
    with open(tmp_path / "embedder.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    code, err = _run(["--bag", str(tiny_bag), "--weights", str(tmp_path), "--no-profile"], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{tmp_path / 'embedder.safetensors'}: sha256 mismatch" in err


def test_bad_frame_count(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["--scene-seed", "1", "--frames", "0"], capsys)
    assert code == 2 and "--frames: expected a positive frame count, got 0" in err


class _OraclePipeline(PerceptionPipeline):
    """Returns the ground truth as its output, so every metric must be perfect."""

    def __init__(self, truth: list[list[GroundTruthObject]]) -> None:
        self.truth = truth
        self.index = 0

    def reset(self) -> None:
        self.index = 0

    def __call__(self, image_rgb_uint8: np.ndarray) -> FrameResult:
        objects = self.truth[self.index]
        self.index += 1
        boxes = np.array([o.box_xyxy for o in objects], np.float32).reshape(-1, 4)
        dets = Detections(boxes, np.ones(len(objects), np.float32), np.array([o.class_id for o in objects]))
        tracks = [
            TrackResult(o.track_id, boxes[i], o.class_id, 1.0, o.attribute_id, 1.0)
            for i, o in enumerate(objects)
        ]
        return FrameResult(dets, tracks, {"detector": 1.0})


def test_evaluate_frames_perfect_oracle_and_ignore_rule() -> None:
    truth = [
        [
            GroundTruthObject(1, 0, 2, (10.0, 10.0, 50.0, 50.0), 1.0),
            GroundTruthObject(2, 3, 1, (60, 60, 90, 90), 0.2),
        ],
        [
            GroundTruthObject(1, 0, 2, (12.0, 10.0, 52.0, 50.0), 1.0),
            GroundTruthObject(2, 3, 1, (62, 60, 92, 90), 0.3),
        ],
    ]
    frames = [LabelledFrame(np.zeros((120, 160, 3), np.uint8), objs) for objs in truth]
    report = evaluate_frames(frames, _OraclePipeline(truth))
    assert report["frames"] == 2
    assert report["detector"]["map50"] == pytest.approx(1.0)
    assert report["detector"]["num_gt"] == 2  # the two 20-30 % visible objects are ignored
    assert report["tracker"]["mota"] == pytest.approx(1.0)
    assert report["tracker"]["idf1"] == pytest.approx(1.0)
    assert report["classifier"]["top1"] == pytest.approx(1.0)


def test_cli_end_to_end_on_tiny_bag_writes_json(tiny_bag: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    models = DefaultModels(build_detector(), build_embedder(), build_classifier())
    entries = {
        name: save_checkpoint(model, tmp_path / f"{name}.safetensors", name, (1, 1))
        for name, model in models.as_dict().items()
    }
    write_manifest(entries, tmp_path)
    out = tmp_path / "report.json"
    assert (
        cli.main(["--bag", str(tiny_bag), "--json", str(out), "--weights", str(tmp_path), "--no-profile"])
        == 0
    )
    report = json.loads(out.read_text())
    assert report["frames"] == 3
    assert set(report) >= {"detector", "tracker", "classifier"}
    assert {"map50", "map"} <= set(report["detector"]) and {"mota", "idf1"} <= set(report["tracker"])
    assert 0.0 <= report["classifier"]["top1"] <= 1.0
