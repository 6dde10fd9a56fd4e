"""The image input of the perception nodes: one subscription, one decode per image, shared by stamp.

In a container every node needs every image; :class:`ImageInput` subscribes once (on the container node, in
a callback group of its own), decodes each image once into a :class:`Frame` and hands the same frame to every
node (``offer_frame``: queued, picked up on the node's own callback group). A node running alone creates its
own ``ImageInput`` in its own callback group with itself as the only sink (``take_frame``: no hand-off), so it
subscribes as any ROS node does.

Input is ``sensor_msgs/Image`` on ``image`` (``image_transport: raw``) or ``sensor_msgs/CompressedImage``
(``jpeg``, ``png``) on ``<image>/compressed`` (``image_transport: compressed``, the image_transport
convention: the resolved ``image`` name plus ``/compressed``, so ``-r image:=/camera/image_raw`` gives
``/camera/image_raw/compressed``). QoS: REP-2003 sensor data (keep last ``image_depth``, best effort) by
default; ``image_reliability: reliable`` for evaluations that must not lose images in transport.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from std_msgs.msg import Header

from multidnn_sched.exceptions import ImageConversionError
from multidnn_sched.ros.imaging import image_to_rgb
from multidnn_sched.ros.timing import now_ms

IMAGE_TRANSPORTS: tuple[str, ...] = ("raw", "compressed")
DEFAULT_IMAGE_DEPTH = qos_profile_sensor_data.depth
"""REP-2003 sensor-data history depth (5)."""


def image_qos(reliability: str, depth: int = DEFAULT_IMAGE_DEPTH) -> QoSProfile:
    """REP-2003 sensor-data QoS (keep last ``depth``, best effort, volatile); ``"reliable"`` overrides."""
    profile = QoSProfile(
        depth=int(depth),
        history=qos_profile_sensor_data.history,
        durability=qos_profile_sensor_data.durability,
        reliability=qos_profile_sensor_data.reliability,
    )
    if reliability == "reliable":
        profile.reliability = ReliabilityPolicy.RELIABLE
    return profile


@dataclass
class Frame:
    """One decoded image, shared by every node of a container (read it, never write into ``rgb``).

    Attributes:
        header: the image's header (the output headers copy it).
        stamp_ns: header stamp, ns (the pairing key).
        rgb: ``uint8[H, W, 3]``.
        received_ms: when the image callback ran (``perf_counter`` ms).
        transport_ms: header stamp -> callback on the subscribing node's ROS clock.
    """

    header: Header
    stamp_ns: int
    rgb: np.ndarray
    received_ms: float
    transport_ms: float | None = None


class FrameSink(Protocol):
    """What :class:`ImageInput` hands frames to (a perception node)."""

    def offer_frame(self, frame: Frame) -> None: ...

    def take_frame(self, frame: Frame) -> None: ...

    def on_bad_image(self, cause: str, error: ImageConversionError) -> None: ...


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class ImageInput:
    """One image subscription on ``node`` that decodes each message once and offers it to ``sinks``.

    Args:
        node: the node that owns the subscription (the container node, or a node running alone).
        sinks: the nodes that receive every frame.
        transport: ``raw`` (``sensor_msgs/Image`` on ``image``) or ``compressed`` (``<image>/compressed``).
        reliability: ``best_effort`` (REP-2003) or ``reliable``.
        depth: QoS history depth.
        callback_group: the subscription's callback group.
        inline_sink: the sink whose callback group ``callback_group`` is: it gets each frame in the image
            callback itself (``take_frame``, no hand-off); the others through ``offer_frame``.
    """

    def __init__(
        self,
        node: Node,
        sinks: Sequence[FrameSink],
        transport: str = "raw",
        reliability: str = "best_effort",
        depth: int = DEFAULT_IMAGE_DEPTH,
        callback_group: CallbackGroup | None = None,
        inline_sink: FrameSink | None = None,
    ) -> None:
        if transport not in IMAGE_TRANSPORTS:
            raise ValueError(f"expected image_transport one of {IMAGE_TRANSPORTS}, got {transport!r}")
        self.node = node
        self.sinks = list(sinks)
        self.inline_sink = inline_sink
        self.transport = transport
        self.received = 0
        self.decoded = 0
        """Images decoded (one per valid image received, whatever the number of sinks)."""
        self.bad = 0
        self._lock = threading.Lock()
        qos = image_qos(reliability, depth)
        if transport == "raw":
            from sensor_msgs.msg import Image

            self.topic = node.resolve_topic_name("image")
            self.subscription = node.create_subscription(
                Image, self.topic, self._on_raw, qos, callback_group=callback_group
            )
        else:
            from sensor_msgs.msg import CompressedImage

            self.topic = node.resolve_topic_name("image").rstrip("/") + "/compressed"
            self.subscription = node.create_subscription(
                CompressedImage, self.topic, self._on_compressed, qos, callback_group=callback_group
            )

    def _on_raw(self, msg: Any) -> None:
        self._handle(msg, image_to_rgb)

    def _on_compressed(self, msg: Any) -> None:
        from multidnn_sched.msgs.compressed import compressed_msg_to_rgb

        self._handle(msg, compressed_msg_to_rgb)

    def _handle(self, msg: Any, decode: Any) -> None:
        received_ms = now_ms()
        stamp = _stamp_ns(msg.header)
        transport_ms = (self.node.get_clock().now().nanoseconds - stamp) / 1e6
        with self._lock:
            self.received += 1
        try:
            rgb = decode(msg)
        except ImageConversionError as error:
            with self._lock:
                self.bad += 1
            for sink in self.sinks:
                sink.on_bad_image(str(getattr(error, "cause", "invalid")), error)
            return
        with self._lock:
            self.decoded += 1
        frame = Frame(msg.header, stamp, rgb, received_ms, transport_ms)
        for sink in self.sinks:
            if sink is not self.inline_sink:
                sink.offer_frame(frame)
        if self.inline_sink is not None:
            self.inline_sink.take_frame(frame)

    def counts(self) -> dict[str, int]:
        """``received`` / ``decoded`` / ``bad`` images so far."""
        with self._lock:
            return {"received": self.received, "decoded": self.decoded, "bad": self.bad}
