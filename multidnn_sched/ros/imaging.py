"""sensor_msgs/Image -> RGB ``uint8[H, W, 3]`` for the networks, via :mod:`multidnn_sched.ros.conversions`.

``conversions.image_msg_to_numpy`` decodes (encodings, padded rows, validation with a ``cause``) to RGB for
colour encodings and to one channel for mono8 / mono16; this module brings the mono ones to RGB too.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from multidnn_sched.ros.conversions import image_msg_to_numpy, mono_to_rgb


def image_to_rgb(msg: Image) -> np.ndarray:
    """Decode ``msg`` (rgb8, bgr8, rgba8, bgra8, mono8, mono16; padded rows) to RGB ``uint8[H, W, 3]``.

    Raises:
        ImageConversionError: with ``.cause`` in ``unknown_encoding``, ``bad_step``, ``zero_size``,
            ``short_data``.
    """
    array = image_msg_to_numpy(msg)
    return mono_to_rgb(array) if array.ndim == 2 else array
