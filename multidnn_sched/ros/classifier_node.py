"""``classifier`` node: attributes of tracked objects, or one label per frame.

* ``mode: objects`` (default): ``image`` + ``tracks`` -> ``classified`` (``Detection2DArray``): the tracks,
  each with a second hypothesis ``results[1]`` = (attribute name, probability).
* ``mode: full_frame``: ``image`` -> ``classification`` (``vision_msgs/Classification``), hypotheses sorted by
  decreasing probability.

Output headers are the source image's header.
"""

from __future__ import annotations

import numpy as np
import torch
from rclpy.context import Context
from rclpy.parameter import Parameter
from std_msgs.msg import Header
from vision_msgs.msg import Classification, Detection2DArray, ObjectHypothesis, ObjectHypothesisWithPose

from multidnn_sched.ros.common import OUTPUT_QOS_DEPTH, FrameClock, PerceptionNode, now_ms, stamp_ns
from multidnn_sched.ros.conversions import msg_to_detections
from multidnn_sched.ros.image_input import Frame
from multidnn_sched.ros.params import CLASSIFIER_PARAMS
from multidnn_sched.ros.runtime import ModelRuntime
from multidnn_sched.ros.stats import StampPairer
from multidnn_sched.ros.tasks import CropTask


def softmax(logits: object) -> np.ndarray:
    """Row-wise softmax of ``logits[N, K]`` (Tensor or array) as ``float32[N, K]``."""
    tensor = logits if isinstance(logits, torch.Tensor) else torch.as_tensor(np.asarray(logits))
    return torch.softmax(tensor.detach().float().cpu(), dim=-1).numpy()


class ClassifierNode(PerceptionNode):
    """Classifies tracked objects (or whole frames).

    Args:
        runtime: the model runtime (``"classifier"`` model).
        task: crop pre-processing and label names.
        context: rclpy context.
        parameter_overrides: start-up parameter values.
        node_name: ROS node name.
        subscribe_image: subscribe to the images itself (``False``: the container's shared input).
    """

    def __init__(
        self,
        runtime: ModelRuntime,
        task: CropTask,
        context: Context | None = None,
        parameter_overrides: list[Parameter] | None = None,
        node_name: str = "classifier",
        subscribe_image: bool = True,
    ) -> None:
        super().__init__(
            node_name, "classifier", CLASSIFIER_PARAMS, runtime, context, parameter_overrides, subscribe_image
        )
        self._task = task
        self._pairer = StampPairer(on_evict=lambda stamp: self.drop("no_image", f"stamp {stamp} ns"))
        self.full_frame = self.values["mode"] == "full_frame"
        self.counts_images = self.full_frame
        if self.full_frame:
            self.publisher = self.create_publisher(Classification, "classification", OUTPUT_QOS_DEPTH)
        else:
            self.publisher = self.create_publisher(Detection2DArray, "classified", OUTPUT_QOS_DEPTH)
            self.tracks_subscription = self.create_subscription(
                Detection2DArray,
                "tracks",
                self._on_tracks,
                OUTPUT_QOS_DEPTH,
                callback_group=self.callback_group,
            )

    def on_frame(self, frame: Frame) -> None:
        if self.full_frame:
            self._classify_frame(frame)
            return
        tracks = self._pairer.add_image(frame.stamp_ns, frame)
        if tracks is not None:
            self._classify_objects(frame, tracks)  # type: ignore[arg-type]

    def _on_tracks(self, msg: Detection2DArray) -> None:
        self.stats.on_received()
        frame = self._pairer.add_detections(stamp_ns(msg.header.stamp), msg)
        if frame is not None:
            self._classify_objects(frame, msg)  # type: ignore[arg-type]

    def _classify_frame(self, frame: Frame) -> None:
        clock = self.start_frame(frame)
        header = frame.header

        def publish(logits: object) -> None:
            probs = softmax(logits)[0]
            out = Classification(header=header)
            for k in np.argsort(-probs):
                out.results.append(ObjectHypothesis(class_id=self._label(int(k)), score=float(probs[k])))
            clock.postprocessed_ms = now_ms()
            self.publisher.publish(out)
            self.frame_published(clock)

        self.run_model(self._task.full_frame(frame.rgb), publish, clock=clock)

    def _classify_objects(self, frame: Frame, tracks: Detection2DArray) -> None:
        clock = self.start_frame(frame, now_ms())
        header = frame.header
        parsed = msg_to_detections(tracks)
        order = np.argsort(-parsed.scores, kind="stable")[: int(self.values["max_objects"])]
        if len(order) == 0:
            self._publish_objects(header, tracks, {}, clock)
            return

        def publish(logits: object) -> None:
            probs = softmax(logits)
            labels = {
                int(i): (self._label(int(np.argmax(p))), float(np.max(p)))
                for i, p in zip(order, probs, strict=True)
            }
            self._publish_objects(header, tracks, labels, clock)

        self.run_model(self._task.preprocess(frame.rgb, parsed.boxes_xyxy[order]), publish, clock=clock)

    def _publish_objects(
        self, header: Header, tracks: Detection2DArray, labels: dict[int, tuple[str, float]], clock: FrameClock
    ) -> None:
        out = Detection2DArray(header=header)
        for i, det in enumerate(tracks.detections):
            det.header = header
            if i in labels:
                hyp = ObjectHypothesisWithPose()
                hyp.hypothesis.class_id, hyp.hypothesis.score = labels[i]
                det.results.append(hyp)
            out.detections.append(det)
        clock.postprocessed_ms = now_ms()
        self.publisher.publish(out)
        self.frame_published(clock)

    def _label(self, index: int) -> str:
        labels = self._task.labels
        return labels[index] if 0 <= index < len(labels) else str(index)
