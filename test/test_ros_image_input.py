"""Image input of the container: one decode per image, compressed input, bad compressed data, the per-stage
latency breakdown (fake runtime and tasks, private rclpy contexts)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage
from test_ros_nodes import TEST_DOMAIN_ID, FakeRuntime, Harness, fake_tasks, make_image, publish_until, wait_for

import multidnn_sched.ros.image_input as image_input_module
from multidnn_sched.exceptions import ConfigError, ImageConversionError
from multidnn_sched.msgs.compressed import compressed_codec, compressed_msg_to_rgb, rgb_to_compressed_msg
from multidnn_sched.ros.container import PerceptionContainer
from multidnn_sched.ros.image_input import image_qos
from multidnn_sched.ros.timing import NODE_STAGES, FrameTiming, TimingLog
from multidnn_sched.runtime.frame_times import FrameTimes, attach_frame_times

NODES = ("detector", "tracker", "classifier")


@pytest.fixture()
def ros_context() -> Iterator[Context]:
    context = Context()
    rclpy.init(context=context, domain_id=TEST_DOMAIN_ID)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)


def _all_nodes(name: str, value: Any) -> dict[str, list[Parameter]]:
    return {node: [Parameter(name, value=value)] for node in NODES}


# ------------------------------------------------------------------------------------------- pure parts


def test_frame_timing_stages_add_up_to_the_latency_exactly() -> None:
    timing = FrameTiming(1, 10.0, 12.5, 20.0, 45.0, 47.0, 47.25)
    stages = timing.stages_ms()
    assert tuple(stages) == NODE_STAGES
    assert stages == {"decode": 2.5, "queue": 7.5, "model": 25.0, "postprocess": 2.0, "publish": 0.25}
    assert sum(stages.values()) == pytest.approx(timing.latency_ms, abs=1e-9)
    log = TimingLog(window=4)
    for i in range(10):
        log.add(FrameTiming(i, 0.0, 1.0, 1.0 + i, 5.0 + i, 6.0 + i, 6.5 + i, transport_ms=0.5))
    breakdown = log.breakdown()
    assert len(log.records()) == 10
    assert breakdown["model"].p50_ms == pytest.approx(4.0) and breakdown["queue"].mean_ms == pytest.approx(7.5)
    assert sum(breakdown[s].mean_ms for s in NODE_STAGES) == pytest.approx(breakdown["latency"].mean_ms)
    assert breakdown["transport"].p99_ms == pytest.approx(0.5)


def test_image_qos_defaults_to_rep_2003_sensor_data_and_takes_depth_and_reliability() -> None:
    from rclpy.qos import ReliabilityPolicy, qos_profile_sensor_data

    default = image_qos("best_effort")
    assert default.depth == qos_profile_sensor_data.depth == 5
    assert default.reliability == ReliabilityPolicy.BEST_EFFORT
    reliable = image_qos("reliable", 30)
    assert reliable.depth == 30 and reliable.reliability == ReliabilityPolicy.RELIABLE


def test_compressed_codecs_round_trip_and_reject_bad_data() -> None:
    rng = np.random.default_rng(3)
    smooth = np.clip(np.linspace(0, 255, 48)[None, :, None] + rng.normal(0, 2, (40, 48, 3)), 0, 255)
    rgb = smooth.astype(np.uint8)
    png = rgb_to_compressed_msg(rgb, "png")
    assert png.format == "png" and np.array_equal(compressed_msg_to_rgb(png), rgb)
    jpeg = rgb_to_compressed_msg(rgb, "jpeg")
    decoded = compressed_msg_to_rgb(jpeg)
    assert decoded.shape == rgb.shape and np.abs(decoded.astype(int) - rgb).mean() < 4.0
    assert compressed_codec("bgr8; jpeg compressed bgr8", b"") == "jpeg"
    assert compressed_codec("", bytes(png.data)) == "png"
    cases = {
        "bad_compressed": CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xe0 not really a jpeg"),
        "zero_size": CompressedImage(format="png", data=b""),
        "unknown_format": CompressedImage(format="tiff", data=b"II*\x00"),
    }
    for cause, msg in cases.items():
        with pytest.raises(ImageConversionError) as raised:
            compressed_msg_to_rgb(msg)
        assert raised.value.cause == cause  # type: ignore[attr-defined]
    swapped = CompressedImage(format="jpeg", data=png.data)  # PNG bytes labelled jpeg
    with pytest.raises(ImageConversionError, match="expected jpeg"):
        compressed_msg_to_rgb(swapped)


# ---------------------------------------------------------------------------------------------- ROS e2e


def test_container_decodes_each_image_once_for_all_its_nodes(
    ros_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: Counter[int] = Counter()
    original = image_input_module.image_to_rgb

    def counting(msg: Any) -> np.ndarray:
        decoded[msg.header.stamp.sec] += 1
        return original(msg)

    monkeypatch.setattr(image_input_module, "image_to_rgb", counting)
    harness = Harness(ros_context)
    try:
        container = harness.container
        assert container.image_input is not None
        assert all(node.image_input is None for node in container.nodes.values())
        assert publish_until(harness, "classified", 4, lambda i: make_image(stamp_sec=20 + i))
        assert harness.probe.count_subscribers("image") == 1  # one subscription for three nodes
        # the last image may still be between its decode and its count: wait for the counters to settle
        assert wait_for(lambda: container.image_input.counts()["decoded"] == sum(decoded.values()), 5.0)
        counts = container.image_input.counts()
        assert decoded and set(decoded.values()) == {1}, decoded  # every image decoded exactly once
        assert counts["decoded"] == sum(decoded.values()) == counts["received"]
        classified = {m.header.stamp.sec for m in harness.received["classified"]}
        assert classified <= set(decoded)  # the classifier used the shared decode (no decode of its own)
    finally:
        harness.close()


def test_a_node_alone_subscribes_itself(ros_context: Context) -> None:
    overrides = {"perception_container": [Parameter("nodes", value="detector")]}
    harness = Harness(ros_context, overrides)
    try:
        assert harness.container.image_input is None
        assert harness.container.nodes["detector"].image_input is not None
        assert publish_until(harness, "detections", 2, lambda i: make_image(stamp_sec=60 + i))
    finally:
        harness.close()


def test_nodes_of_one_container_must_agree_on_the_image_transport(ros_context: Context) -> None:
    overrides = {"detector": [Parameter("image_transport", value="compressed")]}
    with pytest.raises(ConfigError, match="image_transport"):
        PerceptionContainer(
            context=ros_context, tasks=fake_tasks(), runtime=FakeRuntime(), parameter_overrides=overrides
        )


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_compressed_input_round_trip(ros_context: Context, codec: str) -> None:
    harness = Harness(ros_context, _all_nodes("image_transport", "compressed"))
    publisher = harness.probe.create_publisher(CompressedImage, "image/compressed", 10)
    try:
        assert harness.container.image_input is not None
        assert harness.container.image_input.topic == "/image/compressed"

        def make(i: int) -> CompressedImage:
            raw = make_image(stamp_sec=80 + i)
            rgb = np.frombuffer(bytes(raw.data), np.uint8).reshape(24, 32, 3)
            return rgb_to_compressed_msg(rgb, codec, raw.header)

        sent = [0]

        def tick() -> None:
            publisher.publish(make(sent[0]))
            sent[0] += 1

        assert wait_for(lambda: len(harness.received["classified"]) >= 2, 15.0, tick), harness.received
        detections = harness.received["detections"][0]
        assert detections.header.frame_id == "camera" and detections.header.stamp.nanosec == 500
        assert [d.results[0].hypothesis.class_id for d in detections.detections] == ["circle", "square"]
        assert [d.id for d in harness.received["tracks"][-1].detections] == ["100", "101"]
        assert harness.container.image_input.counts()["bad"] == 0
    finally:
        harness.close()


def test_bad_compressed_data_is_counted_as_a_bad_input_and_the_nodes_keep_running(ros_context: Context) -> None:
    harness = Harness(ros_context, _all_nodes("image_transport", "compressed"))
    publisher = harness.probe.create_publisher(CompressedImage, "image/compressed", 10)
    try:
        bad = make_image(stamp_sec=90)

        def tick() -> None:
            publisher.publish(CompressedImage(header=bad.header, format="jpeg", data=b"\xff\xd8\xffgarbage" * 10))

        def counted() -> bool:
            node = harness.latest_diag().get("multidnn_sched/node/detector", {})
            return int(node.get("bad_inputs.bad_compressed", "0")) >= 2

        assert wait_for(counted, 15.0, tick), harness.latest_diag()
        assert harness.received["detections"] == []
        assert int(harness.latest_diag()["multidnn_sched/process"]["images_bad"]) >= 2
        good = make_image(stamp_sec=91)
        rgb = np.frombuffer(bytes(good.data), np.uint8).reshape(24, 32, 3)
        assert wait_for(
            lambda: bool(harness.received["detections"]),
            15.0,
            lambda: publisher.publish(rgb_to_compressed_msg(rgb, "png", good.header)),
        )
    finally:
        harness.close()


class TimedRuntime(FakeRuntime):
    """Resolves each future on its own thread after a known queue wait and model time, with FrameTimes."""

    QUEUE_SEC = 0.015
    MODEL_SEC = 0.03

    def submit(self, model: str, carry: Any) -> Future:
        inner = super().submit(model, carry)
        future: Future = Future()
        arrival = time.perf_counter()

        def resolve() -> None:
            time.sleep(self.QUEUE_SEC)
            started = time.perf_counter()
            time.sleep(self.MODEL_SEC)
            attach_frame_times(future, FrameTimes(arrival, started, time.perf_counter()))
            future.set_result(inner.result())

        threading.Thread(target=resolve, name="timed-runtime").start()
        return future


def test_breakdown_adds_up_to_the_stage_latency_and_is_on_diagnostics(ros_context: Context) -> None:
    harness = Harness(ros_context)
    runtime = TimedRuntime()
    try:
        for node in harness.container.nodes.values():
            node.runtime = runtime
        assert publish_until(harness, "classified", 4, lambda i: make_image(stamp_sec=120 + i), timeout_sec=20.0)
        for name, node in harness.container.nodes.items():
            records = node.stats.timing.records()
            assert records, name
            for timing in records:
                stages = timing.stages_ms()
                assert all(value >= 0.0 for value in stages.values()), (name, stages)
                assert sum(stages.values()) == pytest.approx(timing.latency_ms, rel=0.05)
            if name != "tracker" or any(t.finished_ms > t.started_ms for t in records):
                models = [t.stages_ms()["model"] for t in records if t.finished_ms > t.started_ms]
                queues = [t.stages_ms()["queue"] for t in records if t.finished_ms > t.started_ms]
                assert min(models) >= TimedRuntime.MODEL_SEC * 1000 * 0.9, (name, models)
                assert min(queues) >= TimedRuntime.QUEUE_SEC * 1000 * 0.9, (name, queues)
        assert wait_for(lambda: "stage.model.p50_ms" in harness.latest_diag().get("multidnn_sched/node/detector", {}))
        detector = harness.latest_diag()["multidnn_sched/node/detector"]
        means = sum(float(detector[f"stage.{s}.mean_ms"]) for s in NODE_STAGES)
        assert means == pytest.approx(float(detector["stage.latency.mean_ms"]), rel=0.05)
        assert float(detector["stage.model.p50_ms"]) >= TimedRuntime.MODEL_SEC * 1000 * 0.9
        assert "stage.transport.p50_ms" in detector
        assert float(harness.latest_diag()["multidnn_sched/process"]["cpu_percent"]) >= 0.0
    finally:
        harness.close()


def test_image_qos_parameters_reach_the_subscription(ros_context: Context) -> None:
    from rclpy.qos import ReliabilityPolicy

    overrides = {
        "perception_container": [Parameter("nodes", value="detector")],
        "detector": [Parameter("image_reliability", value="reliable"), Parameter("image_depth", value=12)],
    }
    harness = Harness(ros_context, overrides)
    try:
        image_input = harness.container.nodes["detector"].image_input
        assert image_input is not None and image_input.topic == "/image"
        qos = image_input.subscription.qos_profile
        assert qos.depth == 12 and qos.reliability == ReliabilityPolicy.RELIABLE
    finally:
        harness.close()
    shared = Harness(ros_context, {"tracker": [Parameter("image_depth", value=9)]})
    try:  # the shared subscription: the largest depth of its nodes, best effort as they all ask
        qos = shared.container.image_input.subscription.qos_profile
        assert qos.depth == 9 and qos.reliability == ReliabilityPolicy.BEST_EFFORT
    finally:
        shared.close()


def test_the_shared_image_input_has_a_callback_group_of_its_own(ros_context: Context) -> None:
    # Images are taken and decoded while the nodes work (and, in the baseline, run their models in their
    # callbacks): dropped beyond a node's hand-off depth and counted, never overwritten unseen in DDS.
    for baseline in (True, False):
        harness = Harness(ros_context, {"perception_container": [Parameter("baseline", value=baseline)]})
        try:
            image_input = harness.container.image_input
            assert image_input is not None and image_input.node is harness.container.node
            assert image_input.inline_sink is None
            groups = {id(n.callback_group) for n in harness.container.nodes.values()}
            assert id(image_input.subscription.callback_group) not in groups
            assert publish_until(harness, "classified", 2, lambda i: make_image(stamp_sec=140 + i))
        finally:
            harness.close()


def test_detections_whose_image_was_evicted_are_dropped_at_once() -> None:
    from multidnn_sched.ros.stats import StampPairer

    evicted: list[int] = []
    pairer = StampPairer(capacity=2, on_evict=evicted.append)
    for stamp in (1, 2, 3):  # image 1 is evicted by image 3
        assert pairer.add_image(stamp, f"img{stamp}") is None
    assert pairer.add_detections(1, "det1") is None
    assert evicted == [1] and pairer.evicted_detections == 1 and pairer.sizes() == (2, 0)  # not cached
    assert pairer.add_detections(2, "det2") == "img2"
