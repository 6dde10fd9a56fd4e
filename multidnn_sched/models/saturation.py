"""Does the naive setup keep up? Detector, tracker (embedder + DeepSORT) and classifier, each in its own thread.

This mimics three ROS nodes in one process on a MultiThreadedExecutor: a camera thread offers frames at
``rate_hz``; each stage keeps only the newest input (a depth-1 "keep last" queue: an unread input that is
overwritten is dropped) and hands its output to the next stage. Every stage uses torch's default intra-op
threads, so the three compete for the cores. The report says, per stage, how many frames were offered /
processed / dropped and the latency from the camera stamp to the end of that stage.

Run: ``python -m multidnn_sched.models.saturation --frames 300 --rate-hz 15 [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from multidnn_sched.models.checkpoints import WEIGHTS_DIR
from multidnn_sched.models.zoo import DefaultModels, PerceptionPipeline, load_default_models
from multidnn_sched.scenes.generator import SceneConfig, SceneGenerator


@dataclass
class StageReport:
    """Throughput and latency of one stage.

    Attributes:
        name: ``detector``, ``tracker`` or ``classifier``.
        offered: inputs that reached the stage's queue.
        processed: inputs the stage ran on.
        dropped: inputs overwritten before the stage took them.
        compute_ms_p50: median time of the stage's own work per input.
        latency_ms_p50 / latency_ms_p99: camera stamp -> end of this stage.
    """

    name: str
    offered: int = 0
    processed: int = 0
    dropped: int = 0
    compute_ms_p50: float = 0.0
    latency_ms_p50: float = 0.0
    latency_ms_p99: float = 0.0
    compute_ms: list[float] = field(default_factory=list, repr=False)
    latency_ms: list[float] = field(default_factory=list, repr=False)

    def summarize(self) -> dict[str, Any]:
        if self.compute_ms:
            self.compute_ms_p50 = round(statistics.median(self.compute_ms), 1)
        if self.latency_ms:
            ordered = sorted(self.latency_ms)
            self.latency_ms_p50 = round(statistics.median(ordered), 1)
            self.latency_ms_p99 = round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1)
        data = asdict(self)
        data.pop("compute_ms")
        data.pop("latency_ms")
        return data


class _LatestSlot:
    """Depth-1 keep-last queue: ``put`` overwrites (counting a drop), ``get`` waits for a new item."""

    def __init__(self, report: StageReport) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._has_item = False
        self._closed = False
        self._report = report

    def put(self, item: Any) -> None:
        with self._cond:
            self._report.offered += 1
            if self._has_item:
                self._report.dropped += 1
            self._item, self._has_item = item, True
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self) -> Any | None:
        with self._cond:
            while not self._has_item and not self._closed:
                self._cond.wait()
            if not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item


@dataclass
class SaturationReport:
    """Result of one run.

    Attributes:
        frames_offered: frames the camera published.
        rate_hz: camera rate.
        stages: per-stage figures.
        keeps_up: every offered frame went through all three stages.
        wall_time_sec: duration of the run.
    """

    frames_offered: int
    rate_hz: float
    stages: dict[str, dict[str, Any]]
    keeps_up: bool
    wall_time_sec: float


def run_saturation(
    models: DefaultModels,
    images: list[np.ndarray],
    rate_hz: float = 15.0,
    clock: Callable[[], float] = time.perf_counter,
) -> SaturationReport:
    """Offer ``images`` at ``rate_hz`` to three stage threads and measure who keeps up.

    Args:
        models: the three networks (eval mode).
        images: pre-rendered ``uint8[H, W, 3]`` RGB frames (rendering is kept out of the measurement).
        rate_hz: camera rate.
        clock: time source.
    """
    pipeline = PerceptionPipeline(models)
    reports = {name: StageReport(name) for name in ("detector", "tracker", "classifier")}
    slots = {name: _LatestSlot(report) for name, report in reports.items()}

    def detector_stage() -> None:
        while (item := slots["detector"].get()) is not None:
            index, stamp = item
            start = clock()
            detections = pipeline.detect(images[index])
            _record(reports["detector"], start, stamp)
            slots["tracker"].put((index, stamp, detections))
        slots["tracker"].close()

    def tracker_stage() -> None:
        while (item := slots["tracker"].get()) is not None:
            index, stamp, det = item
            start = clock()
            inputs = pipeline.tracker_inputs(det)
            embeddings = pipeline.embed(images[index], inputs.boxes_xyxy)
            tracks = pipeline.tracker.update(inputs.boxes_xyxy, inputs.scores, inputs.labels, embeddings)
            _record(reports["tracker"], start, stamp)
            slots["classifier"].put((index, stamp, tracks))
        slots["classifier"].close()

    def classifier_stage() -> None:
        while (item := slots["classifier"].get()) is not None:
            index, stamp, tracks = item
            start = clock()
            boxes = np.array([t.box_xyxy for t in tracks], np.float32).reshape(-1, 4)
            pipeline.classify(images[index], boxes)
            _record(reports["classifier"], start, stamp)

    def _record(report: StageReport, start: float, stamp: float) -> None:
        end = clock()
        report.processed += 1
        report.compute_ms.append((end - start) * 1e3)
        report.latency_ms.append((end - stamp) * 1e3)

    threads = [
        threading.Thread(target=f, name=f.__name__, daemon=True)
        for f in (detector_stage, tracker_stage, classifier_stage)
    ]
    for thread in threads:
        thread.start()
    period = 1.0 / rate_hz
    t0 = clock()
    for index in range(len(images)):
        due = t0 + index * period
        delay = due - clock()
        if delay > 0:
            time.sleep(delay)
        slots["detector"].put((index, due))
    slots["detector"].close()
    for thread in threads:
        thread.join()
    wall = clock() - t0
    stages = {name: report.summarize() for name, report in reports.items()}
    keeps_up = all(r.processed == len(images) for r in reports.values())
    return SaturationReport(len(images), rate_hz, stages, keeps_up, round(wall, 2))


def main(argv: list[str] | None = None) -> int:
    """``python -m multidnn_sched.models.saturation``: print (and optionally write) the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rate-hz", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    models = load_default_models("cpu", args.weights)
    images = [f.image for f in SceneGenerator(SceneConfig(), args.seed).frames(args.frames)]
    report = run_saturation(models, images, args.rate_hz)
    text = json.dumps(asdict(report), indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
