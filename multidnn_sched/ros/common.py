"""Shared glue of the perception nodes: parameters, image input, drop accounting, per-frame timing.

A node is thin: ``__init__`` declares parameters, publishers and subscriptions; images come decoded from an
:class:`~multidnn_sched.ros.image_input.ImageInput` (the container's shared one, or the node's own when it
runs alone) through :meth:`PerceptionNode.offer_frame`, which queues the frame and triggers the node's
frame guard condition, so ``on_frame`` runs in the node's callback group; it pre-processes, submits to the
runtime and returns. The runtime resolves the frame's future on one of its scheduler workers; the
future's done-callback only queues the result and triggers the node's guard condition, so post-processing and
publishing run on the ROS executor's thread, in the node's callback group — never on a scheduler worker (which
must go back to running blocks at once). Counters live in :class:`~multidnn_sched.ros.stats.NodeStats` (no
rclpy there).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any

from builtin_interfaces.msg import Time
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.context import Context
from rclpy.exceptions import InvalidHandle
from rclpy.node import Node
from rclpy.parameter import Parameter

from multidnn_sched.exceptions import ExecutorShutdownError, FrameDroppedError, FrameSkippedError, ImageConversionError
from multidnn_sched.ros.image_input import Frame, ImageInput, image_qos  # noqa: F401 - image_qos re-exported
from multidnn_sched.ros.params import ParamSpec, ParamValue, check_parameters, declare_parameters
from multidnn_sched.ros.runtime import ModelRuntime
from multidnn_sched.ros.stats import NodeStats
from multidnn_sched.ros.timing import FrameTiming, clamp_runtime_times, now_ms
from multidnn_sched.ros.torch_threads import NODE_TORCH_THREADS, use_torch_threads
from multidnn_sched.runtime.frame_times import frame_times

OUTPUT_QOS_DEPTH = 10
"""Outputs (detections, tracks, classifications) use the default reliable QoS with this depth (REP-2003)."""

RESULT_BACKSTOP_SEC = 0.2
"""Period of the timer that drains results whose guard-condition wake-up was lost (RMW guard conditions can
miss a trigger from another thread, cf. ros2/rcl#989): a lost wake-up then costs at most this, not the frame.
0.2 s: a fifth of a second is well under the 1 s staleness at which a robot's consumers stop trusting a topic,
and the idle timer costs ~5 wake-ups/s per node. It also drains images handed off by a shared image input."""


def stamp_ns(stamp: Time) -> int:
    """Header stamp -> integer nanoseconds (the key that pairs an image with its detections)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


FRAME_HANDOFF_MIN_DEPTH = 2
"""Frames a node keeps waiting for its thread (at least; ``image_depth`` when larger); the oldest is dropped
(``image_queue_full``) beyond it."""


@dataclass
class FrameClock:
    """The timestamps of one frame in flight through a node (see :mod:`multidnn_sched.ros.timing`)."""

    stamp_ns: int
    received_ms: float
    transport_ms: float | None = None
    image_received_ms: float | None = None
    preprocessed_ms: float | None = None
    started_ms: float | None = None
    finished_ms: float | None = None
    postprocessed_ms: float | None = None

    def timing(self, published_ms: float) -> FrameTiming:
        pre = self.received_ms if self.preprocessed_ms is None else self.preprocessed_ms
        started = pre if self.started_ms is None else self.started_ms
        finished = started if self.finished_ms is None else self.finished_ms
        post = finished if self.postprocessed_ms is None else self.postprocessed_ms
        return FrameTiming(
            self.stamp_ns, self.received_ms, pre, started, finished, post, published_ms,
            self.transport_ms, self.image_received_ms,
        )


class PerceptionNode(Node):
    """Base of the detector / tracker / classifier nodes.

    Args:
        node_name: ROS node name.
        model: the runtime model this node submits to.
        specs: this node's parameters.
        runtime: the (shared or direct) model runtime.
        context: rclpy context (``None``: the default one).
        parameter_overrides: start-up values (tests); the params file comes through the context's arguments.
        subscribe_image: subscribe to the images itself (a node alone); ``False``: a container's shared
            :class:`~multidnn_sched.ros.image_input.ImageInput` offers them.
    """

    def __init__(
        self,
        node_name: str,
        model: str,
        specs: Sequence[ParamSpec],
        runtime: ModelRuntime,
        context: Context | None = None,
        parameter_overrides: list[Parameter] | None = None,
        subscribe_image: bool = True,
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
        self.counts_images = False
        """``True``: an image is this node's input (``received`` counts images, bad ones included); else its
        input is the detections / tracks it pairs with images."""
        self._results: deque[tuple[Future, Callable[[Any], None], Callable[[], None] | None]] = deque()
        self._results_lock = threading.Lock()
        self._results_ready = self.create_guard_condition(self._drain_results, callback_group=self.callback_group)
        self._frames: deque[Frame] = deque()
        self._frames_lock = threading.Lock()
        self._frames_depth = max(FRAME_HANDOFF_MIN_DEPTH, int(self.values["image_depth"]))
        self._frames_ready = self.create_guard_condition(self._drain_frames, callback_group=self.callback_group)
        self.rescued_results = 0
        """Results and frames the backstop timer found waiting: their guard-condition wake-up was lost (RMW
        race)."""
        self._backstop_timer = self.create_timer(
            RESULT_BACKSTOP_SEC, self._backstop, callback_group=self.callback_group
        )
        self.torch_threads = NODE_TORCH_THREADS
        """Intra-op threads of this node's torch calls on its callback threads (the container's
        ``node_torch_threads``; see :mod:`multidnn_sched.ros.torch_threads`)."""
        self.image_input: ImageInput | None = None
        if subscribe_image:
            self.image_input = ImageInput(
                self,
                [self],
                str(self.values["image_transport"]),
                str(self.values["image_reliability"]),
                int(self.values["image_depth"]),
                self.callback_group,
                inline_sink=self,
            )

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        result = check_parameters(self._specs, params)
        if result.successful:
            for param in params:
                if param.name in self.values:
                    self.values[param.name] = param.value
        return result

    # -- image input -------------------------------------------------------------------------------------

    def offer_frame(self, frame: Frame) -> None:
        """A decoded image for this node (any thread): queue it and wake the node's thread."""
        if self.counts_images:
            self.stats.on_received()
        dropped = 0
        with self._frames_lock:
            self._frames.append(frame)
            while len(self._frames) > self._frames_depth:
                self._frames.popleft()
                dropped += 1
        for _ in range(dropped):
            self.drop("image_queue_full")
        try:
            self._frames_ready.trigger()
        except Exception:  # noqa: BLE001 - rclpy raises its own handle errors once the node is destroyed
            self.drop("shutdown")

    def take_frame(self, frame: Frame) -> None:
        """A decoded image, already on this node's callback group (its own image subscription)."""
        if self.counts_images:
            self.stats.on_received()
        use_torch_threads(self.torch_threads)
        self.on_frame(frame)

    def _drain_frames(self) -> None:
        """Frame guard-condition callback (the node's callback group): hand each queued frame to ``on_frame``,
        finishing the results that came meanwhile after each (a backlog of images must not hold results back)."""
        use_torch_threads(self.torch_threads)
        while True:
            with self._frames_lock:
                if not self._frames:
                    return
                frame = self._frames.popleft()
            self.on_frame(frame)
            self._drain_results()

    def on_frame(self, frame: Frame) -> None:
        """One decoded image, on the node's thread (the subclasses' image handler)."""
        raise NotImplementedError

    def on_bad_image(self, cause: str, error: ImageConversionError) -> None:
        """An image that could not be decoded: counted per cause, logged once per cause."""
        if self.counts_images:
            self.stats.on_received()
        if self.stats.on_bad_input(cause):
            self.get_logger().warning(
                f"dropping malformed image ({cause}): {error} (logged once per cause; counted on /diagnostics)"
            )

    def start_frame(self, frame: Frame, received_ms: float | None = None) -> FrameClock:
        """Start timing ``frame``; ``received_ms``: when the node had all it needs (default: the image)."""
        return FrameClock(
            frame.stamp_ns,
            frame.received_ms if received_ms is None else received_ms,
            frame.transport_ms,
            frame.received_ms,
        )

    def frame_published(self, clock: FrameClock) -> None:
        """The frame's output was published: record its timing and latency."""
        timing = clock.timing(now_ms())
        self.stats.on_processed(timing.latency_ms)
        self.stats.timing.add(timing)

    def drop(self, cause: str, detail: str = "") -> None:
        """Count a dropped frame and log the first one of each cause."""
        if self.stats.on_dropped(cause):
            self.get_logger().info(
                f"dropped a frame ({cause}){': ' + detail if detail else ''} "
                "(logged once per cause; counted on /diagnostics)"
            )

    def run_model(
        self,
        carry: Any,
        on_output: Callable[[Any], None],
        on_failure: Callable[[], None] | None = None,
        clock: FrameClock | None = None,
    ) -> None:
        """Submit ``carry`` to this node's model and call ``on_output(output)`` when it is done.

        Drops (queue policy), shutdown and model errors are counted, never raised into the executor; then
        ``on_failure()`` runs (if given) so ordered consumers can skip the frame. ``clock`` gets the
        submission time (``carry`` is pre-processed by now) and the runtime's start / finish times.
        """
        if clock is not None:
            clock.preprocessed_ms = now_ms()
        future = self.runtime.submit(self.model, carry)
        future.add_done_callback(lambda done: self._hand_back(done, on_output, on_failure, clock))

    def _hand_back(
        self,
        future: Future,
        on_output: Callable[[Any], None],
        on_failure: Callable[[], None] | None,
        clock: FrameClock | None = None,
    ) -> None:
        """Done-callback, on whichever thread resolved the future: queue the result, wake the node's thread."""
        if clock is not None and clock.preprocessed_ms is not None:
            times = frame_times(future)
            started, finished = clamp_runtime_times(
                clock.preprocessed_ms,
                None if times is None else times.started_sec * 1000.0,
                None if times is None else times.finished_sec * 1000.0,
                now_ms(),
            )
            clock.started_ms, clock.finished_ms = started, finished
        with self._results_lock:
            self._results.append((future, on_output, on_failure))
        try:
            self._results_ready.trigger()
        except Exception:  # noqa: BLE001 - rclpy raises its own handle errors once the node is destroyed
            self.drop("shutdown")

    def _drain_results(self) -> None:
        """Guard-condition callback (the ROS executor's thread): post-process and publish finished frames."""
        use_torch_threads(self.torch_threads)
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
        """Timer: drain results and handed-off images whose wake-up never came, so a lost trigger delays a
        frame, never loses it."""
        with self._frames_lock:
            frames = len(self._frames)
        waiting = self.pending_results() + frames
        if waiting == 0:
            return
        self.rescued_results += waiting
        if self.rescued_results == waiting:
            self.get_logger().info(
                f"the {RESULT_BACKSTOP_SEC:.1f} s backstop found {waiting} finished frame(s) / image(s) not yet "
                "drained (a guard-condition wake-up lost or still pending); drained now, counted in "
                "rescued_results (logged once)"
            )
        self._drain_frames()
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
