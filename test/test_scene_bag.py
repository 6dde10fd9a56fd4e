"""Tests of multidnn_sched.scenes.bag and the multidnn-scenes CLI: round trips, reproducibility, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from multidnn_sched.exceptions import BagError, ConfigError
from multidnn_sched.scenes import cli
from multidnn_sched.scenes.bag import (
    CAMERA_INFO_TOPIC,
    GT_TOPIC,
    IMAGE_TOPIC,
    bag_info,
    ground_truth_to_msg,
    iter_bag_frames,
    iter_raw_messages,
    make_header,
    msg_to_ground_truth,
    write_scene_bag,
)
from multidnn_sched.scenes.generator import SceneConfig, SceneGenerator

TINY = SceneConfig(width=96, height=64, min_objects=2, max_objects=4, min_size_px=12.0, max_size_px=30.0,
                   max_speed_px_per_frame=3.0)
N_FRAMES = 8


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def bag(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scene_bag(tmp_path_factory.mktemp(request.param) / "bag", TINY, seed=4, n_frames=N_FRAMES,
                           storage=request.param, progress=False)


def test_frames_and_ground_truth_round_trip(bag: Path) -> None:
    expected = list(SceneGenerator(TINY, seed=4).frames(N_FRAMES))
    frames = list(iter_bag_frames(bag))
    assert len(frames) == N_FRAMES
    for got, want in zip(frames, expected, strict=True):
        assert got.stamp_ns == want.stamp_ns
        assert got.frame_id == "camera"
        assert got.image.dtype == np.uint8 and np.array_equal(got.image, want.image)
        assert got.objects == want.objects


def test_bag_info_lists_topics_counts_and_duration(bag: Path) -> None:
    info = bag_info(bag)
    assert info.message_count == 3 * N_FRAMES
    assert {t: s.message_count for t, s in info.topics.items()} == {
        IMAGE_TOPIC: N_FRAMES, CAMERA_INFO_TOPIC: N_FRAMES, GT_TOPIC: N_FRAMES}
    assert info.topics[GT_TOPIC].msgtype == "vision_msgs/msg/Detection2DArray"
    assert info.duration_ns == round((N_FRAMES - 1) * 1e9 / TINY.rate_hz)


def test_raw_messages_deserialize_with_rclpy(bag: Path) -> None:
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image
    from vision_msgs.msg import Detection2DArray

    raw_images = list(iter_raw_messages(bag))
    assert [r.log_time_ns for r in raw_images] == [round(i * 1e9 / TINY.rate_hz) for i in range(N_FRAMES)]
    image = deserialize_message(raw_images[1].data, Image)
    assert (image.width, image.height, image.encoding, image.step) == (96, 64, "rgb8", 96 * 3)
    assert image.header.frame_id == "camera"
    assert image.header.stamp.sec * 10**9 + image.header.stamp.nanosec == raw_images[1].log_time_ns
    info = deserialize_message(next(iter_raw_messages(bag, CAMERA_INFO_TOPIC)).data, CameraInfo)
    assert (info.width, info.height) == (96, 64)
    assert info.k[2] == pytest.approx(48.0) and info.k[5] == pytest.approx(32.0) and info.k[0] > 0
    gt = deserialize_message(list(iter_raw_messages(bag, GT_TOPIC))[2].data, Detection2DArray)
    expected = list(SceneGenerator(TINY, seed=4).frames(3))[2].objects
    assert msg_to_ground_truth(gt) == expected
    assert [d.id for d in gt.detections] == [str(o.track_id) for o in expected]
    assert all(d.results[1].hypothesis.class_id.startswith("attribute:") for d in gt.detections)


def test_rclpy_ground_truth_encoding_round_trips() -> None:
    objects = list(SceneGenerator(TINY, seed=9).frames(1))[0].objects
    assert objects
    msg = ground_truth_to_msg(make_header(123_456_789_000), objects)
    assert msg.header.stamp.sec == 123 and msg.header.stamp.nanosec == 456_789_000
    assert msg_to_ground_truth(msg) == objects


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_same_arguments_give_byte_identical_files(tmp_path: Path, storage: str) -> None:
    a = write_scene_bag(tmp_path / "a" / "bag", TINY, seed=2, n_frames=4, storage=storage, progress=False)
    b = write_scene_bag(tmp_path / "b" / "bag", TINY, seed=2, n_frames=4, storage=storage, progress=False)
    files_a = sorted(p.name for p in a.iterdir())
    assert files_a == sorted(p.name for p in b.iterdir()) and len(files_a) == 2
    for name in files_a:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs between two runs"
    c = write_scene_bag(tmp_path / "c" / "bag", TINY, seed=3, n_frames=4, storage=storage, progress=False)
    storage_file = next(n for n in files_a if n != "metadata.yaml")
    assert (a / storage_file).read_bytes() != (c / storage_file).read_bytes()


def test_bag_without_ground_truth_gives_none_objects(tmp_path: Path) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from multidnn_sched.scenes.bag import IMAGE_TYPE, rosbags_message_factory

    typestore = get_typestore(Stores.ROS2_KILTED)
    new = rosbags_message_factory(typestore)
    pixels = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    bgr = pixels[:, :, ::-1].reshape(-1)
    msg = new(IMAGE_TYPE, header=make_header(7, new), height=4, width=5, encoding="bgr8", step=15, data=bgr)
    path = tmp_path / "nogt"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=typestore)
        writer.write(conn, 7, bytes(typestore.serialize_cdr(msg, IMAGE_TYPE)))
    frames = list(iter_bag_frames(path))
    assert len(frames) == 1 and frames[0].objects is None and frames[0].stamp_ns == 7
    assert np.array_equal(frames[0].image, pixels)


# ------------------------------------------------------------------------------------------------ bad input
def _copy_bag(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_truncated_mcap_raises_bag_error(tmp_path: Path) -> None:
    bag = write_scene_bag(tmp_path / "bag", TINY, seed=1, n_frames=4, storage="mcap", progress=False)
    mcap = next(bag.glob("*.mcap"))
    os.truncate(mcap, mcap.stat().st_size // 2)
    for call in (bag_info, lambda p: list(iter_bag_frames(p)), lambda p: list(iter_raw_messages(p))):
        with pytest.raises(BagError, match=str(bag)):
            call(bag)
    with pytest.raises(BagError, match="truncated"):
        list(iter_bag_frames(mcap))  # the bare storage file too


def test_corrupt_sqlite_raises_bag_error(tmp_path: Path) -> None:
    bag = write_scene_bag(tmp_path / "bag", TINY, seed=1, n_frames=4, storage="sqlite3", progress=False)
    db = next(bag.glob("*.db3"))
    data = bytearray(db.read_bytes())
    rng = np.random.default_rng(0)
    for offset in range(0, len(data) - 200, 4096):  # scribble over every page
        data[offset + 100:offset + 200] = rng.integers(0, 256, 100, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))
    with pytest.raises(BagError, match="unreadable"):
        list(iter_bag_frames(bag))


def test_not_a_bag_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="not a rosbag2"):
        bag_info(tmp_path / "empty")
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"this is not mcap")
    with pytest.raises(BagError, match="junk.mcap"):
        list(iter_bag_frames(junk))
    with pytest.raises(BagError, match="no such bag"):
        list(iter_raw_messages(tmp_path / "nothing"))


def test_missing_image_topic_lists_available_topics(bag: Path) -> None:
    with pytest.raises(BagError, match=r"'/other/image'.*/camera/camera_info, /camera/image_raw"):
        list(iter_bag_frames(bag, image_topic="/other/image"))


def test_write_refuses_existing_path_and_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "exists").mkdir()
    with pytest.raises(BagError, match="exists already"):
        write_scene_bag(tmp_path / "exists", TINY, n_frames=1, progress=False)
    with pytest.raises(BagError, match="storage"):
        write_scene_bag(tmp_path / "x", TINY, n_frames=1, storage="rosbag1", progress=False)
    with pytest.raises(ConfigError, match="n_frames"):
        write_scene_bag(tmp_path / "y", TINY, n_frames=0, progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_writes_bag_and_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scene"
    preview = tmp_path / "preview.png"
    rc = cli.main(["--seed", "5", "--frames", "3", "--width", "128", "--height", "96", "--out", str(out),
                   "--storage", "sqlite3", "--preview", str(preview), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "/camera/image_raw" in printed
    assert bag_info(out).topics[IMAGE_TOPIC].message_count == 3
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Existing output: exit code 2, one line, no traceback; --overwrite replaces it.
    rc = cli.main(["--frames", "2", "--width", "128", "--height", "96", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "exists already" in err and "Traceback" not in err and err.count("\n") == 1
    rc = cli.main(["--frames", "2", "--width", "128", "--height", "96", "--out", str(out), "--overwrite",
                   "--no-progress"])
    assert rc == 0 and bag_info(out).topics[IMAGE_TOPIC].message_count == 2


@pytest.mark.parametrize("args", [["--width", "4"], ["--height", "100000"], ["--frames", "0"], ["--rate", "0"]])
def test_cli_bad_sizes_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    rc = cli.main([*args, "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("multidnn-scenes: error:") and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_default_output_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--seed", "77", "--frames", "1", "--width", "64", "--height", "48", "--no-progress"]) == 0
    assert (tmp_path / "data" / "scene_seed77" / "metadata.yaml").exists()


def test_undecodable_image_in_bag_raises_bag_error(tmp_path: Path) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from multidnn_sched.scenes.bag import IMAGE_TYPE, rosbags_message_factory

    typestore = get_typestore(Stores.ROS2_KILTED)
    new = rosbags_message_factory(typestore)
    msg = new(IMAGE_TYPE, header=make_header(5, new), height=2, width=2, encoding="yuv422", step=4,
              data=np.zeros(8, np.uint8))
    path = tmp_path / "yuv"
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=typestore)
        writer.write(conn, 5, bytes(typestore.serialize_cdr(msg, IMAGE_TYPE)))
    with pytest.raises(BagError, match=r"yuv.*stamp 5 ns \(unknown_encoding\)"):
        list(iter_bag_frames(path))
