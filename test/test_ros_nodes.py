"""ROS glue: pure node-side state, parameters, diagnostics, and the container end to end (fake runtime).

Every ROS test uses a private ``Context`` and joins the spinning thread before it ends.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
import torch
import yaml
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue, SetParametersResult
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from vision_msgs.msg import Classification, Detection2DArray

from multidnn_sched.exceptions import ConfigError, FrameDroppedError
from multidnn_sched.models.detector import Detections
from multidnn_sched.ros.container import SPIN_THREADS, PerceptionContainer, SpinThread
from multidnn_sched.ros.detector_node import DetectorNode
from multidnn_sched.ros.diagnostics import build_diagnostic_array, diagnostics_to_dict
from multidnn_sched.ros.imaging import image_to_rgb
from multidnn_sched.ros.params import (
    CLASSIFIER_PARAMS,
    CONTAINER_PARAMS,
    DETECTOR_PARAMS,
    TRACKER_PARAMS,
    ParamSpec,
    parse_overrides,
    validate,
)
from multidnn_sched.ros.runtime import (
    BlockStatus,
    DecisionRecord,
    DirectRuntime,
    RuntimeSettings,
    RuntimeStatus,
)
from multidnn_sched.ros.stats import DropLog, InOrder, LatencyWindow, NodeStats, RateMeter, StampPairer
from multidnn_sched.ros.tasks import CropTask, DetectorTask, PerceptionTasks, TrackOutput

ROOT = Path(__file__).resolve().parents[1]
TEST_DOMAIN_ID = 101 + os.getpid() % 100
"""A DDS domain of this test process: engineers' and CI's test runs on one machine must not cross-talk."""

# ------------------------------------------------------------------------------------------- pure state


def test_latency_window_percentiles_and_bound() -> None:
    window = LatencyWindow(size=100)
    assert window.percentile_ms(50) is None
    for v in range(1, 201):
        window.add(float(v))
    assert len(window) == 100
    assert window.percentile_ms(50) == pytest.approx(150.5)
    assert window.percentile_ms(99) == pytest.approx(199.01)


def test_rate_meter_uses_sliding_window() -> None:
    now = [0.0]
    meter = RateMeter(window_sec=2.0, clock=lambda: now[0])
    for i in range(20):
        now[0] = i * 0.1
        meter.tick()
    now[0] = 2.0
    assert meter.rate_hz() == pytest.approx(10.0, rel=0.11)
    now[0] = 10.0
    assert meter.rate_hz() == 0.0


def test_drop_log_reports_first_of_each_cause() -> None:
    log = DropLog()
    assert log.record("bad_step") is True
    assert log.record("bad_step") is False
    assert log.record("zero_size") is True
    assert log.counts() == {"bad_step": 2, "zero_size": 1} and log.total() == 3


def test_stamp_pairer_pairs_either_order_and_evicts() -> None:
    evicted: list[int] = []
    pairer = StampPairer(capacity=2, on_evict=evicted.append)
    assert pairer.add_image(1, "img1") is None
    assert pairer.add_detections(1, "det1") == "img1"
    assert pairer.add_detections(2, "det2") is None
    assert pairer.add_image(2, "img2") == "det2"
    for stamp in (3, 4, 5):
        pairer.add_detections(stamp, f"det{stamp}")
    assert pairer.evicted_detections == 1 and evicted == [3]
    assert pairer.add_image(3, "img3") is None  # det3 was evicted
    assert pairer.sizes() == (1, 2)


def test_in_order_runs_completions_in_ticket_order() -> None:
    order = InOrder()
    ran: list[int] = []
    t0, t1, t2 = order.ticket(), order.ticket(), order.ticket()
    order.complete(t2, lambda: ran.append(2))
    order.complete(t1, None)  # dropped frame
    assert ran == [] and order.pending() == 3
    order.complete(t0, lambda: ran.append(0))
    assert ran == [0, 2] and order.pending() == 0


def test_node_stats_snapshot_counts() -> None:
    stats = NodeStats("detector", "detector")
    stats.on_received()
    stats.on_received()
    stats.on_processed(12.0)
    assert stats.on_bad_input("short_data") is True
    stats.on_dropped("runtime_queue_full")
    snap = stats.snapshot()
    assert (snap.received, snap.processed, snap.dropped, snap.bad_input_total) == (2, 1, 1, 1)
    assert snap.latency_p50_ms == pytest.approx(12.0)


# --------------------------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [
        ("score_threshold", 0.5, True),
        ("score_threshold", 1.5, False),
        ("score_threshold", "high", False),
        ("max_detections", 0, False),
        ("max_detections", True, False),
        ("image_reliability", "reliable", True),
        ("image_reliability", "sometimes", False),
    ],
)
def test_validate_detector_params(name: str, value: object, ok: bool) -> None:
    spec = {s.name: s for s in DETECTOR_PARAMS}[name]
    reason = validate(spec, value)
    assert (reason is None) == ok, reason
    if not ok:
        assert name in reason and "expected" in reason


def test_parse_overrides_accepts_and_rejects_with_reason() -> None:
    parsed = parse_overrides("detector/backbone=int8, classifier/layer4=original")
    assert [(o.model, o.block, o.value) for o in parsed] == [
        ("detector", "backbone", "int8"),
        ("classifier", "layer4", "original"),
    ]
    assert parse_overrides("") == []
    with pytest.raises(ConfigError, match="model/block=value"):
        parse_overrides("detector-backbone")
    with pytest.raises(ConfigError, match="unknown|expected a model"):
        parse_overrides("segmenter/x=int8")
    with pytest.raises(ConfigError, match="parallel"):
        parse_overrides("detector/head=fast", modes_only=True)
    nodes = {s.name: s for s in CONTAINER_PARAMS}["nodes"]
    assert validate(nodes, "detector,tracker") is None
    assert "nodes" in validate(nodes, "detector,segmenter")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_config_yaml_documents_every_parameter_with_its_default() -> None:
    config = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    sections: dict[str, tuple[ParamSpec, ...]] = {
        "perception_container": CONTAINER_PARAMS,
        "detector": DETECTOR_PARAMS,
        "tracker": TRACKER_PARAMS,
        "classifier": CLASSIFIER_PARAMS,
    }
    for node, specs in sections.items():
        values = _flatten(config[node]["ros__parameters"])
        for spec in specs:
            assert spec.name in values, f"config/perception.yaml lacks {node}.{spec.name}"
            assert values[spec.name] == spec.default, (
                f"{node}.{spec.name}: {values[spec.name]} != {spec.default}"
            )
            assert type(values[spec.name]) is type(spec.default), (
                f"{node}.{spec.name} has the wrong YAML type"
            )
        assert set(values) <= {s.name for s in specs} | {"use_sim_time"}, f"unknown keys in {node}"


# ---------------------------------------------------------------------------------------- conversions


def make_image(
    encoding: str = "rgb8", width: int = 32, height: int = 24, stamp_sec: int = 1, pad: int = 0
) -> Image:
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2}.get(encoding, 3)
    msg = Image()
    msg.header.frame_id = "camera"
    msg.header.stamp = Time(sec=stamp_sec, nanosec=500)
    msg.width, msg.height, msg.encoding = width, height, encoding
    msg.step = width * channels + pad
    rng = np.random.default_rng(stamp_sec)
    msg.data = rng.integers(0, 256, size=msg.step * height, dtype=np.uint8).tobytes()
    return msg


def test_image_to_rgb_handles_channel_orders_and_padding() -> None:
    rgb = make_image("rgb8", pad=4)
    bgr = make_image("bgr8", pad=4)
    out_rgb, out_bgr = image_to_rgb(rgb), image_to_rgb(bgr)
    assert out_rgb.shape == (24, 32, 3) and out_rgb.dtype == np.uint8
    raw = np.frombuffer(bytes(bgr.data), np.uint8).reshape(24, 100)[:, :96].reshape(24, 32, 3)
    assert np.array_equal(out_bgr, raw[..., ::-1])
    assert image_to_rgb(make_image("mono8")).shape == (24, 32, 3)
    assert image_to_rgb(make_image("bgra8")).shape == (24, 32, 3)


# -------------------------------------------------------------------------------------------- fakes


class FakeTracker:
    """Ids by box order; counts steps so a test can see the state is stepped once per frame."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.steps = 0

    def update(self, detections: Detections, embeddings: np.ndarray) -> list[TrackOutput]:
        self.steps += 1
        assert embeddings.shape[0] in (0, len(detections))
        return [
            TrackOutput(
                100 + i,
                tuple(float(v) for v in detections.boxes_xyxy[i]),
                float(detections.scores[i]),
                int(detections.labels[i]),
            )
            for i in range(len(detections))
        ]


def fake_tasks() -> PerceptionTasks:
    """Detector: two boxes with scores 0.9 and 0.4; embedder / classifier: identity on box tensors."""

    def det_post(output: Any, score: float, nms: float, size: tuple[int, int], top_k: int) -> Detections:
        del output, nms
        boxes = np.array([[1, 2, 11, 12], [5, 5, 15, 20]], np.float32)
        scores = np.array([0.9, 0.4], np.float32)
        keep = scores >= score
        assert size == (32, 24)
        return Detections(boxes[keep][:top_k], scores[keep][:top_k], np.array([0, 1], np.int64)[keep][:top_k])

    def crops(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        assert frame.ndim == 3 and frame.shape[2] == 3
        return np.asarray(boxes, np.float32)

    return PerceptionTasks(
        detector=DetectorTask(lambda frame: float(frame.mean()), det_post, ("circle", "square")),
        embedder=CropTask(crops, lambda frame: np.zeros((1, 4), np.float32)),
        classifier=CropTask(
            lambda frame, boxes: np.tile([[0.0, 3.0, 0.0, 0.0]], (len(crops(frame, boxes)), 1)),
            lambda frame: np.array([[0.0, 3.0, 0.0, 0.0]], np.float32),
            ("red", "green", "blue", "yellow"),
        ),
        make_tracker=FakeTracker,
    )


class FakeRuntime(DirectRuntime):
    """Direct runtime with made-up blocks whose forced variants show up in the status."""

    def __init__(self) -> None:
        super().__init__({"detector": lambda x: x, "embedder": lambda x: x, "classifier": lambda x: x})
        self.variants: dict[tuple[str, str], str] = {
            ("detector", "backbone"): "original",
            ("detector", "head"): "original",
        }
        self.settings: list[RuntimeSettings] = []
        self.drop_next = 0

    def submit(self, model: str, carry: Any) -> Future:
        if self.drop_next:
            self.drop_next -= 1
            future: Future = Future()
            future.set_exception(FrameDroppedError("queue full"))
            return future
        return super().submit(model, carry)

    def configure(self, settings: RuntimeSettings) -> None:
        self.settings.append(settings)

    def set_override(
        self, model: str, block: str, mode: str | None = None, variant: str | None = None
    ) -> None:
        if (model, block) not in self.variants:
            raise ConfigError(f"model {model!r} has no block {block!r}")
        if variant is not None:
            self.variants[(model, block)] = "original" if variant == "auto" else variant

    def status(self) -> RuntimeStatus:
        blocks = [BlockStatus(m, b, 0.5, "parallel", v) for (m, b), v in self.variants.items()]
        return RuntimeStatus(
            blocks, [DecisionRecord(1.0, "detector", "head", "serialize", "lag 3.0 ms > 1.0")]
        )


def test_diagnostics_builder_round_trip() -> None:
    stats = NodeStats("detector", "detector")
    stats.on_processed(250.0)
    stats.on_bad_input("bad_step")
    array = build_diagnostic_array(
        [stats.snapshot()], FakeRuntime().status(), Time(sec=3), deadlines_ms={"detector": 100.0}
    )
    table = diagnostics_to_dict(array)
    node = table["multidnn_sched/node/detector"]
    assert node["bad_inputs.bad_step"] == "1" and node["_level"] == "1"
    assert "deadline" in node["_message"]
    assert table["multidnn_sched/model/detector"]["backbone.variant"] == "original"
    assert "serialize: lag 3.0 ms" in next(
        iter(v for k, v in table["multidnn_sched/decisions"].items() if not k.startswith("_"))
    )


def test_diagnostics_show_the_runtime_pool() -> None:
    status = FakeRuntime().status()
    status.workers, status.worker_threads, status.sequential_threads = 2, 1, 2
    array = build_diagnostic_array([], status, Time(sec=3), process={"cpu_percent": 50.0})
    process = diagnostics_to_dict(array)["multidnn_sched/process"]
    assert (process["runtime_workers"], process["runtime_worker_threads"]) == ("2", "1")
    assert process["runtime_sequential_threads"] == "2"


# --------------------------------------------------------------------------------------------- ROS e2e


@pytest.fixture()
def ros_context() -> Iterator[Context]:
    context = Context()
    rclpy.init(context=context, domain_id=TEST_DOMAIN_ID)  # other processes' tests must not see our topics
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)


def wait_for(
    done: Callable[[], bool], timeout_sec: float = 10.0, tick: Callable[[], None] | None = None
) -> bool:
    deadline = time.monotonic() + timeout_sec
    while not done() and time.monotonic() < deadline:
        if tick is not None:
            tick()
        time.sleep(0.02)
    return done()


class Harness:
    """A container (fake runtime and tasks) plus a probe node, spun as the container's ``spin_threads`` says
    (the default: one ``SingleThreadedExecutor`` thread with the shared runtime)."""

    def __init__(self, context: Context, overrides: dict[str, list[Parameter]] | None = None) -> None:
        self.runtime = FakeRuntime()
        fast = [Parameter("diagnostics_period_sec", Parameter.Type.DOUBLE, 0.2)]
        all_overrides = {"perception_container": fast, **(overrides or {})}
        self.container = PerceptionContainer(
            context=context, tasks=fake_tasks(), runtime=self.runtime, parameter_overrides=all_overrides
        )
        self.probe = Node("probe", context=context)
        self.received: dict[str, list[Any]] = {
            "detections": [],
            "tracks": [],
            "classified": [],
            "diag": [],
            "classification": [],
        }
        for topic, kind in (
            ("detections", Detection2DArray),
            ("tracks", Detection2DArray),
            ("classified", Detection2DArray),
            ("classification", Classification),
        ):
            self.probe.create_subscription(kind, topic, self.received[topic].append, 50)
        self.probe.create_subscription(DiagnosticArray, "/diagnostics", self.received["diag"].append, 50)
        self.images = self.probe.create_publisher(Image, "image", 10)
        self.spinner = SpinThread(
            [*self.container.all_nodes, self.probe], context, self.container.spin_threads
        ).start()

    def set_param(self, node: str, name: str, value: ParameterValue) -> SetParametersResult:
        client = self.probe.create_client(SetParameters, f"/{node}/set_parameters")
        assert client.wait_for_service(timeout_sec=10.0), f"/{node}/set_parameters not available"
        request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=value)])
        future = client.call_async(request)
        assert wait_for(future.done), "SetParameters timed out"
        self.probe.destroy_client(client)
        return future.result().results[0]

    def latest_diag(self) -> dict[str, dict[str, str]]:
        return diagnostics_to_dict(self.received["diag"][-1]) if self.received["diag"] else {}

    def close(self) -> None:
        assert self.spinner.stop(timeout_sec=5.0), "spin thread did not join"
        self.container.destroy()
        self.probe.destroy_node()


def publish_until(
    harness: Harness, topic: str, count: int, make: Callable[[int], Image], timeout_sec: float = 15.0
) -> bool:
    sent = [0]

    def tick() -> None:
        harness.images.publish(make(sent[0]))
        sent[0] += 1

    return wait_for(lambda: len(harness.received[topic]) >= count, timeout_sec, tick)


def test_images_flow_to_detections_tracks_and_classifications_with_source_headers(
    ros_context: Context,
) -> None:
    harness = Harness(ros_context)
    try:
        assert publish_until(harness, "classified", 3, lambda i: make_image(stamp_sec=10 + i)), (
            harness.received
        )
        detections = harness.received["detections"][0]
        assert detections.header.frame_id == "camera" and detections.header.stamp.nanosec == 500
        assert [d.results[0].hypothesis.class_id for d in detections.detections] == ["circle", "square"]
        tracks = harness.received["tracks"][-1]
        assert [d.id for d in tracks.detections] == ["100", "101"]
        classified = harness.received["classified"][-1]
        stamps = {m.header.stamp.sec for m in harness.received["detections"]}
        assert classified.header.stamp.sec in stamps and classified.header.frame_id == "camera"
        assert [d.results[1].hypothesis.class_id for d in classified.detections] == ["green", "green"]
        assert all(d.header == classified.header for d in classified.detections)
        assert wait_for(lambda: "multidnn_sched/node/classifier" in harness.latest_diag())
        diag = harness.latest_diag()
        assert int(diag["multidnn_sched/node/detector"]["processed"]) >= 3
        assert float(diag["multidnn_sched/node/tracker"]["latency_p50_ms"]) >= 0.0
    finally:
        harness.close()


@pytest.mark.parametrize(
    ("params", "threads"),
    [({}, 1), ({"baseline": True}, SPIN_THREADS), ({"spin_threads": 3}, 3), ({"baseline": True, "spin_threads": 1}, 1)],
)
def test_container_spins_one_thread_with_the_shared_runtime_and_several_in_baseline(
    ros_context: Context, params: dict[str, Any], threads: int
) -> None:
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    container = PerceptionContainer(
        context=ros_context,
        tasks=fake_tasks(),
        runtime=FakeRuntime(),
        parameter_overrides={"perception_container": overrides},
    )
    try:
        assert container.spin_threads == threads
        spinner = SpinThread(container.all_nodes, ros_context, container.spin_threads)
        expected = SingleThreadedExecutor if threads == 1 else MultiThreadedExecutor
        assert type(spinner.executor) is expected
        spinner.executor.shutdown(timeout_sec=1.0)
    finally:
        container.destroy()
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        SpinThread([], ros_context, 0)


def test_parameters_change_behaviour_and_out_of_range_is_rejected(ros_context: Context) -> None:
    harness = Harness(ros_context)
    try:
        double = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.5)
        assert harness.set_param("detector", "score_threshold", double).successful
        count = len(harness.received["detections"])
        assert publish_until(harness, "detections", count + 2, lambda i: make_image(stamp_sec=100 + i))
        assert len(harness.received["detections"][-1].detections) == 1  # the 0.4 box is gone

        bad = harness.set_param(
            "detector",
            "score_threshold",
            ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=1.5),
        )
        assert not bad.successful and "score_threshold" in bad.reason, bad.reason
        assert harness.container.nodes["detector"].values["score_threshold"] == pytest.approx(0.5)

        bad_override = harness.set_param(
            "perception_container",
            "force_variant",
            ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="detector-backbone"),
        )
        assert not bad_override.successful and "model/block=value" in bad_override.reason

        forced = harness.set_param(
            "perception_container",
            "force_variant",
            ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="detector/backbone=int8"),
        )
        assert forced.successful, forced.reason
        assert wait_for(
            lambda: (
                harness.latest_diag().get("multidnn_sched/model/detector", {}).get("backbone.variant")
                == "int8"
            )
        )
        unknown_block = harness.set_param(
            "perception_container",
            "force_variant",
            ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="detector/nope=int8"),
        )
        assert not unknown_block.successful and "nope" in unknown_block.reason
        assert harness.runtime.variants[("detector", "backbone")] == "int8"  # the accepted state is kept
        undone = harness.set_param(
            "perception_container",
            "force_variant",
            ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=""),
        )
        assert undone.successful and harness.runtime.variants[("detector", "backbone")] == "original"

        alpha = harness.set_param(
            "perception_container",
            "lag.ema_alpha",
            ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.5),
        )
        assert alpha.successful and harness.runtime.settings[-1].ema_alpha == pytest.approx(0.5)
        floor = harness.set_param(
            "perception_container",
            "policy.accuracy_floor",
            ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.0),
        )
        assert not floor.successful and "accuracy_floor" in floor.reason
    finally:
        harness.close()


@pytest.mark.parametrize(
    ("cause", "make"),
    [
        ("unknown_encoding", lambda i: make_image("yuv422_weird", stamp_sec=200 + i)),
        ("bad_step", lambda i: _with(make_image(stamp_sec=200 + i), step=10)),
        ("zero_size", lambda i: _with(make_image(stamp_sec=200 + i), width=0, step=0, data=b"")),
        ("short_data", lambda i: _with(make_image(stamp_sec=200 + i), data=b"\x00" * 100)),
    ],
)
def test_bad_images_are_dropped_counted_and_nodes_keep_running(
    ros_context: Context, cause: str, make: Callable[[int], Image]
) -> None:
    harness = Harness(ros_context)
    try:
        sent = [0]

        def tick() -> None:
            harness.images.publish(make(sent[0]))
            sent[0] += 1

        def counted() -> bool:
            node = harness.latest_diag().get("multidnn_sched/node/detector", {})
            return int(node.get(f"bad_inputs.{cause}", "0")) >= 2

        assert wait_for(counted, 15.0, tick), harness.latest_diag()
        assert harness.received["detections"] == []
        assert publish_until(harness, "detections", 1, lambda i: make_image(stamp_sec=300 + i))
    finally:
        harness.close()


def _with(msg: Image, **fields: Any) -> Image:
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


def test_runtime_drops_are_counted_and_full_frame_mode_publishes_classification(ros_context: Context) -> None:
    overrides = {
        "classifier": [Parameter("mode", Parameter.Type.STRING, "full_frame")],
        "perception_container": [
            Parameter("nodes", Parameter.Type.STRING, "detector,classifier"),
            Parameter("diagnostics_period_sec", Parameter.Type.DOUBLE, 0.2),
        ],
    }
    harness = Harness(ros_context, overrides)
    try:
        assert set(harness.container.nodes) == {"detector", "classifier"}
        assert publish_until(harness, "classification", 2, lambda i: make_image(stamp_sec=400 + i))
        result = harness.received["classification"][-1]
        assert result.results[0].class_id == "green" and result.header.frame_id == "camera"
        harness.runtime.drop_next = 4
        assert wait_for(
            lambda: (
                int(
                    harness.latest_diag()
                    .get("multidnn_sched/node/detector", {})
                    .get("dropped.runtime_queue_full", "0")
                )
                >= 1
            ),
            10.0,
            lambda: harness.images.publish(make_image(stamp_sec=500)),
        )
    finally:
        harness.close()


class _Carry:
    """A model input that can be watched with a weak reference."""


def test_runtime_drop_frees_the_frame_without_waiting_for_the_garbage_collector(ros_context: Context) -> None:
    # A dropped frame's future fails with FrameDroppedError; raising it in the done-callback made a cycle
    # (exception -> traceback -> callback frame -> future -> exception) holding the whole submitting stack
    # (Image, decoded frame, input tensor) until a full GC: the 10-minute soak's RSS grew ~3 MB/s.
    runtime = FakeRuntime()
    runtime.drop_next = 1
    node = DetectorNode(runtime, fake_tasks().detector, context=ros_context)
    failures: list[str] = []
    carry = _Carry()
    watch = weakref.ref(carry)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    gc.disable()
    try:
        node.run_model(carry, lambda output: failures.append("published"), lambda: failures.append("failed"))
        del carry
        alive = watch() is not None
        # The outcome is handed to the node's thread (guard condition): one spin runs it.
        wait_for(lambda: bool(failures), 5.0, lambda: executor.spin_once(timeout_sec=0.1))
    finally:
        gc.enable()
        executor.shutdown()
        node.destroy_node()
    assert not alive, "the dropped frame's input is kept alive by a reference cycle"
    assert failures == ["failed"]
    assert node.stats.snapshot().drop_causes == {"runtime_queue_full": 1}


CTRL_C_SCRIPT = """
import sys, time
sys.path.insert(0, {test_dir!r})
from test_ros_nodes import FakeRuntime, fake_tasks
from multidnn_sched.ros.launcher import exit_after_teardown, run
print("starting", flush=True)
code = run(["perception_container", "--baseline"], runtime_factory=lambda values, names: FakeRuntime(),
           tasks=fake_tasks())
print("exit", code, flush=True)
exit_after_teardown(code)
"""


def test_container_main_shuts_down_on_ctrl_c_within_5_s(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    script = tmp_path / "run_container.py"
    script.write_text(CTRL_C_SCRIPT.format(test_dir=str(ROOT / "test")))
    env = {**os.environ, "ROS_DOMAIN_ID": str(TEST_DOMAIN_ID)}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "running nodes" in line or not line:
                break
        assert any("running nodes" in line for line in lines), "".join(lines)
        assert "baseline" in lines[-1]
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10.0)
        elapsed = time.monotonic() - sent
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, rest
    assert elapsed < 5.0, f"shutdown took {elapsed:.1f} s"
    assert "exit 0" in rest and "terminate called" not in rest, rest


class WorkerThreadRuntime(FakeRuntime):
    """Resolves every future on a thread named like the BlockExecutor's workers (as the shared runtime does)."""

    def submit(self, model: str, carry: Any) -> Future:
        inner = super().submit(model, carry)
        future: Future = Future()

        def resolve() -> None:
            error = inner.exception()
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(inner.result())

        threading.Thread(target=resolve, name="blockexec-worker-0").start()
        return future


def test_results_are_post_processed_and_published_off_the_scheduler_workers(ros_context: Context) -> None:
    harness = Harness(ros_context)
    runtime = WorkerThreadRuntime()
    publish_threads: list[str] = []
    try:
        for node in harness.container.nodes.values():
            node.runtime = runtime
            original = node.publisher.publish

            def recording(msg: Any, original: Callable[[Any], None] = original) -> None:
                publish_threads.append(threading.current_thread().name)
                original(msg)

            node.publisher.publish = recording  # type: ignore[method-assign]
        assert publish_until(harness, "classified", 3, lambda i: make_image(stamp_sec=40 + i)), harness.received
        assert publish_threads, "nothing was published"
        assert not [t for t in publish_threads if t.startswith("blockexec-worker")], publish_threads
        # Frames published after the third classification may still be on their way back: no result stays
        # queued once the camera stops (each one wakes its node's thread).
        nodes = list(harness.container.nodes.values())
        assert wait_for(lambda: all(node.pending_results() == 0 for node in nodes), 10.0), [
            node.pending_results() for node in nodes
        ]
    finally:
        harness.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_ros_side_torch_calls_use_node_torch_threads(ros_context: Context, threads: int) -> None:
    overrides = {"perception_container": [
        Parameter("diagnostics_period_sec", Parameter.Type.DOUBLE, 0.2),
        Parameter("node_torch_threads", Parameter.Type.INTEGER, threads),
    ]}
    harness = Harness(ros_context, overrides)
    seen: list[int] = []
    try:
        for node in harness.container.nodes.values():
            assert node.torch_threads == threads
            original = node.publisher.publish

            def recording(msg: Any, original: Callable[[Any], None] = original) -> None:
                seen.append(torch.get_num_threads())  # on the node's callback thread, after post-processing
                original(msg)

            node.publisher.publish = recording  # type: ignore[method-assign]
        assert publish_until(harness, "classified", 2, lambda i: make_image(stamp_sec=60 + i)), harness.received
        assert seen and set(seen) == {threads}, seen
    finally:
        harness.close()
