"""One mode of a replay: the container in this process, the bag played from a separate player process (or,
``player="inprocess"``, from a node in this process), runtime samples, node counters and per-frame timings.

The player (:mod:`multidnn_sched.evaluation.replay_player`) publishes with reliable QoS by default and waits
for the container's subscription, so every image reaches the container: ``lost in transport`` is a fact to
report, not noise. The container's CPU use is measured over the playing window (``time.process_time``
deltas of this process: the container and the sampler, no player, no recorder).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from multidnn_sched.evaluation.replay_player import (
    DRAIN_TIMEOUT_SEC,
    SETTLE_SEC,
    SUBSCRIBERS_TIMEOUT_SEC,
    PlayerConfig,
    PlayerResult,
    image_publisher_qos,
    read_result,
)
from multidnn_sched.evaluation.replay_records import STAGES, BagData, ModeRun, Output, ReplayOptions, Sample
from multidnn_sched.exceptions import ConfigError

SAMPLE_PERIOD_SEC = 0.5
"""Runtime status / RSS / CPU sampling period during a replay."""

PLAYER_EXTRA_SEC = 90.0
"""The player process may run this much longer than the bag's playing time (start-up, matching, drain)."""

PLAYERS: tuple[str, ...] = ("process", "inprocess")


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


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def evaluation_node_params(bag: BagData, options: ReplayOptions) -> dict[str, Any]:
    """Image-input parameters every node gets during a replay (before the user's ``--set``)."""
    return {
        "use_sim_time": True,
        "image_transport": "compressed" if bag.compressed else "raw",
        "image_reliability": "reliable" if options.reliable else "best_effort",
        "image_depth": int(options.image_depth),
    }


def base_image_topic(bag: BagData) -> str:
    """The topic the container's ``image`` is remapped to (without ``/compressed``)."""
    return bag.topic[: -len("/compressed")] if bag.compressed else bag.topic


def replay_mode(mode: str, bag: BagData, options: ReplayOptions, models: dict[str, Any] | None) -> ModeRun:
    """Run the container in ``mode`` on a fresh rclpy context and replay the bag through it."""
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from multidnn_sched.ros.container import PerceptionContainer, SpinThread

    if options.player not in PLAYERS:
        raise ConfigError(f"replay player: expected one of {PLAYERS}, got {options.player!r}")
    run = ModeRun(mode, player=options.player)
    context = Context()
    ros_args = ["--ros-args", "-r", f"image:={base_image_topic(bag)}"]
    if options.params_file is not None:
        ros_args += ["--params-file", str(options.params_file)]
    domain_id = options.domain_id if options.domain_id is not None else private_domain_id()
    rclpy.init(args=ros_args, context=context, domain_id=domain_id)
    container = None
    spinner = None
    try:
        overrides = {
            "perception_container": [
                Parameter(k, value=v)
                for k, v in mode_parameters(mode, options, options.rate_hz or bag.rate_hz).items()
            ]
            + [Parameter("use_sim_time", value=True)]  # its shared image input stamps transport on sim time
        }
        for node in ("detector", "tracker", "classifier"):
            values = {**evaluation_node_params(bag, options), **options.node_params.get(node, {})}
            overrides[node] = [Parameter(name, value=value) for name, value in values.items()]
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
        extra_nodes = []
        player = None
        if options.player == "inprocess":
            player = _InProcessPlayer(context, bag, options, run)
            extra_nodes.append(player.node)
        spinner = SpinThread([*container.all_nodes, *extra_nodes], context, container.spin_threads).start()
        if player is not None:
            player.play(lambda: _sample(run, container))
        else:
            _play_from_process(bag, options, domain_id, run, lambda: _sample(run, container))
        for sample in run.samples:
            sample.time_sec -= run.start_sec
        _collect(run, container)
    finally:
        if spinner is not None:
            spinner.stop(timeout_sec=5.0)
        if container is not None:
            container.destroy()
        if context.ok():
            rclpy.shutdown(context=context)
        gc.collect()
    return run


def _sample(run: ModeRun, container: Any) -> None:
    """One runtime / RSS / CPU sample (absolute ``perf_counter`` time; rebased to the first image later)."""
    now = time.perf_counter()
    status = container.runtime.status()
    blocks = {f"{b.model}/{b.block}": (b.lag_ms, b.mode, b.variant) for b in status.blocks}
    run.samples.append(Sample(now, _rss_mb(), blocks))
    run.cpu.setdefault("_samples", [])  # type: ignore[arg-type]
    run.cpu["_samples"].append((now, time.process_time()))  # type: ignore[union-attr]


def _cpu_over(run: ModeRun, start: float, end: float) -> dict[str, float | None]:
    """The container process's CPU use between the samples nearest ``start`` and ``end``."""
    samples: list[tuple[float, float]] = run.cpu.pop("_samples", None) or []  # type: ignore[assignment]
    inside = [s for s in samples if start - SAMPLE_PERIOD_SEC <= s[0] <= end + SAMPLE_PERIOD_SEC]
    if len(inside) < 2:
        return {"cpu_percent": None, "cpu_sec": None, "wall_sec": None}
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return {"cpu_percent": 100.0 * (c1 - c0) / max(t1 - t0, 1e-9), "cpu_sec": c1 - c0, "wall_sec": t1 - t0}


def _collect(run: ModeRun, container: Any) -> None:
    for name, node in container.nodes.items():
        snap = node.stats.snapshot()
        run.node_counters[name] = {
            "received": snap.received,
            "processed": snap.processed,
            "dropped": snap.dropped,
            "drop_causes": snap.drop_causes,
            "bad_inputs": snap.bad_inputs,
            "input": "images" if node.counts_images else ("detections" if name == "tracker" else "tracks"),
        }
        run.timings[name] = node.stats.timing.records()
    inputs = [container.image_input] if container.image_input is not None else [
        n.image_input for n in container.nodes.values() if n.image_input is not None
    ]
    if inputs:
        run.image_input = inputs[0].counts()
    status = container.runtime.status()
    run.runtime_dropped = dict(status.dropped)
    run.decisions = [(d.time_sec - run.start_sec, d.model, d.block, d.action, d.reason) for d in status.decisions]


# ------------------------------------------------------------------------------------------ player process


def _play_from_process(
    bag: BagData, options: ReplayOptions, domain_id: int, run: ModeRun, sample: Callable[[], None]
) -> None:
    """Start the player process, sample the container while it plays, read its recording into ``run``."""
    period_sec = 1.0 / options.rate_hz if options.rate_hz else bag.period_ns / 1e9
    playing_sec = options.soak_minutes * 60.0 if options.soak_minutes else period_sec * len(bag.images) * options.loops
    with tempfile.TemporaryDirectory(prefix="multidnn-replay-") as tmp:
        config = PlayerConfig(
            bag=str(options.bag),
            image_topic=bag.topic,
            gt_topic=options.gt_topic,
            max_frames=options.max_frames,
            period_sec=period_sec,
            loops=options.loops,
            soak_minutes=options.soak_minutes,
            domain_id=domain_id,
            reliable=options.reliable,
            depth=options.image_depth,
            output_topics=[topic for _, _, topic in STAGES],
            result=str(Path(tmp) / "result.json"),
            progress=options.progress,
        )
        config_path = Path(tmp) / "player.json"
        config_path.write_text(json.dumps(asdict(config)))
        package_root = str(Path(__file__).resolve().parents[2])  # this checkout's package comes first
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(
            [sys.executable, "-m", "multidnn_sched.evaluation.replay_player", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        stderr_lines: list[str] = []

        def read_stderr() -> None:
            for line in proc.stderr:  # type: ignore[union-attr]
                stderr_lines.append(line)
                if options.progress:
                    sys.stderr.write(line)

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        limit = time.perf_counter() + playing_sec + SUBSCRIBERS_TIMEOUT_SEC + PLAYER_EXTRA_SEC
        next_sample = time.perf_counter()
        try:
            while proc.poll() is None:
                if time.perf_counter() >= limit:
                    raise ConfigError(f"replay player: still running after {limit:.0f} s; stopped")
                if time.perf_counter() >= next_sample:
                    sample()
                    next_sample += SAMPLE_PERIOD_SEC
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            reader.join(timeout=2.0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise ConfigError(
                f"replay player exited with status {proc.returncode}: {''.join(stderr_lines).strip()[-2000:]}"
            )
        result = read_result(Path(config.result))
    _fill(run, result)
    run.cpu.update(_cpu_over(run, run.start_sec, run.start_sec + run.wall_sec))
    run.cpu["player_cpu_sec"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def _fill(run: ModeRun, result: PlayerResult) -> None:
    for stamp, published, index in result.published:
        run.published[int(stamp)] = float(published)
        run.frame_of_stamp[int(stamp)] = int(index)
    for topic, records in result.outputs.items():
        run.outputs[topic] = [
            Output(int(s), float(t), _boxes(b), _floats(sc), list(c), list(i), list(a))
            for s, t, b, sc, c, i, a in records
        ]
    run.start_sec, run.wall_sec, run.loops = result.start_sec, result.wall_sec, result.loops


def _boxes(values: list[list[float]]) -> Any:
    import numpy as np

    return np.asarray(values, np.float32).reshape(-1, 4)


def _floats(values: list[float]) -> Any:
    import numpy as np

    return np.asarray(values, np.float32)


# -------------------------------------------------------------------------------------- in-process player


class _InProcessPlayer:
    """Player and recorder as a node in the container's process (``player="inprocess"``: tests)."""

    def __init__(self, context: Any, bag: BagData, options: ReplayOptions, run: ModeRun) -> None:
        from rclpy.node import Node
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CompressedImage, Image
        from vision_msgs.msg import Detection2DArray

        self.bag, self.options, self.run = bag, options, run
        self.node = Node("bag_player", context=context)
        self._lock = threading.Lock()
        self.subscriptions = []
        for _, _, topic in STAGES:
            run.outputs[topic] = []
            self.subscriptions.append(
                self.node.create_subscription(Detection2DArray, topic, self._callback(topic), 100)
            )
        kind = CompressedImage if bag.compressed else Image
        self.image_pub = self.node.create_publisher(
            kind, bag.topic, image_publisher_qos(options.reliable, options.image_depth)
        )
        self.clock_pub = self.node.create_publisher(Clock, "/clock", 10)

    def _callback(self, topic: str) -> Callable[[Any], None]:
        from multidnn_sched.ros.conversions import msg_to_detections

        def on_msg(msg: Any) -> None:
            now = time.perf_counter()
            parsed = msg_to_detections(msg)
            attributes = [h[1][0] if len(h) > 1 else "" for h in parsed.hypotheses]
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            record = Output(
                stamp, now, parsed.boxes_xyxy, parsed.scores, parsed.class_ids, parsed.ids, attributes
            )
            with self._lock:
                self.run.outputs[topic].append(record)

        return on_msg

    def _counts(self) -> list[int]:
        with self._lock:
            return [len(self.run.outputs[topic]) for _, _, topic in STAGES]

    def play(self, sample: Callable[[], None]) -> None:
        from rosgraph_msgs.msg import Clock

        from multidnn_sched.evaluation.replay_bag import _with_stamp
        from multidnn_sched.evaluation.replay_player import _time_msg

        bag, options, run = self.bag, self.options, self.run
        limit = time.perf_counter() + SUBSCRIBERS_TIMEOUT_SEC
        while self.image_pub.get_subscription_count() < 1 or any(
            s.get_publisher_count() < 1 for s in self.subscriptions
        ):
            if time.perf_counter() > limit:
                raise ConfigError(f"replay: the container did not subscribe to {bag.topic} in time")
            time.sleep(0.02)
        time.sleep(SETTLE_SEC)
        period_sec = 1.0 / options.rate_hz if options.rate_hz else bag.period_ns / 1e9
        span_ns = bag.period_ns * len(bag.images)
        start = time.perf_counter()
        run.start_sec = start
        deadline = start + options.soak_minutes * 60.0 if options.soak_minutes else None
        next_sample, sent, loop = start, 0, 0
        while (loop < options.loops) if deadline is None else (time.perf_counter() < deadline):
            for index, data in enumerate(bag.images):
                stamp = bag.stamps_ns[index] + loop * span_ns
                target = start + sent * period_sec
                while (now := time.perf_counter()) < target or now >= next_sample:
                    if now >= next_sample:
                        sample()
                        next_sample += SAMPLE_PERIOD_SEC
                        continue
                    time.sleep(min(target - now, 0.01))
                sec, nanosec = divmod(stamp, 1_000_000_000)
                self.clock_pub.publish(Clock(clock=_time_msg(sec, nanosec)))
                run.published[stamp] = time.perf_counter()
                run.frame_of_stamp[stamp] = index
                self.image_pub.publish(_with_stamp(data, stamp) if loop else data)
                sent += 1
                if deadline is not None and time.perf_counter() >= deadline:
                    break
            loop += 1
        run.loops = loop
        drain_limit = time.perf_counter() + DRAIN_TIMEOUT_SEC
        last = -1
        while time.perf_counter() < drain_limit and min(self._counts()) < sent:
            total = sum(self._counts())
            if total != last:
                last, drain_limit = total, max(drain_limit, time.perf_counter() + 1.0)
            time.sleep(0.05)
        run.wall_sec = time.perf_counter() - start
        sample()
        run.cpu.update(_cpu_over(run, start, start + run.wall_sec))
        run.cpu["player_cpu_sec"] = None
