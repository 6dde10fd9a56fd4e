"""The message codecs, as the ROS nodes import them (they live in :mod:`multidnn_sched.msgs.conversions`, which
the scenes' bag writer uses too without depending on the ROS package)."""

from multidnn_sched.msgs.conversions import (  # noqa: F401 - re-exported
    BYTES_PER_PIXEL,
    DECODE_CAUSES,
    ENCODE_CAUSES,
    Detections,
    detections_to_msg,
    image_msg_to_numpy,
    mono_to_rgb,
    msg_to_detections,
    numpy_to_image_msg,
)
