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
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Classification, Detection2DArray, ObjectHypothesis, ObjectHypothesisWithPose

from multidnn_sched.ros.common import OUTPUT_QOS_DEPTH, PerceptionNode, now_ms, stamp_ns
from multidnn_sched.ros.conversions import msg_to_detections
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
    """

    def __init__(
        self,
        runtime: ModelRuntime,
        task: CropTask,
        context: Context | None = None,
        parameter_overrides: list[Parameter] | None = None,
        node_name: str = "classifier",
    ) -> None:
        super().__init__(node_name, "classifier", CLASSIFIER_PARAMS, runtime, context, parameter_overrides)
        self._task = task
        self._pairer = StampPairer(on_evict=lambda stamp: self.drop("no_image", f"stamp {stamp} ns"))
        self.full_frame = self.values["mode"] == "full_frame"
        self.image_subscription = self.create_subscription(
            Image, "image", self._on_image, self.image_qos(), callback_group=self.callback_group
        )
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

    def _on_image(self, msg: Image) -> None:
        if self.full_frame:
            self._classify_frame(msg)
            return
        waiting = self._pairer.add_image(stamp_ns(msg.header.stamp), msg)
        if waiting is not None:
            tracks, start_ms = waiting
            self._classify_objects(msg, tracks, start_ms)

    def _on_tracks(self, msg: Detection2DArray) -> None:
        self.stats.on_received()
        start_ms = now_ms()
        image = self._pairer.add_detections(stamp_ns(msg.header.stamp), (msg, start_ms))
        if image is not None:
            self._classify_objects(image, msg, start_ms)

    def _classify_frame(self, msg: Image) -> None:
        start_ms = now_ms()
        self.stats.on_received()
        frame = self.decode(msg)
        if frame is None:
            return
        header = msg.header

        def publish(logits: object) -> None:
            probs = softmax(logits)[0]
            out = Classification(header=header)
            for k in np.argsort(-probs):
                out.results.append(ObjectHypothesis(class_id=self._label(int(k)), score=float(probs[k])))
            self.publisher.publish(out)
            self.stats.on_processed(now_ms() - start_ms)

        self.run_model(self._task.full_frame(frame), publish)

    def _classify_objects(self, image_msg: Image, tracks: Detection2DArray, start_ms: float) -> None:
        frame = self.decode(image_msg)
        if frame is None:
            return
        header = image_msg.header
        parsed = msg_to_detections(tracks)
        order = np.argsort(-parsed.scores, kind="stable")[: int(self.values["max_objects"])]
        if len(order) == 0:
            self._publish_objects(header, tracks, {}, start_ms)
            return

        def publish(logits: object) -> None:
            probs = softmax(logits)
            labels = {
                int(i): (self._label(int(np.argmax(p))), float(np.max(p)))
                for i, p in zip(order, probs, strict=True)
            }
            self._publish_objects(header, tracks, labels, start_ms)

        self.run_model(self._task.preprocess(frame, parsed.boxes_xyxy[order]), publish)

    def _publish_objects(
        self, header: Header, tracks: Detection2DArray, labels: dict[int, tuple[str, float]], start_ms: float
    ) -> None:
        out = Detection2DArray(header=header)
        for i, det in enumerate(tracks.detections):
            det.header = header
            if i in labels:
                hyp = ObjectHypothesisWithPose()
                hyp.hypothesis.class_id, hyp.hypothesis.score = labels[i]
                det.results.append(hyp)
            out.detections.append(det)
        self.publisher.publish(out)
        self.stats.on_processed(now_ms() - start_ms)

    def _label(self, index: int) -> str:
        labels = self._task.labels
        return labels[index] if 0 <= index < len(labels) else str(index)
