"""The replay's bag player and output recorder, in a process of their own (like ``ros2 bag play``).

``multidnn-replay`` runs the container in its own process and starts this module as a child process
(``python -m multidnn_sched.evaluation.replay_player CONFIG.json``), so the measured process is the container
alone, as on a robot where the camera driver is another process. The player:

1. publishes the bag's images (raw ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage``, as stored) and
   ``/clock``; for evaluation with reliable QoS (keep last ``depth``) so that no image is lost in transport;
2. waits until the container's image subscription and the recorder's subscriptions to every output topic are
   matched, plus a short settle, before the first image;
3. paces the images at the bag's rate (or ``--rate``), on an absolute schedule (no drift);
4. records every output with its receive time, drains (until every stage answered every image, or outputs
   stop coming), and writes the result as JSON (:func:`write_result`).

Times are ``time.perf_counter()`` seconds: ``CLOCK_MONOTONIC`` on Linux, one clock for every process of the
machine, so the container's per-frame timestamps and the player's publish / receive times can be subtracted.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SUBSCRIBERS_TIMEOUT_SEC = 30.0
"""Longest wait for the container's subscription and the outputs' publishers to match."""

SETTLE_SEC = 0.5
"""Pause after everything matched, before the first image (the reliable writers' handshakes)."""

DRAIN_TIMEOUT_SEC = 5.0
"""After the last image, wait at most this long for outstanding outputs (longer while they keep coming)."""


@dataclass
class PlayerConfig:
    """What the player process needs (a JSON file written by the replay driver).

    Attributes:
        bag: bag path.
        image_topic: the bag's image topic (published under the same name).
        gt_topic: ground-truth topic (not published; the driver reads it).
        max_frames: first N images only.
        period_sec: time between images.
        loops: times to play the bag.
        soak_minutes: play repeatedly this long instead (``None``: ``loops``).
        domain_id: DDS domain.
        reliable: reliable image QoS (evaluation) instead of REP-2003 sensor data (best effort).
        depth: image QoS history depth.
        output_topics: topics to record (``vision_msgs/Detection2DArray``).
        result: where to write the result JSON.
        progress: print a progress line every 5 s on stderr.
    """

    bag: str
    image_topic: str
    gt_topic: str
    max_frames: int | None
    period_sec: float
    loops: int
    soak_minutes: float | None
    domain_id: int
    reliable: bool
    depth: int
    output_topics: list[str]
    result: str
    progress: bool = False


@dataclass
class PlayerResult:
    """What the player recorded (JSON).

    Attributes:
        published: ``[stamp_ns, publish time sec, frame index]`` per image sent.
        outputs: output topic -> ``[stamp_ns, receive time sec, boxes, scores, class_ids, ids, attributes]``.
        start_sec: publish time of the first image.
        wall_sec: first image to the end of the drain.
        loops: times the bag was played.
        matched_sec: how long matching the subscriptions took.
    """

    published: list[list[Any]] = field(default_factory=list)
    outputs: dict[str, list[list[Any]]] = field(default_factory=dict)
    start_sec: float = 0.0
    wall_sec: float = 0.0
    loops: int = 0
    matched_sec: float = 0.0


def write_result(result: PlayerResult, path: Path) -> None:
    path.write_text(json.dumps(asdict(result)))


def read_result(path: Path) -> PlayerResult:
    data = json.loads(path.read_text())
    return PlayerResult(**data)


def image_publisher_qos(reliable: bool, depth: int) -> Any:
    """Reliable keep-last ``depth`` (evaluation), or REP-2003 sensor data (best effort, keep last 5)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if not reliable:
        return qos_profile_sensor_data
    return QoSProfile(
        depth=max(int(depth), 1),
        history=qos_profile_sensor_data.history,
        durability=qos_profile_sensor_data.durability,
        reliability=ReliabilityPolicy.RELIABLE,
    )


class _Recorder:
    """Records every output message as it arrives, serialized (``raw=True``: no deserialization in the timed
    window, so the player takes less CPU from the container it measures); :meth:`parse` decodes them after
    the run."""

    def __init__(self, node: Any, topics: list[str], result: PlayerResult) -> None:
        from vision_msgs.msg import Detection2DArray

        self._result = result
        self._lock = threading.Lock()
        self._raw: dict[str, list[tuple[bytes, float]]] = {topic: [] for topic in topics}
        self.subscriptions = []
        for topic in topics:
            result.outputs[topic] = []
            self.subscriptions.append(
                node.create_subscription(Detection2DArray, topic, self._callback(topic), 100, raw=True)
            )

    def _callback(self, topic: str) -> Any:
        received = self._raw[topic]

        def on_msg(data: bytes) -> None:
            now = time.perf_counter()
            with self._lock:
                received.append((data, now))

        return on_msg

    def counts(self) -> list[int]:
        with self._lock:
            return [len(v) for v in self._raw.values()]

    def parse(self) -> None:
        """Decode the recorded messages into the result's ``outputs`` (after the run)."""
        from rclpy.serialization import deserialize_message
        from vision_msgs.msg import Detection2DArray

        from multidnn_sched.ros.conversions import msg_to_detections

        with self._lock:
            raw = {topic: list(items) for topic, items in self._raw.items()}
        for topic, items in raw.items():
            records = self._result.outputs[topic]
            for data, now in items:
                msg = deserialize_message(data, Detection2DArray)
                parsed = msg_to_detections(msg)
                records.append(
                    [
                        msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
                        now,
                        parsed.boxes_xyxy.tolist(),
                        parsed.scores.tolist(),
                        list(parsed.class_ids),
                        list(parsed.ids),
                        [h[1][0] if len(h) > 1 else "" for h in parsed.hypotheses],
                    ]
                )


def play(config: PlayerConfig) -> PlayerResult:
    """Publish the bag to a running container and record its outputs (see the module docstring).

    Raises:
        TimeoutError: the container's image subscription or an output publisher did not show up in time.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rosgraph_msgs.msg import Clock

    from multidnn_sched.evaluation.replay_bag import _with_stamp, load_raw_images

    msgtype, images, stamps, period_ns = load_raw_images(Path(config.bag), config.image_topic, config.max_frames)
    message_class = _message_class(msgtype)
    context = Context()
    rclpy.init(args=[], context=context, domain_id=config.domain_id)
    result = PlayerResult()
    executor = SingleThreadedExecutor(context=context)
    spin: threading.Thread | None = None
    try:
        node = Node("bag_player", context=context)
        recorder = _Recorder(node, list(config.output_topics), result)
        image_pub = node.create_publisher(
            message_class, config.image_topic, image_publisher_qos(config.reliable, config.depth)
        )
        clock_pub = node.create_publisher(Clock, "/clock", 10)
        executor.add_node(node)
        spin = threading.Thread(target=_spin, args=(executor,), name="player-spin", daemon=True)
        spin.start()
        begin = time.perf_counter()
        limit = begin + SUBSCRIBERS_TIMEOUT_SEC
        while not (
            image_pub.get_subscription_count() >= 1
            and all(s.get_publisher_count() >= 1 for s in recorder.subscriptions)
        ):
            if time.perf_counter() > limit:
                raise TimeoutError(
                    f"expected the container to subscribe to {config.image_topic} and publish "
                    f"{', '.join(config.output_topics)} within {SUBSCRIBERS_TIMEOUT_SEC:.0f} s; "
                    f"subscriptions {image_pub.get_subscription_count()}, publishers "
                    f"{[s.get_publisher_count() for s in recorder.subscriptions]}"
                )
            time.sleep(0.05)
        result.matched_sec = time.perf_counter() - begin
        time.sleep(SETTLE_SEC)
        span_ns = period_ns * len(images)
        start = time.perf_counter()
        result.start_sec = start
        deadline = start + config.soak_minutes * 60.0 if config.soak_minutes else None
        sent = 0
        loop = 0
        next_progress = start + 5.0
        while (loop < config.loops) if deadline is None else (time.perf_counter() < deadline):
            for index, data in enumerate(images):
                stamp = stamps[index] + loop * span_ns
                target = start + sent * config.period_sec
                while (now := time.perf_counter()) < target:
                    time.sleep(min(target - now, 0.005))
                sec, nanosec = divmod(stamp, 1_000_000_000)
                clock_pub.publish(Clock(clock=_time_msg(sec, nanosec)))
                result.published.append([stamp, time.perf_counter(), index])
                image_pub.publish(_with_stamp(data, stamp) if loop else data)
                sent += 1
                if config.progress and time.perf_counter() >= next_progress:
                    print(f"replay_player: {sent} images published", file=sys.stderr, flush=True)
                    next_progress += 5.0
                if deadline is not None and time.perf_counter() >= deadline:
                    break
            loop += 1
        result.loops = loop
        _drain(recorder, sent)
        result.wall_sec = time.perf_counter() - start
        recorder.parse()
    finally:
        if context.ok():
            rclpy.shutdown(context=context)  # wakes the spinning executor at once
        executor.shutdown(timeout_sec=2.0)
        if spin is not None:
            spin.join(timeout=2.0)
    return result


def _spin(executor: Any) -> None:
    from rclpy.executors import ExternalShutdownException

    try:
        executor.spin()
    except ExternalShutdownException:
        pass


def _time_msg(sec: int, nanosec: int) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=sec, nanosec=nanosec)


def _message_class(msgtype: str) -> Any:
    from sensor_msgs.msg import CompressedImage, Image

    return CompressedImage if msgtype == "sensor_msgs/msg/CompressedImage" else Image


def _drain(recorder: _Recorder, sent: int) -> None:
    limit = time.perf_counter() + DRAIN_TIMEOUT_SEC
    last = -1
    while time.perf_counter() < limit:
        counts = recorder.counts()
        if counts and min(counts) >= sent:
            return
        total = sum(counts)
        if total != last:
            last = total
            limit = max(limit, time.perf_counter() + 1.0)
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    """``python -m multidnn_sched.evaluation.replay_player CONFIG.json``: exit 0 with the result written,
    3 when the container never matched (the reason on stderr)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m multidnn_sched.evaluation.replay_player CONFIG.json", file=sys.stderr)
        return 2
    config = PlayerConfig(**json.loads(Path(args[0]).read_text()))
    try:
        result = play(config)
    except TimeoutError as error:
        print(f"replay_player: {error}", file=sys.stderr)
        return 3
    write_result(result, Path(config.result))
    return 0


if __name__ == "__main__":
    from multidnn_sched.ros.launcher import exit_after_teardown

    # Everything is torn down and written; skip the interpreter's finalization (rclpy's threads at exit
    # aborted with "terminate called without an active exception").
    exit_after_teardown(main())
