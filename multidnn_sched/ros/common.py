"""Shared glue of the perception nodes: parameters, image QoS, image decoding with drop accounting.

A node is thin: ``__init__`` declares parameters, publishers and subscriptions; a callback decodes, submits
to the runtime and returns. The runtime resolves the frame's future on one of its scheduler workers; the
future's done-callback only queues the result and triggers the node's guard condition, so post-processing and
publishing run on the ROS executor's thread, in the node's callback group — never on a scheduler worker (which
must go back to running blocks at once). Counters live in :class:`~multidnn_sched.ros.stats.NodeStats` (no
rclpy there).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.context import Context
from rclpy.exceptions import InvalidHandle
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from multidnn_sched.exceptions import ExecutorShutdownError, FrameDroppedError, FrameSkippedError, ImageConversionError
from multidnn_sched.ros.imaging import image_to_rgb
from multidnn_sched.ros.params import ParamSpec, ParamValue, check_parameters, declare_parameters
from multidnn_sched.ros.runtime import ModelRuntime
from multidnn_sched.ros.stats import NodeStats

OUTPUT_QOS_DEPTH = 10
RESULT_BACKSTOP_SEC = 0.2
"""Period of the timer that drains results whose guard-condition wake-up was lost (RMW guard conditions can
miss a trigger from another thread, cf. ros2/rcl#989): a lost wake-up then costs at most this, not the frame.
0.2 s: a fifth of a second is well under the 1 s staleness at which a robot's consumers stop trusting a topic,
and the idle timer costs ~5 wake-ups/s per node."""
"""Outputs (detections, tracks, classifications) use the default reliable QoS with this depth (REP-2003)."""


def stamp_ns(stamp: Time) -> int:
    """Header stamp -> integer nanoseconds (the key that pairs an image with its detections)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_qos(reliability: str) -> QoSProfile:
    """REP-2003 sensor-data QoS (keep last 5, best effort), reliability overridable (``"reliable"``)."""
    profile = QoSProfile(
        depth=qos_profile_sensor_data.depth,
        history=qos_profile_sensor_data.history,
        durability=qos_profile_sensor_data.durability,
        reliability=qos_profile_sensor_data.reliability,
    )
    if reliability == "reliable":
        profile.reliability = ReliabilityPolicy.RELIABLE
    return profile


class PerceptionNode(Node):
    """Base of the detector / tracker / classifier nodes.

    Args:
        node_name: ROS node name.
        model: the runtime model this node submits to.
        specs: this node's parameters.
        runtime: the (shared or direct) model runtime.
        context: rclpy context (``None``: the default one).
        parameter_overrides: start-up values (tests); the params file comes through the context's arguments.
    """

    def __init__(
        self,
        node_name: str,
        model: str,
        specs: Sequence[ParamSpec],
        runtime: ModelRuntime,
        context: Context | None = None,
        parameter_overrides: list[Parameter] | None = None,
    ) -> None:
        super().__init__(node_name, context=context, parameter_overrides=parameter_overrides or [])
        self.model = model
        self.runtime = runtime
        self.stats = NodeStats(node_name, model)
        self._specs = tuple(specs)
        self.values: dict[str, ParamValue] = declare_parameters(self, self._specs)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.callback_group = MutuallyExclusiveCallbackGroup()
        self.closing = False
        """Set before the runtime shuts down: late results are then counted as ``shutdown``, not published."""
        self._results: deque[tuple[Future, Callable[[Any], None], Callable[[], None] | None]] = deque()
        self._results_lock = threading.Lock()
        self._results_ready = self.create_guard_condition(self._drain_results, callback_group=self.callback_group)
        self.rescued_results = 0
        """Results the backstop timer found waiting: their guard-condition wake-up was lost (RMW race)."""
        self._backstop_timer = self.create_timer(
            RESULT_BACKSTOP_SEC, self._backstop, callback_group=self.callback_group
        )

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        result = check_parameters(self._specs, params)
        if result.successful:
            for param in params:
                if param.name in self.values:
                    self.values[param.name] = param.value
        return result

    def image_qos(self) -> QoSProfile:
        return image_qos(str(self.values["image_reliability"]))

    def decode(self, msg: Image) -> np.ndarray | None:
        """RGB ``uint8[H, W, 3]`` of ``msg``, or ``None`` (counted per cause, logged once per cause)."""
        try:
            return image_to_rgb(msg)
        except ImageConversionError as error:
            cause = str(getattr(error, "cause", "invalid"))
            if self.stats.on_bad_input(cause):
                self.get_logger().warning(
                    f"dropping malformed Image ({cause}): {error} "
                    "(logged once per cause; counted on /diagnostics)"
                )
            return None

    def drop(self, cause: str, detail: str = "") -> None:
        """Count a dropped frame and log the first one of each cause."""
        if self.stats.on_dropped(cause):
            self.get_logger().info(
                f"dropped a frame ({cause}){': ' + detail if detail else ''} "
                "(logged once per cause; counted on /diagnostics)"
            )

    def run_model(
        self, carry: Any, on_output: Callable[[Any], None], on_failure: Callable[[], None] | None = None
    ) -> None:
        """Submit ``carry`` to this node's model and call ``on_output(output)`` when it is done.

        Drops (queue policy), shutdown and model errors are counted, never raised into the executor; then
        ``on_failure()`` runs (if given) so ordered consumers can skip the frame.
        """
        future = self.runtime.submit(self.model, carry)
        future.add_done_callback(lambda done: self._hand_back(done, on_output, on_failure))

    def _hand_back(
        self, future: Future, on_output: Callable[[Any], None], on_failure: Callable[[], None] | None
    ) -> None:
        """Done-callback, on whichever thread resolved the future: queue the result, wake the node's thread."""
        with self._results_lock:
            self._results.append((future, on_output, on_failure))
        try:
            self._results_ready.trigger()
        except Exception:  # noqa: BLE001 - rclpy raises its own handle errors once the node is destroyed
            self.drop("shutdown")

    def _drain_results(self) -> None:
        """Guard-condition callback (the ROS executor's thread): post-process and publish finished frames."""
        while True:
            with self._results_lock:
                if not self._results:
                    return
                future, on_output, on_failure = self._results.popleft()
            self._finish(future, on_output, on_failure)

    def destroy_node(self) -> None:
        try:
            self._backstop_timer.cancel()  # no timer task may be taken once the node's handles go
        except InvalidHandle:  # the context is already shut down: nothing can be taken any more
            pass
        super().destroy_node()

    def _backstop(self) -> None:
        """Timer: drain results whose wake-up never came, so a lost trigger delays a frame, never loses it."""
        waiting = self.pending_results()
        if waiting == 0:
            return
        self.rescued_results += waiting
        if self.rescued_results == waiting:
            self.get_logger().info(
                f"{waiting} finished frame(s) waited for the {RESULT_BACKSTOP_SEC:.1f} s backstop: "
                "a guard-condition wake-up was lost (logged once)"
            )
        self._drain_results()

    def pending_results(self) -> int:
        """Finished frames waiting for the node's thread."""
        with self._results_lock:
            return len(self._results)

    def _finish(
        self, future: Future, on_output: Callable[[Any], None], on_failure: Callable[[], None] | None
    ) -> None:
        if self.closing:
            self.drop("shutdown")
            return
        error = future_error(future)
        if error is None:
            try:
                on_output(future.result())
            except Exception as post_error:  # noqa: BLE001 - post-processing or publishing after shutdown
                self.drop("postprocess_error", repr(post_error))
            return
        if isinstance(error, FrameSkippedError):
            self.drop("runtime_admission")
        elif isinstance(error, FrameDroppedError):  # queue full (newest wins) or shed as hopeless
            self.drop("runtime_queue_full" if error.cause == "queue" else f"runtime_{error.cause}")
        elif isinstance(error, ExecutorShutdownError):
            self.drop("shutdown")
        else:
            self.drop("model_error", repr(error))
        if on_failure is not None:
            on_failure()


def future_error(future: Future) -> BaseException | None:
    """The exception a done ``future`` failed with (``CancelledError`` if cancelled), ``None`` on success.

    Read without raising on purpose: ``future.result()`` re-raises the stored exception, whose traceback then
    holds the caller's frame, which holds ``future``, which holds the exception -- a reference cycle. A
    traceback frame also keeps its callers' frames, so every dropped frame kept the whole submitting stack
    (``Image`` message, decoded frame, input tensor: ~1.6 MB) alive until a full garbage collection, which
    runs rarely with a large heap: the soak's RSS grew ~3 MB/s.
    """
    if future.cancelled():
        return CancelledError()
    return future.exception()


def now_ms() -> float:
    """Monotonic clock in milliseconds (node-side latency)."""
    return time.perf_counter() * 1000.0
