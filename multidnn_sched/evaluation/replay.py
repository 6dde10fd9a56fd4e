"""``multidnn-replay``: replay a scene bag through the perception container, per mode, and report.

For each mode (``baseline``, ``blocks``, ``blocks+swap``) a fresh rclpy context runs the container (detector,
tracker, classifier on one runtime) in this process, and a player process
(:mod:`~multidnn_sched.evaluation.replay_player`, like ``ros2 bag play``) publishes the bag's images
(``/camera/image_raw`` raw, or ``/camera/image_raw/compressed``) and ``/clock`` at the recorded rate (or
``--rate``), and records the outputs. Images go with reliable QoS after the container's subscription matched
(``--qos sensor``: REP-2003 best effort), so every image is delivered; the report accounts for each one
(received, lost in transport, bad, dropped by cause, processed), gives the per-stage latency breakdown
(:mod:`~multidnn_sched.evaluation.replay_breakdown`) and the container's CPU use. ``--player inprocess``
plays from a node inside the container's process instead (tests). Latency per model is measured at the
recorder, on one clock (``perf_counter``: ``CLOCK_MONOTONIC``, shared by the processes):

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
import os
import struct
import sys
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

# -------------------------------------------------------------------------------------------------- bag


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
    parser.add_argument(
        "--player",
        choices=("process", "inprocess"),
        default="process",
        help="play the bag from a separate process (default; the measured process is the container alone) "
        "or from a node inside the container's process",
    )
    parser.add_argument(
        "--qos",
        choices=("reliable", "sensor"),
        default="reliable",
        help="image QoS of the replay: reliable (default: every image delivered) or sensor (REP-2003 best effort)",
    )
    parser.add_argument("--image-depth", type=int, default=30, help="image QoS history depth (default 30)")
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
    if args.image_depth < 1:
        raise ConfigError(f"--image-depth: expected >= 1, got {args.image_depth}")
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
        player=args.player,
        reliable=args.qos == "reliable",
        image_depth=args.image_depth,
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
    from multidnn_sched.evaluation.replay_run import replay_mode

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
