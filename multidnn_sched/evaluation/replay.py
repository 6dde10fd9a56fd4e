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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from multidnn_sched.evaluation.replay_bag import (  # noqa: F401 - re-exported (tests, callers)
    COMPRESSED_SUFFIX,
    _read_stamp,
    _with_stamp,
    load_bag,
    load_raw_images,
    resolve_image_topic,
)
from multidnn_sched.evaluation.replay_records import (  # noqa: F401 - re-exported (tests, callers)
    MODES,
    STAGES,
    BagData,
    ModeRun,
    Output,
    ReplayOptions,
    Sample,
)
from multidnn_sched.evaluation.replay_run import (  # noqa: F401 - re-exported (tests, callers)
    PRIVATE_DOMAIN_BASE,
    make_runtime_factory,
    mode_parameters,
    private_domain_id,
    replay_mode,
)
from multidnn_sched.exceptions import BagError, CheckpointError, ConfigError

# -------------------------------------------------------------------------------------------------- bag


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
                        help="BlockExecutor worker threads (default 0: auto; see the container's workers parameter)")
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
    parser.add_argument(
        "--dds-profile",
        default=None,
        help="Fast DDS profile XML of the replay's processes (default: the package's 16 MiB shared-memory "
        "profile, so raw frames do not go over UDP loopback; 'none': the RMW's defaults; a "
        "FASTDDS_DEFAULT_PROFILES_FILE already set wins)",
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
        **({} if args.dds_profile is None else {"dds_profile": _dds_profile(args.dds_profile)}),
    )


def _dds_profile(text: str) -> Path | None:
    if text.lower() == "none":
        return None
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"--dds-profile: expected a Fast DDS profile XML file or 'none', {text} does not exist")
    return path


def run_replay(options: ReplayOptions, models: dict[str, Any] | None = None) -> Path:
    """Replay every mode and write the report; returns the report JSON's path.

    Args:
        options: what to replay and where to report.
        models: model name -> network (``nn.Module`` or ``PartitionedModel``); ``None``: the default zoo.
    """
    from multidnn_sched.evaluation.replay_report import write_report
    from multidnn_sched.ros.dds_profile import use_profile

    if options.mmap_threshold_bytes:
        pin_mmap_threshold(options.mmap_threshold_bytes)
    try:
        options.dds_transport = use_profile(options.dds_profile)
    except FileNotFoundError as error:
        raise ConfigError(f"replay: {error}") from error
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
