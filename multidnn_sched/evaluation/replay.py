"""``multidnn-replay``: replay a scene bag through the perception container in-process, per mode, and report.

For each mode (``baseline``, ``blocks``, ``blocks+swap``) a fresh rclpy context runs the container (detector,
tracker, classifier on one runtime), a player publishes the bag's images (``/camera/image_raw``, sensor-data
QoS) and ``/clock`` at the recorded rate (or ``--rate``), and a recorder subscribes to the outputs. Latency
per model is measured at the recorder, on one clock:

* ``p50_ms`` / ``p99_ms`` (stage): from the model's input being available (image published for the detector,
  detections received for the tracker, tracks received for the classifier) to its output being received.
* ``e2e_p50_ms`` / ``e2e_p99_ms``: from the image being published to that model's output being received.

Frames a model never answered are counted (``missing``) and are empty predictions for the accuracy.
Accuracy uses the bag's ground truth when present (detector mAP@0.5, tracker IDF1, classifier attribute
top-1 x coverage); without ground truth, agreement with the ``baseline`` mode's outputs, scored the same way.

``--loop N`` / ``--soak-minutes M`` replays the bag repeatedly (stamps shifted so time keeps increasing) and
records RSS every half second: the report gives its growth after the first loop and the message accounting.
"""

from __future__ import annotations

import argparse
import gc
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from multidnn_sched.evaluation.replay_records import (  # noqa: F401 - re-exported (tests, callers)
    MODES,
    STAGES,
    BagData,
    ModeRun,
    Output,
    ReplayOptions,
    Sample,
)
from multidnn_sched.exceptions import BagError, CheckpointError, ConfigError

SAMPLE_PERIOD_SEC = 0.5
"""Runtime status / RSS sampling period during a replay."""

DRAIN_TIMEOUT_SEC = 5.0
"""After the last image, wait at most this long for outstanding outputs."""

STARTUP_GRACE_SEC = 1.0
"""Discovery time between starting the container and the first image."""


# ------------------------------------------------------------------------------------------------ records


# -------------------------------------------------------------------------------------------------- bag


def load_bag(path: Path, image_topic: str, gt_topic: str, max_frames: int | None = None) -> BagData:
    """Read the images (serialized) and the ground truth of a bag.

    Raises:
        BagError: unreadable bag, or the image topic is missing (the message lists the topics the bag has).
    """
    from rclpy.serialization import deserialize_message
    from vision_msgs.msg import Detection2DArray

    from multidnn_sched.scenes.bag import bag_info, iter_raw_messages, msg_to_ground_truth

    info = bag_info(path)
    if image_topic not in info.topics:
        raise BagError(
            f"{path}: expected image topic {image_topic!r}, bag has: "
            f"{', '.join(sorted(info.topics)) or 'none'}"
        )
    images: list[bytes] = []
    stamps: list[int] = []
    for raw in iter_raw_messages(path, image_topic):
        if raw.msgtype != "sensor_msgs/msg/Image":
            raise BagError(
                f"{path}: expected {image_topic!r} of type sensor_msgs/msg/Image, got {raw.msgtype}"
            )
        images.append(raw.data)
        stamps.append(_read_stamp(raw.data))
        if max_frames is not None and len(images) >= max_frames:
            break
    if not images:
        raise BagError(f"{path}: topic {image_topic!r} has no messages")
    ground_truth = None
    if gt_topic in info.topics:
        by_stamp = {}
        for raw in iter_raw_messages(path, gt_topic):
            msg = deserialize_message(raw.data, Detection2DArray)
            by_stamp[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = msg_to_ground_truth(
                msg
            )
        ground_truth = [by_stamp.get(s, []) for s in stamps]
    period = int(np.median(np.diff(stamps))) if len(stamps) > 1 else 66_666_667
    if period <= 0:
        raise BagError(f"{path}: expected increasing image stamps, got a median spacing of {period} ns")
    return BagData(images, stamps, period, ground_truth)


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


# ---------------------------------------------------------------------------------------------- runtime


def build_models(random_weights: bool) -> dict[str, Any]:
    """The default networks (eval mode): shipped weights, or random ones for tests."""
    from multidnn_sched.models import zoo

    if random_weights:
        models = {
            "detector": zoo.build_detector(),
            "embedder": zoo.build_embedder(),
            "classifier": zoo.build_classifier(),
        }
        return {name: model.eval() for name, model in models.items()}
    return zoo.load_default_models().as_dict()


def make_runtime_factory(
    mode: str, models: dict[str, Any] | None, variants_manifest: Path | None
) -> Callable[[Any, Sequence[str]], Any]:
    """The container's runtime factory for ``mode`` (``baseline``: whole models in the callbacks)."""
    from multidnn_sched.ros.runtime import DirectRuntime

    def factory(values: Any, names: Sequence[str]) -> Any:
        if models is None:
            raise ConfigError("replay: expected the networks to replay (models) when no --params-file chooses them")
        chosen = {name: models[name] for name in names}
        if mode == "baseline":
            return DirectRuntime(chosen)
        from multidnn_sched.ros.shared_runtime import SharedRuntime
        from multidnn_sched.runtime.block import PartitionedModel
        from multidnn_sched.runtime.partition import partition_model

        parts = {
            name: model if isinstance(model, PartitionedModel) else partition_model(model, name)
            for name, model in chosen.items()
        }
        manifest = variants_manifest if mode == "blocks+swap" else None
        return SharedRuntime(parts, values, variants_manifest=manifest)

    return factory


def mode_parameters(mode: str, options: ReplayOptions, rate_hz: float | None = None) -> dict[str, Any]:
    """Container parameter values for ``mode`` (``blocks``: swaps off; ``baseline``: no shared executor).
    ``rate_hz``: the publish rate, handed to the container as ``expected_rate_hz`` (a camera driver's rate is
    known on a robot too)."""
    values: dict[str, Any] = {
        "baseline": mode == "baseline",
        "workers": options.workers,
        "diagnostics_period_sec": 1.0,
    }
    if rate_hz:
        values["expected_rate_hz"] = float(rate_hz)
    if mode == "blocks":
        values["policy.swap_enabled"] = False
    values.update(options.container_params)
    return values


PRIVATE_DOMAIN_BASE = 101
"""Replays run on a DDS domain of their own (101..200, from the process id) unless ``--domain-id`` is given:
several replays (or tests) on one machine must not see each other's images."""


def private_domain_id() -> int:
    """A DDS domain id for this process only (``PRIVATE_DOMAIN_BASE + pid % 100``)."""
    return PRIVATE_DOMAIN_BASE + os.getpid() % 100


def pin_mmap_threshold(threshold_bytes: int) -> None:
    """Pin glibc's ``M_MMAP_THRESHOLD``: allocations at least this large are mmapped and unmapped on free.

    glibc raises the threshold dynamically (up to 32 MiB) after freeing mmapped chunks; frame-sized buffers
    (0.9 MB images) then come from per-thread heap arenas and fragment them. No-op outside glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    m_mmap_threshold = -3
    ctypes.CDLL(name).mallopt(m_mmap_threshold, int(threshold_bytes))


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# ------------------------------------------------------------------------------------------------- replay


class _Recorder:
    """Subscribes to the outputs and keeps them with their receive time."""

    def __init__(self, node: Any, run: ModeRun) -> None:
        from vision_msgs.msg import Detection2DArray

        self._run = run
        self._lock = threading.Lock()
        for _, _, topic in STAGES:
            run.outputs[topic] = []
            node.create_subscription(Detection2DArray, topic, self._callback(topic), 100)

    def _callback(self, topic: str) -> Callable[[Any], None]:
        from multidnn_sched.ros.conversions import msg_to_detections

        def on_msg(msg: Any) -> None:
            now = time.perf_counter()
            parsed = msg_to_detections(msg)
            attributes = [h[1][0] if len(h) > 1 else "" for h in parsed.hypotheses]
            record = Output(
                msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
                now,
                parsed.boxes_xyxy,
                parsed.scores,
                parsed.class_ids,
                parsed.ids,
                attributes,
            )
            with self._lock:
                self._run.outputs[topic].append(record)

        return on_msg

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self._run.outputs[topic])


def replay_mode(mode: str, bag: BagData, options: ReplayOptions, models: dict[str, Any] | None) -> ModeRun:
    """Run the container in ``mode`` on a fresh rclpy context and replay the bag through it."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from tqdm import tqdm

    from multidnn_sched.ros.container import PerceptionContainer, SpinThread

    run = ModeRun(mode)
    context = Context()
    ros_args = ["--ros-args", "-r", f"image:={options.image_topic}"]
    if options.params_file is not None:
        ros_args += ["--params-file", str(options.params_file)]
    rclpy.init(
        args=ros_args,
        context=context,
        domain_id=options.domain_id if options.domain_id is not None else private_domain_id(),
    )
    container = None
    spinner = None
    try:
        overrides = {
            "perception_container": [
                Parameter(k, value=v)
                for k, v in mode_parameters(mode, options, options.rate_hz or bag.rate_hz).items()
            ]
        }
        for node in ("detector", "tracker", "classifier"):
            extra = options.node_params.get(node, {})
            overrides[node] = [Parameter("use_sim_time", value=True)] + [
                Parameter(name, value=value) for name, value in extra.items()
            ]
        if options.params_file is not None:  # the nodes' `model` parameters choose; the registry loads
            from multidnn_sched.ros.container import default_runtime_factory

            factory = default_runtime_factory
            if mode == "blocks+swap" and options.variants_manifest is not None:
                overrides["perception_container"].append(
                    Parameter("variants_manifest", value=str(options.variants_manifest))
                )
        else:
            factory = make_runtime_factory(mode, models, options.variants_manifest)
        container = PerceptionContainer(context=context, runtime_factory=factory, parameter_overrides=overrides)
        player = Node("bag_player", context=context)
        recorder = _Recorder(player, run)
        image_pub = player.create_publisher(Image, options.image_topic, qos_profile_sensor_data)
        clock_pub = player.create_publisher(Clock, "/clock", 10)
        spinner = SpinThread([*container.all_nodes, player], context).start()
        time.sleep(STARTUP_GRACE_SEC)

        period_sec = 1.0 / options.rate_hz if options.rate_hz else bag.period_ns / 1e9
        span_ns = bag.period_ns * len(bag.images)
        deadline = time.perf_counter() + options.soak_minutes * 60.0 if options.soak_minutes else None
        total = None if deadline is not None else len(bag.images) * options.loops
        bar = tqdm(
            total=total, desc=f"replay {mode}", unit="frame", disable=not options.progress, leave=False
        )
        start = time.perf_counter()
        run.start_sec = start
        next_sample = start
        sent = 0
        loop = 0
        while True:
            if deadline is None and loop >= options.loops:
                break
            if deadline is not None and time.perf_counter() >= deadline:
                break
            for index, data in enumerate(bag.images):
                stamp = bag.stamps_ns[index] + loop * span_ns
                target = start + sent * period_sec
                while True:
                    now = time.perf_counter()
                    if now >= next_sample:
                        _sample(run, container, now - start)
                        next_sample += SAMPLE_PERIOD_SEC
                    if now >= target:
                        break
                    time.sleep(min(target - now, 0.01))
                sec, nanosec = divmod(stamp, 1_000_000_000)
                clock_pub.publish(Clock(clock=_time_msg(sec, nanosec)))
                run.published[stamp] = time.perf_counter()
                run.frame_of_stamp[stamp] = index
                image_pub.publish(_with_stamp(data, stamp) if loop else data)
                sent += 1
                bar.update(1)
                if deadline is not None and time.perf_counter() >= deadline:
                    break
            loop += 1
        bar.close()
        run.loops = loop
        _drain(recorder, sent, run, container, start)
        run.wall_sec = time.perf_counter() - start
        _sample(run, container, run.wall_sec)
        for name, node in container.nodes.items():
            snap = node.stats.snapshot()
            run.node_counters[name] = {
                "received": snap.received,
                "processed": snap.processed,
                "dropped": snap.dropped,
                "drop_causes": snap.drop_causes,
                "bad_inputs": snap.bad_inputs,
            }
        status = container.runtime.status()
        run.runtime_dropped = dict(status.dropped)
        run.decisions = [(d.time_sec - start, d.model, d.block, d.action, d.reason) for d in status.decisions]
    finally:
        if spinner is not None:
            spinner.stop(timeout_sec=5.0)
        if container is not None:
            container.destroy()
        if context.ok():
            rclpy.shutdown(context=context)
        gc.collect()
    return run


def _time_msg(sec: int, nanosec: int) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=sec, nanosec=nanosec)


def _sample(run: ModeRun, container: Any, time_sec: float) -> None:
    status = container.runtime.status()
    blocks = {f"{b.model}/{b.block}": (b.lag_ms, b.mode, b.variant) for b in status.blocks}
    run.samples.append(Sample(time_sec, _rss_mb(), blocks))


def _drain(recorder: _Recorder, sent: int, run: ModeRun, container: Any, start: float) -> None:
    """Wait until every stage answered every frame, or outputs stop coming for a while."""
    limit = time.perf_counter() + DRAIN_TIMEOUT_SEC
    last = -1
    while time.perf_counter() < limit:
        counts = [recorder.count(topic) for _, _, topic in STAGES if topic in run.outputs]
        if counts and min(counts) >= sent:
            return
        total = sum(counts)
        if total != last:
            last = total
            limit = max(limit, time.perf_counter() + 1.0)
        time.sleep(0.1)
    del container, start


# --------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multidnn-replay",
        description="Replay a scene bag through the perception container per mode and write a report "
        "(JSON, Markdown, PNG plots).",
    )
    parser.add_argument("bag", type=Path, help="rosbag2 directory or file (from multidnn-scenes)")
    parser.add_argument(
        "--mode",
        default="baseline,blocks+swap",
        help=f"comma-separated modes from {', '.join(MODES)} (default baseline,blocks+swap)",
    )
    parser.add_argument("--report", type=Path, default=Path("runs/replay"), help="report directory")
    parser.add_argument("--rate", type=float, default=None, help="publish rate in Hz (default: as recorded)")
    parser.add_argument("--loop", type=int, default=1, help="play the bag N times (soak; default 1)")
    parser.add_argument("--soak-minutes", type=float, default=None, help="play the bag repeatedly this long")
    parser.add_argument("--frames", type=int, default=None, help="use only the first N images")
    parser.add_argument("--image-topic", default="/camera/image_raw", help="image topic in the bag")
    parser.add_argument(
        "--gt-topic", default="/ground_truth/detections", help="ground-truth topic in the bag"
    )
    parser.add_argument(
        "--variants",
        type=Path,
        default=None,
        help="compression_tools manifest.json whose variants blocks+swap may use",
    )
    parser.add_argument("--workers", type=int, default=0,
                        help="BlockExecutor worker threads (default 0: auto, 1 on CPU, one per model on CUDA)")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="random network weights (smoke tests; accuracy meaningless)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra parameter: container 'policy.swap_enabled=false' or node 'detector:score_threshold=0.4' "
        "(repeatable)",
    )
    parser.add_argument(
        "--domain-id",
        type=int,
        default=None,
        help="DDS domain (default: a private one from the process id; ROS_DOMAIN_ID is ignored)",
    )
    parser.add_argument(
        "--mmap-threshold-bytes",
        type=int,
        default=0,
        help="pin glibc's M_MMAP_THRESHOLD (e.g. 131072) so frame-sized buffers are unmapped on "
        "free (soak memory); 0: glibc default",
    )
    parser.add_argument(
        "--params-file",
        type=Path,
        default=None,
        help="ROS params file for the container and its nodes (e.g. the nodes' model / weights / input size)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_options(argv: Sequence[str] | None = None) -> ReplayOptions:
    """Parse and check the command line.

    Raises:
        ConfigError: an unknown mode, a non-positive rate / loop count, a malformed ``--set``.
    """
    args = build_parser().parse_args(argv)
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ConfigError(f"--mode: expected a comma-separated subset of {list(MODES)}, got {args.mode!r}")
    if args.rate is not None and args.rate <= 0:
        raise ConfigError(f"--rate: expected a positive rate in Hz, got {args.rate}")
    if args.loop < 1:
        raise ConfigError(f"--loop: expected >= 1, got {args.loop}")
    if args.params_file is not None and not args.params_file.is_file():
        raise ConfigError(f"--params-file: expected a ROS params YAML file, {args.params_file} does not exist")
    if args.soak_minutes is not None and args.soak_minutes <= 0:
        raise ConfigError(f"--soak-minutes: expected > 0, got {args.soak_minutes}")
    extra: dict[str, Any] = {}
    node_params: dict[str, dict[str, Any]] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set: expected NAME=VALUE or NODE:NAME=VALUE, got {item!r}")
        node, colon, param = name.strip().partition(":")
        if colon:
            if node not in ("detector", "tracker", "classifier") or not param:
                raise ConfigError(f"--set: expected NODE in detector, tracker, classifier in {item!r}")
            node_params.setdefault(node, {})[param] = _parse_value(value.strip())
        else:
            extra[name.strip()] = _parse_value(value.strip())
    return ReplayOptions(
        bag=args.bag,
        modes=modes,
        report_dir=args.report,
        rate_hz=args.rate,
        loops=args.loop,
        soak_minutes=args.soak_minutes,
        max_frames=args.frames,
        image_topic=args.image_topic,
        gt_topic=args.gt_topic,
        random_weights=args.random_weights,
        variants_manifest=args.variants,
        workers=args.workers,
        progress=not args.no_progress,
        container_params=extra,
        node_params=node_params,
        domain_id=args.domain_id,
        mmap_threshold_bytes=args.mmap_threshold_bytes,
        params_file=args.params_file,
    )


def run_replay(options: ReplayOptions, models: dict[str, Any] | None = None) -> Path:
    """Replay every mode and write the report; returns the report JSON's path.

    Args:
        options: what to replay and where to report.
        models: model name -> network (``nn.Module`` or ``PartitionedModel``); ``None``: the default zoo.
    """
    from multidnn_sched.evaluation.replay_report import write_report

    if options.mmap_threshold_bytes:
        pin_mmap_threshold(options.mmap_threshold_bytes)
    bag = load_bag(options.bag, options.image_topic, options.gt_topic, options.max_frames)
    if models is None and options.params_file is None:
        models = build_models(options.random_weights)
    runs = [replay_mode(mode, bag, options, models) for mode in options.modes]
    return write_report(runs, bag, options)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``multidnn-replay``; prints the report JSON's path as the last line."""
    try:
        options = parse_options(argv)
        path = run_replay(options)
    except (BagError, ConfigError, CheckpointError) as error:
        print(f"multidnn-replay: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("multidnn-replay: interrupted", file=sys.stderr)
        return 130
    import json

    from multidnn_sched.evaluation.replay_report import comparison_table

    print(comparison_table(json.loads(path.read_text())))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
