"""Records of a replay (options, the bag's content, one mode's outputs and samples), shared by the replay
driver and its report writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MODES: tuple[str, ...] = ("baseline", "blocks", "blocks+swap")


STAGES: tuple[tuple[str, str, str], ...] = (
    ("detector", "detector", "detections"),
    ("tracker", "embedder", "tracks"),
    ("classifier", "classifier", "classified"),
)
"""(node, runtime model, output topic), in pipeline order."""


@dataclass
class BagData:
    """What the replay needs from a bag.

    Attributes:
        images: serialized ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` (CDR) in log order.
        stamps_ns: header stamp of each image.
        period_ns: median spacing of the stamps (the recorded rate).
        ground_truth: per image, its objects (``None``: the bag has no ground-truth topic).
        msgtype: the images' message type.
        topic: the images' topic in the bag (``.../compressed`` for compressed images).
    """

    images: list[bytes]
    stamps_ns: list[int]
    period_ns: int
    ground_truth: list[list[Any]] | None
    msgtype: str = "sensor_msgs/msg/Image"
    topic: str = "/camera/image_raw"

    @property
    def compressed(self) -> bool:
        return self.msgtype == "sensor_msgs/msg/CompressedImage"

    @property
    def rate_hz(self) -> float | None:
        """The recorded frame rate (``None`` for a single image)."""
        return 1e9 / self.period_ns if self.period_ns > 0 else None


@dataclass
class Output:
    """One received output message, reduced to arrays."""

    stamp_ns: int
    receive_sec: float
    boxes_xyxy: np.ndarray
    scores: np.ndarray
    class_ids: list[str]
    ids: list[str]
    attributes: list[str]


@dataclass
class Sample:
    """Runtime state at one time during a replay.

    Attributes:
        time_sec: seconds since the first image.
        rss_mb: resident set size of this process.
        blocks: ``(model, block) -> (lag_ms, mode, variant)``.
    """

    time_sec: float
    rss_mb: float
    blocks: dict[str, tuple[float | None, str, str]]


@dataclass
class ModeRun:
    """Everything recorded while replaying one mode.

    Attributes:
        mode: the mode name.
        published: ``stamp_ns -> publish time`` (perf_counter seconds) of every image sent.
        frame_of_stamp: ``stamp_ns -> index into BagData`` (repeats when looping).
        outputs: output topic -> received outputs.
        samples: runtime state over time.
        decisions: ``(time_sec since first image, model, block, action, reason)``.
        node_counters: final per-node counters (received, processed, dropped, bad inputs).
        runtime_dropped: frames dropped by the runtime's queues, per model.
        wall_sec: replay duration.
        start_sec: perf_counter time of the first image.
        loops: how many times the bag was played.
        timings: node -> its per-frame timestamps (:class:`~multidnn_sched.ros.timing.FrameTiming`).
        image_input: the container's image input counters (``received``, ``decoded``, ``bad``).
        cpu: the container process's CPU use while playing (``cpu_percent``, ``cpu_sec``, ``wall_sec``) and
            the player process's (``player_cpu_sec``; ``None`` in-process).
        player: ``process`` (a separate player process) or ``inprocess``.
    """

    mode: str
    published: dict[int, float] = field(default_factory=dict)
    frame_of_stamp: dict[int, int] = field(default_factory=dict)
    outputs: dict[str, list[Output]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    decisions: list[tuple[float, str, str, str, str]] = field(default_factory=list)
    node_counters: dict[str, dict[str, Any]] = field(default_factory=dict)
    runtime_dropped: dict[str, int] = field(default_factory=dict)
    wall_sec: float = 0.0
    start_sec: float = 0.0
    loops: int = 1
    timings: dict[str, list[Any]] = field(default_factory=dict)
    image_input: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float | None] = field(default_factory=dict)
    player: str = "process"


@dataclass
class ReplayOptions:
    """Command-line options.

    Attributes:
        bag: bag directory or file.
        modes: modes to run, in order.
        report_dir: where the report goes.
        rate_hz: publish rate (``None``: the recorded rate).
        loops: times to play the bag (soak).
        soak_minutes: play the bag repeatedly for this long (overrides ``loops``).
        max_frames: use only the first N images.
        image_topic: image topic in the bag (and published).
        gt_topic: ground-truth topic in the bag.
        random_weights: build the default networks with random weights (tests; no accuracy meaning).
        variants_manifest: ``compression_tools`` manifest whose variants ``blocks+swap`` may swap in.
        workers: BlockExecutor workers (0: auto).
        progress: show a progress bar.
        container_params: extra container parameter values (name -> value).
        node_params: extra perception-node parameter values (node -> name -> value).
        domain_id: DDS domain of the replay (``None``: :func:`private_domain_id`).
        mmap_threshold_bytes: glibc ``M_MMAP_THRESHOLD`` to pin (0: leave glibc's dynamic threshold).
        params_file: a ROS params file for the container and its nodes (``--params-file``); its nodes'
            ``model`` parameters choose the networks (loaded from the registry instead of ``models``).
        player: ``process`` (default: the bag is played from a separate process, like ``ros2 bag play``) or
            ``inprocess`` (player and recorder in the container's process: tests, old behaviour).
        reliable: reliable image QoS for the replay (default: every image delivered); ``False``: REP-2003
            sensor data (best effort), as most camera drivers publish.
        image_depth: image QoS history depth of the player and the container during the replay.
        dds_profile: Fast DDS profile for the replay's processes (default: the package's 16 MiB shared-memory
            profile, :data:`~multidnn_sched.ros.dds_profile.FASTDDS_LARGE_SHM_PROFILE`; ``None``: the RMW's
            defaults). A ``FASTDDS_DEFAULT_PROFILES_FILE`` already set wins.
        dds_transport: what the run used (set by the replay, for the report).
    """

    bag: Path
    modes: list[str]
    report_dir: Path
    rate_hz: float | None = None
    loops: int = 1
    soak_minutes: float | None = None
    max_frames: int | None = None
    image_topic: str = "/camera/image_raw"
    gt_topic: str = "/ground_truth/detections"
    random_weights: bool = False
    variants_manifest: Path | None = None
    workers: int = 0
    progress: bool = True
    container_params: dict[str, Any] = field(default_factory=dict)
    node_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    domain_id: int | None = None
    mmap_threshold_bytes: int = 0
    params_file: Path | None = None
    player: str = "process"
    reliable: bool = True
    image_depth: int = 30
    dds_profile: Path | None = field(default_factory=lambda: _default_dds_profile())
    dds_transport: str = ""


def _default_dds_profile() -> Path:
    from multidnn_sched.ros.dds_profile import FASTDDS_LARGE_SHM_PROFILE

    return FASTDDS_LARGE_SHM_PROFILE
