"""Reading a replay's bag: image topic (raw or compressed) and type, serialized images, stamps, ground truth;
rewriting a serialized message's header stamp (loops). Shared by the replay driver and the player process."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from multidnn_sched.evaluation.replay_records import BagData
from multidnn_sched.exceptions import BagError

COMPRESSED_SUFFIX = "/compressed"
IMAGE_MSGTYPES: tuple[str, ...] = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def resolve_image_topic(path: Path, image_topic: str) -> tuple[str, str]:
    """(topic, message type) of the bag's images: ``image_topic``, or ``image_topic/compressed`` when only
    that is recorded (``multidnn-scenes --compressed``).

    Raises:
        BagError: unreadable bag, missing topic (the message lists the topics the bag has), wrong type.
    """
    from multidnn_sched.scenes.bag import bag_info

    info = bag_info(path)
    topic = image_topic
    if topic not in info.topics and topic + COMPRESSED_SUFFIX in info.topics:
        topic = topic + COMPRESSED_SUFFIX
    if topic not in info.topics:
        raise BagError(
            f"{path}: expected image topic {image_topic!r}, bag has: "
            f"{', '.join(sorted(info.topics)) or 'none'}"
        )
    msgtype = info.topics[topic].msgtype
    if msgtype not in IMAGE_MSGTYPES:
        raise BagError(f"{path}: expected {topic!r} of type {' or '.join(IMAGE_MSGTYPES)}, got {msgtype}")
    if msgtype == IMAGE_MSGTYPES[1] and not topic.endswith(COMPRESSED_SUFFIX):
        raise BagError(f"{path}: expected CompressedImage topic {topic!r} to end in {COMPRESSED_SUFFIX!r}")
    return topic, msgtype


def load_raw_images(
    path: Path, image_topic: str, max_frames: int | None = None
) -> tuple[str, list[bytes], list[int], int]:
    """(message type, serialized images, header stamps, median stamp spacing ns) of the bag's images."""
    from multidnn_sched.scenes.bag import iter_raw_messages

    topic, msgtype = resolve_image_topic(path, image_topic)
    images: list[bytes] = []
    stamps: list[int] = []
    for raw in iter_raw_messages(path, topic):
        images.append(raw.data)
        stamps.append(_read_stamp(raw.data))
        if max_frames is not None and len(images) >= max_frames:
            break
    if not images:
        raise BagError(f"{path}: topic {topic!r} has no messages")
    period = int(np.median(np.diff(stamps))) if len(stamps) > 1 else 66_666_667
    if period <= 0:
        raise BagError(f"{path}: expected increasing image stamps, got a median spacing of {period} ns")
    return msgtype, images, stamps, period


def load_bag(path: Path, image_topic: str, gt_topic: str, max_frames: int | None = None) -> BagData:
    """Read the images (serialized, raw or compressed) and the ground truth of a bag.

    Raises:
        BagError: unreadable bag, or the image topic is missing (the message lists the topics the bag has).
    """
    from rclpy.serialization import deserialize_message
    from vision_msgs.msg import Detection2DArray

    from multidnn_sched.scenes.bag import bag_info, iter_raw_messages, msg_to_ground_truth

    topic, _ = resolve_image_topic(path, image_topic)
    msgtype, images, stamps, period = load_raw_images(path, image_topic, max_frames)
    ground_truth = None
    if gt_topic in bag_info(path).topics:
        by_stamp = {}
        for raw in iter_raw_messages(path, gt_topic):
            msg = deserialize_message(raw.data, Detection2DArray)
            by_stamp[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = msg_to_ground_truth(
                msg
            )
        ground_truth = [by_stamp.get(s, []) for s in stamps]
    return BagData(images, stamps, period, ground_truth, msgtype, topic)


_CDR_LE = b"\x00\x01"


def _read_stamp(cdr: bytes) -> int:
    """Header stamp of a serialized message whose first field is a ``std_msgs/Header`` (little-endian CDR)."""
    if cdr[:2] != _CDR_LE:
        raise BagError(f"expected little-endian CDR (00 01), got {cdr[:2].hex()}")
    sec, nanosec = struct.unpack_from("<iI", cdr, 4)
    return sec * 1_000_000_000 + nanosec


def _with_stamp(cdr: bytes, stamp_ns: int) -> bytes:
    """The same serialized message with its header stamp replaced (8 bytes at offset 4)."""
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return cdr[:4] + struct.pack("<iI", sec, nanosec) + cdr[12:]
