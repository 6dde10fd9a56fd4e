"""rosbag2 I/O for synthetic scenes: write a scene sequence as a bag, read frames and ground truth back.

Writing builds messages with a ``rosbags`` typestore (vision_msgs registered from the installed message
classes' field lists) and serializes them to CDR with zeroed padding, so the same arguments give byte-identical
files; ROS deserializes them like any recorded bag. Reading needs neither rclpy nor vision_msgs: it decodes with
a ``rosbags`` typestore, registering message types that the typestore lacks (vision_msgs) from the
definitions stored in the bag itself.

Topics (see docs/scenes.md for the ground-truth encoding):

- ``/camera/image_raw``: ``sensor_msgs/msg/Image``, ``rgb8``.
- ``/camera/camera_info``: ``sensor_msgs/msg/CameraInfo``, pinhole, 60 degree horizontal field of view.
- ``/ground_truth/detections``: ``vision_msgs/msg/Detection2DArray``.

Every header has ``frame_id = "camera"`` and ``stamp = SceneFrame.stamp_ns``; the bag's log time of each
message is the same ``stamp_ns``.
"""

from __future__ import annotations

import math
import sqlite3
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import Nodetype
from rosbags.typesys.store import Typestore
from tqdm import tqdm

from multidnn_sched.exceptions import BagError, ConfigError, ImageConversionError
from multidnn_sched.msgs.compressed import compressed_msg_to_rgb, encode_rgb
from multidnn_sched.msgs.conversions import image_msg_to_numpy, mono_to_rgb
from multidnn_sched.scenes.generator import (
    ATTRIBUTES,
    CLASSES,
    GroundTruthObject,
    SceneConfig,
    SceneGenerator,
)

IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
GT_TOPIC = "/ground_truth/detections"
FRAME_ID = "camera"

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_FORMATS: tuple[str, ...] = ("raw", "jpeg", "png")
"""Image formats :func:`write_scene_bag` writes (``jpeg`` / ``png``: ``CompressedImage`` on ``<topic>/compressed``)."""
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"

ATTRIBUTE_PREFIX = "attribute:"
"""Ground truth: the attribute hypothesis' ``class_id`` is ``"attribute:<name>"``, score 1.0."""

VISIBLE_CLASS_ID = "visible"
"""Ground truth: a third hypothesis ``class_id == "visible"`` carries ``visible_fraction`` as its score."""

HORIZONTAL_FOV_DEG = 60.0
STORAGES: tuple[str, ...] = ("mcap", "sqlite3")

# Errors the rosbags readers and the storage back ends raise on damaged input.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    ReaderError, sqlite3.Error, OSError, EOFError, struct.error, ValueError, KeyError, IndexError,
    AssertionError,
)


@dataclass
class BagFrame:
    """One camera frame read from a bag.

    Attributes:
        stamp_ns: Header stamp of the image, nanoseconds.
        frame_id: Header frame id of the image.
        image: [H, W, 3] uint8 RGB.
        objects: Ground truth with the same stamp; None when the bag has no ground-truth topic, [] when the
            topic exists but has no message for this stamp.
    """

    stamp_ns: int
    frame_id: str
    image: np.ndarray
    objects: list[GroundTruthObject] | None


@dataclass
class RawMessage:
    """A serialized message as stored in the bag.

    Attributes:
        log_time_ns: The bag's record time of the message, nanoseconds.
        topic: Topic name.
        msgtype: ROS type name, e.g. ``sensor_msgs/msg/Image``.
        data: CDR bytes, ready for ``rclpy.serialization.deserialize_message`` or a raw publisher.
    """

    log_time_ns: int
    topic: str
    msgtype: str
    data: bytes


@dataclass
class TopicSummary:
    """One topic of a bag: its type and message count."""

    msgtype: str
    message_count: int


@dataclass
class BagInfo:
    """Summary of a bag.

    Attributes:
        path: The bag directory or storage file.
        message_count: All messages.
        start_ns: First log time, nanoseconds (0 for an empty bag).
        duration_ns: Last minus first log time, nanoseconds.
        topics: Topic name -> type and count.
    """

    path: Path
    message_count: int
    start_ns: int
    duration_ns: int
    topics: dict[str, TopicSummary] = field(default_factory=dict)

    @property
    def duration_sec(self) -> float:
        """Duration in seconds."""
        return self.duration_ns / 1e9


# --------------------------------------------------------------------------------------------- type support
def _ros_field_type_to_msg(ros_type: str) -> str:
    """Translate one ``get_fields_and_field_types()`` type (IDL flavoured) into .msg syntax."""
    primitive = {"boolean": "bool", "octet": "byte", "double": "float64", "float": "float32", "char": "char"}
    if ros_type.startswith("sequence<") and ros_type.endswith(">"):
        inner = ros_type[len("sequence<"):-1]
        if "," in inner:
            elem, bound = (s.strip() for s in inner.rsplit(",", 1))
            return f"{_ros_field_type_to_msg(elem)}[<={bound}]"
        return f"{_ros_field_type_to_msg(inner)}[]"
    if ros_type.endswith("]") and "[" in ros_type:
        elem, size = ros_type[:-1].split("[", 1)
        return f"{_ros_field_type_to_msg(elem)}[{size}]"
    return primitive.get(ros_type, ros_type)


def _msg_class(type_name: str) -> Any:
    """Import ``pkg/msg/Name`` or ``pkg/Name`` as a Python message class."""
    parts = type_name.split("/")
    pkg, name = parts[0], parts[-1]
    module = __import__(f"{pkg}.msg", fromlist=[name])
    return getattr(module, name)


def register_installed_types(typestore: Typestore, root_type: str) -> None:
    """Register ``root_type`` and the types it uses, when the typestore lacks them, from the installed classes.

    The .msg text is built from each Python message class' ``get_fields_and_field_types()``, so this works with
    the robot's real vision_msgs as well as with a compatible build (field names and types only; constants are
    not needed for (de)serialization).

    Args:
        typestore: A rosbags typestore; modified in place.
        root_type: E.g. ``vision_msgs/msg/Detection2DArray``.
    """
    pending = [root_type]
    seen: set[str] = set()
    new_types: dict[str, Any] = {}
    while pending:
        name = pending.pop()
        full = name if "/msg/" in name else name.replace("/", "/msg/", 1)
        if full in seen or full in typestore.types:
            continue
        seen.add(full)
        fields = _msg_class(full).get_fields_and_field_types()
        lines = []
        for fname, ftype in fields.items():
            msg_type = _ros_field_type_to_msg(ftype)
            lines.append(f"{msg_type} {fname}")
            base = msg_type.split("[", 1)[0]
            if "/" in base:
                pending.append(base)
        new_types.update(get_types_from_msg("\n".join(lines) + "\n", full))
    typestore.register(new_types)


def _typestore_for_reader(reader: Reader) -> Typestore:
    """A Kilted typestore plus every type the bag defines that the store lacks (e.g. vision_msgs)."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    for conn in reader.connections:
        if conn.msgtype not in typestore.types and conn.msgdef.data:
            typestore.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
    return typestore


# --------------------------------------------------------------------------------------------- writing
def camera_info_matrices(width: int, height: int) -> tuple[list[float], list[float]]:
    """Plausible pinhole K (3x3, row-major) and P (3x4) for an image size, 60 degree horizontal field of view."""
    fx = width / (2.0 * math.tan(math.radians(HORIZONTAL_FOV_DEG) / 2.0))
    cx, cy = width / 2.0, height / 2.0
    k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return k, p


MessageFactory = Callable[..., Any]
"""``new(typename, **fields) -> message``: builds a message of a ROS type with the given fields set."""

_NUMPY_DTYPES: dict[str, str] = {
    "bool": "bool", "byte": "uint8", "char": "uint8", "int8": "int8", "uint8": "uint8", "int16": "int16",
    "uint16": "uint16", "int32": "int32", "uint32": "uint32", "int64": "int64", "uint64": "uint64",
    "float32": "float32", "float64": "float64",
}


def rclpy_message_factory(typename: str, **fields: Any) -> Any:
    """MessageFactory for the installed rclpy message classes (for live publishing)."""
    return _msg_class(typename)(**fields)


def rosbags_message_factory(typestore: Typestore) -> MessageFactory:
    """MessageFactory for a rosbags typestore; unset fields get ROS defaults (zeros, '', identity quaternion).

    rosbags' serializer writes zero padding, so its CDR is byte-for-byte reproducible; rclpy's serializer leaves
    padding bytes uninitialized (seen: two runs differed in the 2 padding bytes after ``Image.is_bigendian``).
    """

    def default(desc: tuple[Any, Any]) -> Any:
        kind, detail = desc
        if kind == Nodetype.BASE:
            base = detail[0]
            if base == "string":
                return ""
            return False if base == "bool" else (0.0 if base.startswith("float") else 0)
        if kind == Nodetype.NAME:
            return new(detail)
        elem, length = detail
        if kind == Nodetype.ARRAY:
            if elem[0] == Nodetype.BASE and elem[1][0] in _NUMPY_DTYPES:
                return np.zeros(length, dtype=_NUMPY_DTYPES[elem[1][0]])
            return [default(elem) for _ in range(length)]
        if elem[0] == Nodetype.BASE and elem[1][0] in _NUMPY_DTYPES:  # sequence of numbers
            return np.zeros(0, dtype=_NUMPY_DTYPES[elem[1][0]])
        return []

    def new(typename: str, **fields: Any) -> Any:
        full = typename if "/msg/" in typename else typename.replace("/", "/msg/", 1)
        _, fielddefs = typestore.fielddefs[full]
        values = {name: fields[name] if name in fields else default(desc) for name, desc in fielddefs}
        if full == "geometry_msgs/msg/Quaternion" and "w" not in fields:
            values["w"] = 1.0
        unknown = set(fields) - set(values)
        if unknown:
            raise ValueError(f"{full}: expected fields {sorted(values)}, got unknown {sorted(unknown)}")
        return typestore.types[full](**values)

    return new


def make_header(stamp_ns: int, new: MessageFactory = rclpy_message_factory, frame_id: str = FRAME_ID) -> Any:
    """``std_msgs/msg/Header`` with ``stamp`` from nanoseconds."""
    stamp = new("builtin_interfaces/msg/Time", sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return new("std_msgs/msg/Header", stamp=stamp, frame_id=frame_id)


def ground_truth_to_msg(
    header: Any, objects: list[GroundTruthObject], new: MessageFactory = rclpy_message_factory
) -> Any:
    """Encode ground truth as a ``vision_msgs/msg/Detection2DArray`` (encoding in docs/scenes.md).

    Args:
        header: ``std_msgs/msg/Header`` copied to the array and to every detection.
        objects: Ground-truth objects of one frame.
        new: Message factory; the default builds rclpy messages.

    Returns:
        The Detection2DArray message.
    """
    detections = []
    for obj in objects:
        x1, y1, x2, y2 = obj.box_xyxy
        centre = new("vision_msgs/msg/Pose2D", position=new("vision_msgs/msg/Point2D", x=(x1 + x2) / 2.0,
                                                             y=(y1 + y2) / 2.0), theta=0.0)
        bbox = new("vision_msgs/msg/BoundingBox2D", center=centre, size_x=x2 - x1, size_y=y2 - y1)
        results = [
            new("vision_msgs/msg/ObjectHypothesisWithPose",
                hypothesis=new("vision_msgs/msg/ObjectHypothesis", class_id=class_id, score=score))
            for class_id, score in (
                (CLASSES[obj.class_id], 1.0),
                (ATTRIBUTE_PREFIX + ATTRIBUTES[obj.attribute_id], 1.0),
                (VISIBLE_CLASS_ID, float(obj.visible_fraction)),
            )
        ]
        detections.append(new("vision_msgs/msg/Detection2D", header=header, results=results, bbox=bbox,
                              id=str(obj.track_id)))
    return new("vision_msgs/msg/Detection2DArray", header=header, detections=detections)


def write_scene_bag(
    path: str | Path,
    config: SceneConfig | None = None,
    seed: int = 0,
    n_frames: int = 300,
    storage: str = "mcap",
    progress: bool = True,
    image_format: str = "raw",
) -> Path:
    """Render a scene sequence and write it as a rosbag2 directory.

    The same arguments (and the same directory name: the storage file is named after it) always give
    byte-identical files.

    Args:
        path: Bag directory to create; must not exist.
        config: Scene parameters (default ``SceneConfig()``).
        seed: Scene seed.
        n_frames: Number of frames (>= 1).
        storage: ``"mcap"`` or ``"sqlite3"``.
        progress: Show a tqdm progress bar on stderr.
        image_format: ``"raw"`` (``sensor_msgs/Image`` rgb8 on ``/camera/image_raw``) or ``"jpeg"`` /
            ``"png"`` (``sensor_msgs/CompressedImage`` on ``/camera/image_raw/compressed``, as image_transport's
            ``compressed`` plugin publishes).

    Returns:
        The bag directory.

    Raises:
        BagError: ``path`` exists, ``storage`` is unknown, or the writer fails.
        ConfigError: ``config`` or ``n_frames`` is out of range.
    """
    path = Path(path)
    config = config if config is not None else SceneConfig()
    if storage not in STORAGES:
        raise BagError(f"{path}: expected storage one of {', '.join(STORAGES)}, got {storage!r}")
    if image_format not in IMAGE_FORMATS:
        raise ConfigError(f"write_scene_bag: expected image_format one of {IMAGE_FORMATS}, got {image_format!r}")
    compressed = image_format != "raw"
    image_topic = IMAGE_TOPIC + "/compressed" if compressed else IMAGE_TOPIC
    image_type = COMPRESSED_TYPE if compressed else IMAGE_TYPE
    if n_frames < 1:
        raise ConfigError(f"write_scene_bag: expected n_frames >= 1, got {n_frames}")
    if path.exists():
        raise BagError(f"{path}: output exists already; expected a path that does not exist")
    generator = SceneGenerator(config, seed=seed)  # validates the config before anything is created
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    typestore = get_typestore(Stores.ROS2_KILTED)
    register_installed_types(typestore, DETECTIONS_TYPE)
    new = rosbags_message_factory(typestore)
    k, p = camera_info_matrices(config.width, config.height)
    identity = np.eye(3, dtype=np.float64).ravel()
    try:
        with Writer(path, version=9, storage_plugin=plugin) as writer:
            conn_info = writer.add_connection(CAMERA_INFO_TOPIC, CAMERA_INFO_TYPE, typestore=typestore)
            conn_image = writer.add_connection(image_topic, image_type, typestore=typestore)
            conn_gt = writer.add_connection(GT_TOPIC, DETECTIONS_TYPE, typestore=typestore)
            frames = generator.frames(n_frames)
            bar = tqdm(frames, total=n_frames, desc=f"writing {path.name}", unit="frame", file=sys.stderr,
                       disable=not progress)
            for frame in bar:
                header = make_header(frame.stamp_ns, new)
                info = new(CAMERA_INFO_TYPE, header=header, width=config.width, height=config.height,
                           distortion_model="plumb_bob", d=np.zeros(5), k=np.array(k), r=identity, p=np.array(p))
                height, width = frame.image.shape[:2]
                if compressed:
                    data = np.frombuffer(encode_rgb(frame.image, image_format), np.uint8)
                    image = new(COMPRESSED_TYPE, header=header, format=image_format, data=data)
                else:
                    image = new(IMAGE_TYPE, header=header, height=height, width=width, encoding="rgb8",
                                is_bigendian=0, step=width * 3, data=frame.image.reshape(-1))
                gt = ground_truth_to_msg(header, frame.objects, new)
                writer.write(conn_info, frame.stamp_ns, bytes(typestore.serialize_cdr(info, CAMERA_INFO_TYPE)))
                writer.write(conn_image, frame.stamp_ns, bytes(typestore.serialize_cdr(image, image_type)))
                writer.write(conn_gt, frame.stamp_ns, bytes(typestore.serialize_cdr(gt, DETECTIONS_TYPE)))
    except WriterError as exc:
        raise BagError(f"{path}: cannot write bag: {exc}") from exc
    return path


# --------------------------------------------------------------------------------------------- reading
def _open_reader(path: Path) -> Reader:
    if not path.exists():
        raise BagError(f"{path}: no such bag (expected a rosbag2 directory, .mcap or .db3 file)")
    try:
        reader = Reader(path)
        reader.open()
    except FileNotFoundError as exc:
        raise BagError(f"{path}: not a rosbag2 (expected metadata.yaml, .mcap or .db3): {exc}") from exc
    except _READ_ERRORS as exc:
        raise BagError(f"{path}: not a readable rosbag2 (unreadable or truncated): {exc}") from exc
    return reader


def bag_info(path: str | Path) -> BagInfo:
    """Topics, message counts and time span of a bag.

    Raises:
        BagError: The bag cannot be read.
    """
    path = Path(path)
    reader = _open_reader(path)
    try:
        topics = {name: TopicSummary(t.msgtype or "", int(t.msgcount)) for name, t in reader.topics.items()}
        count = int(reader.message_count)
        start = int(reader.start_time) if count else 0
        duration = int(reader.end_time - reader.start_time - 1) if count > 0 else 0
        return BagInfo(path=path, message_count=count, start_ns=start, duration_ns=max(duration, 0),
                       topics=topics)
    except _READ_ERRORS as exc:
        raise BagError(f"{path}: cannot read bag metadata: {exc}") from exc
    finally:
        reader.close()


def _require_topic(reader: Reader, path: Path, topic: str) -> list[Any]:
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        have = ", ".join(sorted({c.topic for c in reader.connections})) or "none"
        raise BagError(f"{path}: expected topic {topic!r}, bag has: {have}")
    return conns


def iter_raw_messages(path: str | Path, topic: str = IMAGE_TOPIC) -> Iterator[RawMessage]:
    """Serialized messages of one topic in log-time order (for replay publishers).

    Args:
        path: Bag directory or storage file.
        topic: Topic to read, by default the camera images.

    Yields:
        RawMessage with the CDR bytes as stored.

    Raises:
        BagError: Unreadable or truncated bag, or the topic is missing (the message lists the topics it has).
    """
    path = Path(path)
    reader = _open_reader(path)
    try:
        conns = _require_topic(reader, path, topic)
        for conn, log_time, raw in reader.messages(connections=conns):
            yield RawMessage(log_time_ns=int(log_time), topic=conn.topic, msgtype=conn.msgtype, data=bytes(raw))
    except _READ_ERRORS as exc:
        raise BagError(f"{path}: bag is unreadable or truncated while reading {topic!r}: {exc}") from exc
    finally:
        reader.close()


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def msg_to_ground_truth(msg: Any) -> list[GroundTruthObject]:
    """Decode a ground-truth Detection2DArray (rclpy or rosbags message object) back to objects.

    Raises:
        ValueError: A detection does not follow the ground-truth encoding (the message names the detection).
    """
    objects: list[GroundTruthObject] = []
    for i, det in enumerate(msg.detections):
        class_id: int | None = None
        attribute_id: int | None = None
        visible = 1.0
        for res in det.results:
            name = str(res.hypothesis.class_id)
            if name == VISIBLE_CLASS_ID:
                visible = float(res.hypothesis.score)
            elif name.startswith(ATTRIBUTE_PREFIX):
                attribute_id = ATTRIBUTES.index(name[len(ATTRIBUTE_PREFIX):])
            elif name in CLASSES:
                class_id = CLASSES.index(name)
        if class_id is None or attribute_id is None:
            raise ValueError(f"ground-truth detection {i} (id {det.id!r}): expected a class from {CLASSES} and "
                             f"an '{ATTRIBUTE_PREFIX}<name>' hypothesis, got "
                             f"{[r.hypothesis.class_id for r in det.results]}")
        cx, cy = float(det.bbox.center.position.x), float(det.bbox.center.position.y)
        w, h = float(det.bbox.size_x), float(det.bbox.size_y)
        objects.append(GroundTruthObject(
            track_id=int(det.id), class_id=class_id, attribute_id=attribute_id,
            box_xyxy=(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0), visible_fraction=visible,
        ))
    return objects


def _image_to_rgb(msg: Any, path: Path) -> np.ndarray:
    """Any supported Image encoding (rosbags message) -> [H, W, 3] uint8 RGB; BagError names file and cause."""
    try:
        if not hasattr(msg, "encoding"):  # sensor_msgs/CompressedImage
            return compressed_msg_to_rgb(msg)
        array = image_msg_to_numpy(msg)
    except ImageConversionError as exc:
        cause = getattr(exc, "cause", "unknown")
        raise BagError(f"{path}: cannot decode image at stamp {_stamp_ns(msg.header)} ns ({cause}): {exc}") from exc
    return mono_to_rgb(array) if array.ndim == 2 else array


def iter_bag_frames(
    path: str | Path, image_topic: str = IMAGE_TOPIC, gt_topic: str = GT_TOPIC
) -> Iterator[BagFrame]:
    """Camera frames of a bag, each with the ground truth of the same stamp.

    Args:
        path: Bag directory or storage file.
        image_topic: ``sensor_msgs/msg/Image`` topic (or, when only that is recorded, the
            ``sensor_msgs/msg/CompressedImage`` topic ``<image_topic>/compressed``).
        gt_topic: ``vision_msgs/msg/Detection2DArray`` ground-truth topic; when the bag lacks it,
            ``BagFrame.objects`` is None.

    Yields:
        BagFrame in log-time order.

    Raises:
        BagError: Unreadable or truncated bag, missing image topic, unsupported image encoding.
    """
    path = Path(path)
    reader = _open_reader(path)
    try:
        topics = {c.topic for c in reader.connections}
        if image_topic not in topics and image_topic + "/compressed" in topics:
            image_topic = image_topic + "/compressed"
        image_conns = _require_topic(reader, path, image_topic)
        typestore = _typestore_for_reader(reader)
        gt_conns = [c for c in reader.connections if c.topic == gt_topic]
        gt_by_stamp: dict[int, list[GroundTruthObject]] | None = None
        if gt_conns:
            gt_by_stamp = {}
            for conn, _, raw in reader.messages(connections=gt_conns):
                msg = typestore.deserialize_cdr(raw, conn.msgtype)
                gt_by_stamp[_stamp_ns(msg.header)] = msg_to_ground_truth(msg)
        for conn, _, raw in reader.messages(connections=image_conns):
            msg = typestore.deserialize_cdr(raw, conn.msgtype)
            stamp = _stamp_ns(msg.header)
            objects = None if gt_by_stamp is None else gt_by_stamp.get(stamp, [])
            yield BagFrame(stamp_ns=stamp, frame_id=str(msg.header.frame_id), image=_image_to_rgb(msg, path),
                           objects=objects)
    except _READ_ERRORS as exc:
        raise BagError(f"{path}: bag is unreadable or truncated: {exc}") from exc
    finally:
        reader.close()
