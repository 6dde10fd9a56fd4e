"""``tracker`` node: ``image`` + ``detections`` -> ``tracks`` (``Detection2DArray``, track id in ``id``).

Images and detections are paired by header stamp; the appearance embedder runs on crops of the detections
and the tracker is stepped in frame order (:class:`~multidnn_sched.ros.stats.InOrder`). The output header is
the source image's header.
"""

from __future__ import annotations

import threading

import numpy as np
from rclpy.context import Context
from rclpy.parameter import Parameter
from vision_msgs.msg import Detection2DArray

from multidnn_sched.models.detector import Detections
from multidnn_sched.ros.common import OUTPUT_QOS_DEPTH, PerceptionNode, now_ms, stamp_ns
from multidnn_sched.ros.conversions import detections_to_msg, msg_to_detections
from multidnn_sched.ros.image_input import Frame
from multidnn_sched.ros.params import TRACKER_PARAMS, ParamValue
from multidnn_sched.ros.runtime import ModelRuntime
from multidnn_sched.ros.stats import InOrder, StampPairer
from multidnn_sched.ros.tasks import CropTask, TrackerFactory, TrackerLike

TRACKER_SETTINGS = (
    "max_age_frames",
    "min_hits",
    "max_cosine_distance",
    "max_iou_distance",
    "appearance_weight",
)
"""Parameters handed to the tracker factory (a change restarts the tracker state)."""


class TrackerNode(PerceptionNode):
    """Tracks detected objects across frames.

    Args:
        runtime: the model runtime (``"embedder"`` model).
        task: crop pre-processing of the embedder.
        make_tracker: tracker parameters -> fresh tracker.
        class_names: class index -> name (for reading detections back).
        context: rclpy context.
        parameter_overrides: start-up parameter values.
        node_name: ROS node name.
        subscribe_image: subscribe to the images itself (``False``: the container's shared input).
    """

    def __init__(
        self,
        runtime: ModelRuntime,
        task: CropTask,
        make_tracker: TrackerFactory,
        class_names: list[str] | tuple[str, ...],
        context: Context | None = None,
        parameter_overrides: list[Parameter] | None = None,
        node_name: str = "tracker",
        subscribe_image: bool = True,
    ) -> None:
        super().__init__(
            node_name, "embedder", TRACKER_PARAMS, runtime, context, parameter_overrides, subscribe_image
        )
        self._task = task
        self._make_tracker = make_tracker
        self._class_names = list(class_names)
        self._tracker_lock = threading.Lock()
        self._tracker: TrackerLike = make_tracker(self._tracker_settings())
        self._order = InOrder()
        self._pairer = StampPairer(on_evict=lambda stamp: self.drop("no_image", f"stamp {stamp} ns"))
        self._last_stamp_ns = -1
        self.publisher = self.create_publisher(Detection2DArray, "tracks", OUTPUT_QOS_DEPTH)
        self.detections_subscription = self.create_subscription(
            Detection2DArray,
            "detections",
            self._on_detections,
            OUTPUT_QOS_DEPTH,
            callback_group=self.callback_group,
        )

    def _tracker_settings(self) -> dict[str, ParamValue]:
        return {name: self.values[name] for name in TRACKER_SETTINGS}

    def _on_set_parameters(self, params: list[Parameter]):  # noqa: ANN202 - same as the base
        result = super()._on_set_parameters(params)
        if result.successful and any(p.name in TRACKER_SETTINGS for p in params):
            with self._tracker_lock:
                self._tracker = self._make_tracker(self._tracker_settings())
        return result

    def on_frame(self, frame: Frame) -> None:
        waiting = self._pairer.add_image(frame.stamp_ns, frame)
        if waiting is not None:
            self._process(frame, waiting)  # type: ignore[arg-type]

    def _on_detections(self, msg: Detection2DArray) -> None:
        self.stats.on_received()
        frame = self._pairer.add_detections(stamp_ns(msg.header.stamp), msg)
        if frame is not None:
            self._process(frame, msg)  # type: ignore[arg-type]

    def _process(self, frame: Frame, detections_msg: Detection2DArray) -> None:
        clock = self.start_frame(frame, now_ms())
        parsed = msg_to_detections(detections_msg)
        detections = Detections(parsed.boxes_xyxy, parsed.scores, parsed.labels(self._class_names))
        header = frame.header
        stamp = frame.stamp_ns
        ticket = self._order.ticket()

        def step(embeddings: np.ndarray) -> None:
            with self._tracker_lock:
                if stamp <= self._last_stamp_ns:
                    self.drop("out_of_order")
                    return
                self._last_stamp_ns = stamp
                tracks = self._tracker.update(detections, embeddings)
            boxes = np.array([t.box_xyxy for t in tracks], np.float32).reshape(-1, 4)
            scores = np.array([t.score for t in tracks], np.float32)
            track_labels = np.array([t.label for t in tracks], np.int64)
            msg = detections_to_msg(
                header, boxes, scores, track_labels, self._class_names, [str(t.track_id) for t in tracks]
            )
            clock.postprocessed_ms = now_ms()
            self.publisher.publish(msg)
            self.frame_published(clock)

        if len(detections) == 0:
            self._order.complete(ticket, lambda: step(np.zeros((0, 0), np.float32)))
            return
        self.run_model(
            self._task.preprocess(frame.rgb, detections.boxes_xyxy),
            lambda out: self._order.complete(ticket, lambda: step(_to_numpy(out))),
            lambda: self._order.complete(ticket, None),
            clock=clock,
        )


def _to_numpy(output: object) -> np.ndarray:
    detach = getattr(output, "detach", None)
    if detach is not None:
        return detach().float().cpu().numpy()
    return np.asarray(output, np.float32)
