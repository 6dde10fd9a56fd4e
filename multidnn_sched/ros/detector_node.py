"""``detector`` node: ``sensor_msgs/Image`` (``image``, or ``CompressedImage`` on ``<image>/compressed``) ->
``vision_msgs/Detection2DArray`` (``detections``).

The output header is the source image's header.
"""

from __future__ import annotations

from rclpy.context import Context
from rclpy.parameter import Parameter
from vision_msgs.msg import Detection2DArray

from multidnn_sched.ros.common import OUTPUT_QOS_DEPTH, PerceptionNode, now_ms
from multidnn_sched.ros.conversions import detections_to_msg
from multidnn_sched.ros.image_input import Frame
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
        subscribe_image: subscribe to the images itself (``False``: the container's shared input).
    """

    def __init__(
        self,
        runtime: ModelRuntime,
        task: DetectorTask,
        context: Context | None = None,
        parameter_overrides: list[Parameter] | None = None,
        node_name: str = "detector",
        subscribe_image: bool = True,
    ) -> None:
        super().__init__(
            node_name, "detector", DETECTOR_PARAMS, runtime, context, parameter_overrides, subscribe_image
        )
        self._task = task
        self.counts_images = True
        self.publisher = self.create_publisher(Detection2DArray, "detections", OUTPUT_QOS_DEPTH)

    def on_frame(self, frame: Frame) -> None:
        clock = self.start_frame(frame)
        height, width = frame.rgb.shape[:2]
        header = frame.header

        def publish(output: object) -> None:
            detections = self._task.postprocess(
                output,
                float(self.values["score_threshold"]),
                float(self.values["nms_iou_threshold"]),
                (width, height),
                int(self.values["max_detections"]),
            )
            msg = detections_to_msg(
                header, detections.boxes_xyxy, detections.scores, detections.labels, self._task.class_names
            )
            clock.postprocessed_ms = now_ms()
            self.publisher.publish(msg)
            self.frame_published(clock)

        self.run_model(self._task.preprocess(frame.rgb), publish, clock=clock)
