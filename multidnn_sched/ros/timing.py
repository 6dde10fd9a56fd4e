"""Per-frame timestamps of a perception node and the per-stage latency breakdown they give. No rclpy here.

A node stamps each frame on one clock (:func:`time.perf_counter`, milliseconds), at consecutive points:

``received`` (the node has everything the frame needs: the image for the detector; the image and its
detections / tracks for the tracker / classifier) -> ``preprocessed`` (decoded, converted, resized, cropped)
-> ``started`` (the runtime began its first block) -> ``finished`` (its last block ended) -> ``postprocessed``
(back on the node's thread, outputs built) -> ``published``.

The stages are the differences of consecutive points, so they add up to the node latency
(``published - received``) exactly, frame by frame, and their means add up to the mean latency:

* ``decode``: decoding (the container decodes an image once for all its nodes), conversion, resize, crops.
* ``queue``: the runtime's pending queue and ready heap.
* ``model``: the model's blocks (including waits between blocks for more urgent jobs).
* ``postprocess``: the hand-back to the node's thread and the post-processing.
* ``publish``: the ``publish()`` call (serialization into DDS).

``transport`` is measured apart: the image's header stamp to the image callback, on the node's ROS clock
(meaningful when the camera driver stamps with the same clock; under ``use_sim_time`` it is the delay
after ``/clock``). The replay measures it instead from the player's publish time, on the shared monotonic clock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

NODE_STAGES: tuple[str, ...] = ("decode", "queue", "model", "postprocess", "publish")
"""Stages between ``received`` and ``published`` (they sum to the node latency)."""

BREAKDOWN_STAGES: tuple[str, ...] = ("transport", *NODE_STAGES)
"""Every stage of the breakdown, in order."""

TIMING_WINDOW_SIZE = 512
"""Frames kept for the /diagnostics percentiles (about 30 s at 15 Hz)."""

TIMING_LOG_SIZE = 65536
"""Frames kept for a replay report (an hour at 15 Hz)."""


def now_ms() -> float:
    """Monotonic clock in milliseconds (``perf_counter``: the clock of every node-side timestamp)."""
    return time.perf_counter() * 1000.0


@dataclass(frozen=True)
class FrameTiming:
    """The timestamps (ms, ``perf_counter`` clock) of one frame through one node.

    Attributes:
        stamp_ns: the image's header stamp.
        received_ms: the node has everything the frame needs.
        preprocessed_ms: model input ready (submitted to the runtime).
        started_ms: the runtime started the first block.
        finished_ms: the runtime finished the last block.
        postprocessed_ms: outputs built on the node's thread.
        published_ms: ``publish()`` returned.
        transport_ms: the image's header stamp to its callback (node ROS clock); ``None`` if unknown.
        image_received_ms: when the image callback ran (the replay's transport ends there).
    """

    stamp_ns: int
    received_ms: float
    preprocessed_ms: float
    started_ms: float
    finished_ms: float
    postprocessed_ms: float
    published_ms: float
    transport_ms: float | None = None
    image_received_ms: float | None = None

    @property
    def latency_ms(self) -> float:
        return self.published_ms - self.received_ms

    def stages_ms(self) -> dict[str, float]:
        """The :data:`NODE_STAGES` durations; they sum to :attr:`latency_ms`."""
        points = (
            self.received_ms,
            self.preprocessed_ms,
            self.started_ms,
            self.finished_ms,
            self.postprocessed_ms,
            self.published_ms,
        )
        return {stage: points[i + 1] - points[i] for i, stage in enumerate(NODE_STAGES)}


def clamp_runtime_times(
    preprocessed_ms: float, started_ms: float | None, finished_ms: float | None, handed_back_ms: float
) -> tuple[float, float]:
    """(started, finished) kept monotonic between submission and the hand-back; without runtime times (a
    runtime that attaches none) the whole wait counts as model time."""
    if started_ms is None or finished_ms is None:
        return preprocessed_ms, handed_back_ms
    started = min(max(started_ms, preprocessed_ms), handed_back_ms)
    return started, min(max(finished_ms, started), handed_back_ms)


@dataclass
class StageSummary:
    """p50 / p99 / mean of one stage over the window (ms)."""

    p50_ms: float
    p99_ms: float
    mean_ms: float


def summarize(values: list[float]) -> StageSummary | None:
    if not values:
        return None
    array = np.asarray(values, np.float64)
    return StageSummary(float(np.percentile(array, 50)), float(np.percentile(array, 99)), float(array.mean()))


class TimingLog:
    """The recent :class:`FrameTiming` s of one node (thread-safe): a window for /diagnostics, a longer log
    for the replay report."""

    def __init__(self, window: int = TIMING_WINDOW_SIZE, log: int = TIMING_LOG_SIZE) -> None:
        self._window: deque[FrameTiming] = deque(maxlen=window)
        self._log: deque[FrameTiming] = deque(maxlen=log)
        self._lock = threading.Lock()

    def add(self, timing: FrameTiming) -> None:
        with self._lock:
            self._window.append(timing)
            self._log.append(timing)

    def records(self) -> list[FrameTiming]:
        with self._lock:
            return list(self._log)

    def breakdown(self) -> dict[str, StageSummary]:
        """Per stage (:data:`BREAKDOWN_STAGES` that have samples, plus ``latency``) over the window."""
        with self._lock:
            window = list(self._window)
        columns: dict[str, list[float]] = {stage: [] for stage in BREAKDOWN_STAGES}
        columns["latency"] = []
        for timing in window:
            for stage, value in timing.stages_ms().items():
                columns[stage].append(value)
            if timing.transport_ms is not None:
                columns["transport"].append(timing.transport_ms)
            columns["latency"].append(timing.latency_ms)
        return {name: s for name, values in columns.items() if (s := summarize(values)) is not None}


class CpuMeter:
    """The process's CPU use between two reads, in percent of one core (``time.process_time`` deltas:
    every thread of the process, user + system)."""

    def __init__(self) -> None:
        self._last = (time.perf_counter(), time.process_time())
        self._lock = threading.Lock()

    def read_percent(self) -> float:
        with self._lock:
            wall, cpu = time.perf_counter(), time.process_time()
            last_wall, last_cpu = self._last
            self._last = (wall, cpu)
        return 100.0 * (cpu - last_cpu) / max(wall - last_wall, 1e-9)
