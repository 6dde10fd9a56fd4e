"""``detector`` node: ``sensor_msgs/Image`` (``image``) -> ``vision_msgs/Detection2DArray`` (``detections``).

The output header is the source image's header.
"""

from __future__ import annotations

from rclpy.context import Context
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from multidnn_sched.ros.common import OUTPUT_QOS_DEPTH, PerceptionNode, now_ms
from multidnn_sched.ros.conversions import detections_to_msg
from multidnn_sched.ros.params import DETECTOR_PARAMS
from multidnn_sched.ros.runtime import ModelRuntime
from multidnn_sched.ros.tasks import DetectorTask


class DetectorNode(PerceptionNode):
    """Detects objects in every image it receives.

    Args:
        runtime: the model runtime (``"detector"`` model).
        task: detector pre/post-processing.
        context: rclpy context.
        parameter_overrides: start-up parameter values.
        node_name: ROS node name.
    """

    def __init__(
        self,
        runtime: ModelRuntime,
        task: DetectorTask,
        context: Context | None = None,
        parameter_overrides: list[Parameter] | None = None,
        node_name: str = "detector",
    ) -> None:
        super().__init__(node_name, "detector", DETECTOR_PARAMS, runtime, context, parameter_overrides)
        self._task = task
        self.publisher = self.create_publisher(Detection2DArray, "detections", OUTPUT_QOS_DEPTH)
        self.subscription = self.create_subscription(
            Image, "image", self._on_image, self.image_qos(), callback_group=self.callback_group
        )

    def _on_image(self, msg: Image) -> None:
        start_ms = now_ms()
        self.stats.on_received()
        frame = self.decode(msg)
        if frame is None:
            return
        height, width = frame.shape[:2]
        header = msg.header

        def publish(output: object) -> None:
            detections = self._task.postprocess(
                output,
                float(self.values["score_threshold"]),
                float(self.values["nms_iou_threshold"]),
                (width, height),
                int(self.values["max_detections"]),
            )
            self.publisher.publish(
                detections_to_msg(
                    header,
                    detections.boxes_xyxy,
                    detections.scores,
                    detections.labels,
                    self._task.class_names,
                )
            )
            self.stats.on_processed(now_ms() - start_ms)

        self.run_model(self._task.preprocess(frame), publish)
