"""Tests of multidnn_sched.ros.conversions: Image <-> numpy per encoding, padding, errors; detections."""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from multidnn_sched.exceptions import ImageConversionError
from multidnn_sched.ros.conversions import (
    DECODE_CAUSES,
    Detections,
    detections_to_msg,
    image_msg_to_numpy,
    mono_to_rgb,
    msg_to_detections,
    numpy_to_image_msg,
)

H, W = 5, 7
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
GREY8 = RNG.integers(0, 256, (H, W), dtype=np.uint8)
GREY16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)


def _header() -> Header:
    header = Header()
    header.frame_id = "camera"
    header.stamp.sec, header.stamp.nanosec = 12, 345
    return header


def _raw_image(encoding: str, payload: np.ndarray, step: int, bigendian: int = 0) -> Image:
    """An Image whose rows are ``step`` bytes: payload rows then 0xEE padding."""
    rows = payload.reshape(H, -1).view(np.uint8).reshape(H, -1)
    padded = np.full((H, step), 0xEE, dtype=np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian = H, W, encoding, step, bigendian
    msg.data = padded.tobytes()
    return msg


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize(
    ("encoding", "payload"),
    [
        ("rgb8", RGB),
        ("bgr8", RGB[:, :, ::-1]),
        ("rgba8", np.concatenate([RGB, np.full((H, W, 1), 9, np.uint8)], axis=2)),
        ("bgra8", np.concatenate([RGB[:, :, ::-1], np.full((H, W, 1), 9, np.uint8)], axis=2)),
    ],
)
def test_colour_encodings_decode_to_rgb(encoding: str, payload: np.ndarray, pad: int) -> None:
    step = payload.shape[2] * W + pad
    out = image_msg_to_numpy(_raw_image(encoding, np.ascontiguousarray(payload), step))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    assert np.array_equal(out, RGB)


@pytest.mark.parametrize("pad", [0, 3])
def test_mono8_decodes_single_channel(pad: int) -> None:
    out = image_msg_to_numpy(_raw_image("mono8", GREY8, W + pad))
    assert out.dtype == np.uint8 and np.array_equal(out, GREY8)
    rgb = mono_to_rgb(out)
    assert rgb.shape == (H, W, 3) and np.array_equal(rgb[:, :, 1], GREY8)


@pytest.mark.parametrize("bigendian", [0, 1])
@pytest.mark.parametrize("pad", [0, 4])
def test_mono16_honours_endianness_and_step(bigendian: int, pad: int) -> None:
    payload = GREY16.astype(">u2" if bigendian else "<u2")
    out = image_msg_to_numpy(_raw_image("mono16", payload, 2 * W + pad, bigendian))
    assert out.dtype == np.uint16 and np.array_equal(out, GREY16)
    assert np.array_equal(mono_to_rgb(out)[:, :, 0], (GREY16 >> 8).astype(np.uint8))


def test_decoded_array_is_a_copy() -> None:
    msg = numpy_to_image_msg(RGB, "rgb8", _header())
    out = image_msg_to_numpy(msg)
    out[:] = 0
    assert np.array_equal(image_msg_to_numpy(msg), RGB)


@pytest.mark.parametrize(
    ("encoding", "array"),
    [("rgb8", RGB), ("bgr8", RGB), ("rgba8", RGB), ("bgra8", RGB), ("mono8", GREY8), ("mono16", GREY16)],
)
def test_numpy_to_image_msg_round_trips(encoding: str, array: np.ndarray) -> None:
    msg = numpy_to_image_msg(array, encoding, _header())
    assert msg.header.frame_id == "camera" and msg.header.stamp.nanosec == 345
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (H, W, encoding, 0)
    assert msg.step * msg.height == len(msg.data)
    assert np.array_equal(image_msg_to_numpy(msg), array)


def test_encode_channel_order_and_alpha() -> None:
    bgr = numpy_to_image_msg(RGB, "bgr8")
    assert bytes(bgr.data[:3]) == bytes(RGB[0, 0, ::-1])
    rgba_in = np.concatenate([RGB, np.full((H, W, 1), 7, np.uint8)], axis=2)
    bgra = numpy_to_image_msg(rgba_in, "bgra8")
    assert bytes(bgra.data[:4]) == bytes([RGB[0, 0, 2], RGB[0, 0, 1], RGB[0, 0, 0], 7])
    assert bytes(numpy_to_image_msg(RGB, "rgba8").data[3:4]) == b"\xff"  # alpha filled with 255


def test_decodes_rosbags_style_numpy_data() -> None:
    msg = numpy_to_image_msg(RGB, "rgb8")
    msg_np = type("FakeImage", (), {})()
    for name in ("height", "width", "encoding", "step", "is_bigendian"):
        setattr(msg_np, name, getattr(msg, name))
    msg_np.data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    assert np.array_equal(image_msg_to_numpy(msg_np), RGB)


def _expect_cause(msg: Image, cause: str, match: str) -> None:
    with pytest.raises(ImageConversionError, match=match) as info:
        image_msg_to_numpy(msg)
    assert info.value.cause == cause
    assert cause in DECODE_CAUSES


def test_unknown_encoding() -> None:
    msg = _raw_image("rgb8", RGB, 3 * W)
    msg.encoding = "yuv422"
    _expect_cause(msg, "unknown_encoding", "got 'yuv422'")


@pytest.mark.parametrize("size", [(0, W), (H, 0)])
def test_zero_size(size: tuple[int, int]) -> None:
    msg = _raw_image("rgb8", RGB, 3 * W)
    msg.height, msg.width = size
    _expect_cause(msg, "zero_size", "non-empty")


def test_bad_step() -> None:
    msg = _raw_image("rgb8", RGB, 3 * W)
    msg.step = 3 * W - 1
    _expect_cause(msg, "bad_step", f"step >= {3 * W}")
    odd = _raw_image("mono16", GREY16, 2 * W + 1)
    _expect_cause(odd, "bad_step", "even")


def test_short_data() -> None:
    msg = _raw_image("bgr8", RGB, 3 * W + 2)
    msg.data = bytes(msg.data)[:-1]
    _expect_cause(msg, "short_data", f"{(3 * W + 2) * H} bytes")


@pytest.mark.parametrize(
    ("array", "encoding", "cause"),
    [
        (RGB, "yuv422", "unknown_encoding"),
        (GREY8, "rgb8", "bad_shape"),
        (RGB.astype(np.float32), "rgb8", "bad_shape"),
        (GREY8, "mono16", "bad_shape"),
        (np.zeros((0, 4, 3), np.uint8), "rgb8", "zero_size"),
    ],
)
def test_numpy_to_image_msg_errors(array: np.ndarray, encoding: str, cause: str) -> None:
    with pytest.raises(ImageConversionError) as info:
        numpy_to_image_msg(array, encoding)
    assert info.value.cause == cause


# ------------------------------------------------------------------------------------------------ detections
def test_detections_round_trip() -> None:
    boxes = np.array([[10.0, 20.0, 50.0, 80.0], [0.5, 1.5, 3.0, 4.0]], dtype=np.float32)
    msg = detections_to_msg(_header(), boxes, np.array([0.9, 0.25]), np.array([2, 0]), ["circle", "square", "star"],
                            ids=[7, "11"])
    assert msg.header.frame_id == "camera" and all(d.header.stamp.sec == 12 for d in msg.detections)
    assert msg.detections[0].bbox.center.position.x == pytest.approx(30.0)
    assert msg.detections[0].bbox.size_y == pytest.approx(60.0)
    back = msg_to_detections(msg)
    assert isinstance(back, Detections)
    assert np.allclose(back.boxes_xyxy, boxes) and back.boxes_xyxy.dtype == np.float32
    assert np.allclose(back.scores, [0.9, 0.25])
    assert back.class_ids == ["star", "circle"] and back.ids == ["7", "11"]
    assert back.labels(["circle", "square", "star"]).tolist() == [2, 0]
    assert back.labels(["square"]).tolist() == [-1, -1]
    assert back.hypotheses[0] == [("star", pytest.approx(0.9))]


def test_detections_empty_and_without_ids() -> None:
    msg = detections_to_msg(_header(), np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), ["a"])
    back = msg_to_detections(msg)
    assert back.boxes_xyxy.shape == (0, 4) and back.ids == [] and back.labels(["a"]).shape == (0,)
    msg = detections_to_msg(_header(), np.ones((1, 4)), [0.5], [0], ["a"])
    assert msg_to_detections(msg).ids == [""]


def test_detections_bad_input() -> None:
    with pytest.raises(ValueError, match="labels in 0..1"):
        detections_to_msg(_header(), np.ones((1, 4)), [0.5], [2], ["a", "b"])
    with pytest.raises(ValueError, match="expected 2 scores"):
        detections_to_msg(_header(), np.ones((2, 4)), [0.5], [0, 0], ["a"])
