"""sensor_msgs/Image <-> numpy and vision_msgs/Detection2DArray <-> arrays. Pure numpy + message classes.

Image layout on the numpy side:

- Colour encodings (``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``) decode to RGB ``uint8[H, W, 3]`` (channel order
  fixed up, alpha dropped). Encoding takes RGB ``uint8[H, W, 3]`` (alpha written as 255) or, for the two alpha
  encodings, RGBA ``uint8[H, W, 4]``.
- Mono encodings keep one channel and their depth so nothing is lost: ``mono8`` <-> ``uint8[H, W]``,
  ``mono16`` <-> ``uint16[H, W]`` in native byte order (``is_bigendian`` honoured on decode; encode writes
  little-endian). :func:`mono_to_rgb` turns either into RGB ``uint8[H, W, 3]`` (``mono16`` keeps its high byte).

Rows may be padded: decoding honours ``step`` (bytes per row, ``>= width * bytes_per_pixel``). Decoded arrays are
copies, never views into the message buffer.

Every decoding failure raises :class:`~multidnn_sched.exceptions.ImageConversionError` whose ``cause`` attribute
is one of :data:`DECODE_CAUSES`, so a node can count dropped frames per cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from multidnn_sched.exceptions import ImageConversionError

BYTES_PER_PIXEL: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2}
"""Supported encodings and their bytes per pixel."""

DECODE_CAUSES: tuple[str, ...] = ("unknown_encoding", "bad_step", "zero_size", "short_data")
"""Values of ``ImageConversionError.cause`` raised by :func:`image_msg_to_numpy`."""

ENCODE_CAUSES: tuple[str, ...] = ("unknown_encoding", "zero_size", "bad_shape")
"""Values of ``ImageConversionError.cause`` raised by :func:`numpy_to_image_msg`."""


def _error(cause: str, message: str) -> ImageConversionError:
    error = ImageConversionError(message)
    error.cause = cause  # type: ignore[attr-defined]
    return error


def _as_bytes_array(data: Any) -> np.ndarray:
    """The message's ``data`` (array.array, bytes, numpy, list) as a flat uint8 array, without copying buffers."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else data.astype(np.uint8).reshape(-1)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError:  # a list of ints: no buffer protocol
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _reorder_channels(pixels: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """New C-contiguous uint8[H, W, len(order)] with ``out[..., i] = pixels[..., order[i]]``.

    Per-channel assignment: 0.5 ms for 640x480 BGR->RGB, against 2.6 ms for a reversed-stride copy and 6 ms for
    fancy indexing (measured on the 2-core development machine, indicative).
    """
    out = np.empty((*pixels.shape[:2], len(order)), dtype=np.uint8)
    if order == tuple(range(len(order))) and pixels.shape[2] == len(order):
        out[...] = pixels
        return out
    for i, src in enumerate(order):
        out[..., i] = pixels[..., src]
    return out


def image_msg_to_numpy(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/msg/Image`` (rclpy or rosbags message object).

    Args:
        msg: The image; ``encoding`` one of :data:`BYTES_PER_PIXEL`.

    Returns:
        RGB ``uint8[H, W, 3]`` for colour encodings; ``uint8[H, W]`` for mono8; ``uint16[H, W]`` for mono16.

    Raises:
        ImageConversionError: ``cause`` ``"unknown_encoding"``, ``"zero_size"`` (width or height 0),
            ``"bad_step"`` (step shorter than a row of pixels, or odd for mono16) or ``"short_data"`` (fewer
            than ``step * height`` bytes).
    """
    encoding = str(msg.encoding)
    bpp = BYTES_PER_PIXEL.get(encoding)
    if bpp is None:
        raise _error("unknown_encoding",
                     f"expected encoding one of {', '.join(BYTES_PER_PIXEL)}, got {encoding!r}")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise _error("zero_size", f"expected a non-empty image, got {width}x{height} {encoding}")
    row_bytes = width * bpp
    if step < row_bytes or step % (2 if encoding == "mono16" else 1):
        raise _error("bad_step", f"expected step >= {row_bytes} bytes (width {width} x {bpp} B/pixel"
                     f"{', even' if encoding == 'mono16' else ''}) for {encoding}, got {step}")
    data = _as_bytes_array(msg.data)
    needed = step * height
    if data.size < needed:
        raise _error("short_data", f"expected >= {needed} bytes (step {step} x height {height}) for "
                     f"{width}x{height} {encoding}, got {data.size}")
    rows = data[:needed].reshape(height, step)[:, :row_bytes]
    if encoding == "mono8":
        return rows.copy()
    if encoding == "mono16":
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        return np.ascontiguousarray(rows).view(dtype).reshape(height, width).astype(np.uint16)
    pixels = rows.reshape(height, width, bpp)
    # Always a fresh array, never a view into the message buffer.
    return _reorder_channels(pixels, (2, 1, 0) if encoding.startswith("bgr") else (0, 1, 2))


def mono_to_rgb(array: np.ndarray) -> np.ndarray:
    """Grey ``uint8[H, W]`` or ``uint16[H, W]`` -> RGB ``uint8[H, W, 3]`` (uint16 keeps its high byte: v >> 8)."""
    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise _error("bad_shape", f"expected uint8[H, W] or uint16[H, W], got {array.dtype}{list(array.shape)}")
    grey = (array >> 8).astype(np.uint8) if array.dtype == np.uint16 else array
    return np.repeat(grey[:, :, None], 3, axis=2)


def numpy_to_image_msg(array: np.ndarray, encoding: str, header: Any = None) -> Any:
    """Encode an array as a ``sensor_msgs/msg/Image`` (unpadded rows, little-endian).

    Args:
        array: RGB ``uint8[H, W, 3]`` for colour encodings (or RGBA ``uint8[H, W, 4]`` for rgba8/bgra8);
            ``uint8[H, W]`` for mono8; ``uint16[H, W]`` for mono16.
        encoding: One of :data:`BYTES_PER_PIXEL`.
        header: ``std_msgs/msg/Header`` to copy in; a default header when None.

    Returns:
        The Image message.

    Raises:
        ImageConversionError: ``cause`` ``"unknown_encoding"``, ``"zero_size"`` or ``"bad_shape"`` (shape or
            dtype does not match the encoding).
    """
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    bpp = BYTES_PER_PIXEL.get(encoding)
    if bpp is None:
        raise _error("unknown_encoding",
                     f"expected encoding one of {', '.join(BYTES_PER_PIXEL)}, got {encoding!r}")
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1 and encoding.startswith("mono"):
        array = array[:, :, 0]
    if encoding.startswith("mono"):
        want_dtype = np.uint16 if encoding == "mono16" else np.uint8
        ok = array.ndim == 2 and array.dtype == want_dtype
        expected = f"{np.dtype(want_dtype)}[H, W]"
    else:
        channels = (3, 4) if bpp == 4 else (3,)
        ok = array.ndim == 3 and array.shape[2] in channels and array.dtype == np.uint8
        expected = "uint8[H, W, 3] RGB" + (" or uint8[H, W, 4] RGBA" if bpp == 4 else "")
    if not ok:
        raise _error("bad_shape", f"{encoding}: expected {expected}, got {array.dtype}{list(array.shape)}")
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise _error("zero_size", f"{encoding}: expected a non-empty image, got {width}x{height}")
    if encoding == "mono16":
        payload = np.ascontiguousarray(array, dtype="<u2")
    elif encoding == "mono8":
        payload = np.ascontiguousarray(array)
    else:
        order = {"rgb8": (0, 1, 2), "bgr8": (2, 1, 0), "rgba8": (0, 1, 2, 3), "bgra8": (2, 1, 0, 3)}[encoding]
        if array.shape[2] == 3 and bpp == 4:  # RGB in, alpha out: fill alpha with 255
            payload = np.full((height, width, 4), 255, dtype=np.uint8)
            payload[..., :3] = _reorder_channels(array, order[:3])
        else:
            payload = _reorder_channels(array, order)
    msg = Image()
    msg.header = header if header is not None else Header()
    msg.height, msg.width = int(height), int(width)
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(width * bpp)
    msg.data = payload.tobytes()
    return msg


# ------------------------------------------------------------------------------------------------ detections
@dataclass
class Detections:
    """Arrays read from a ``Detection2DArray``.

    Attributes:
        boxes_xyxy: ``float32[N, 4]`` (x1, y1, x2, y2), pixels.
        scores: ``float32[N]``, score of the first hypothesis (0 when a detection has none).
        class_ids: First hypothesis' ``class_id`` per detection (``""`` when it has none).
        ids: ``Detection2D.id`` per detection (track id as text, or ``""``).
        hypotheses: All ``(class_id, score)`` pairs per detection, in message order.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    class_ids: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    hypotheses: list[list[tuple[str, float]]] = field(default_factory=list)

    def labels(self, class_names: Sequence[str]) -> np.ndarray:
        """``int64[N]`` index of each first-hypothesis class in ``class_names``; -1 where it is not listed."""
        index = {name: i for i, name in enumerate(class_names)}
        return np.array([index.get(c, -1) for c in self.class_ids], dtype=np.int64)


def detections_to_msg(
    header: Any,
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    ids: Sequence[str | int] | None = None,
) -> Any:
    """Build a ``vision_msgs/msg/Detection2DArray``: one Detection2D per box, one hypothesis (class name, score).

    Args:
        header: ``std_msgs/msg/Header`` for the array and every detection (the source image's header).
        boxes_xyxy: ``[N, 4]`` (x1, y1, x2, y2), pixels.
        scores: ``[N]`` confidences.
        labels: ``[N]`` indices into ``class_names``.
        class_names: Class name per label index.
        ids: Optional ``[N]`` object/track ids written to ``Detection2D.id`` as text.

    Returns:
        The message; ``bbox.center`` is the box centre, ``size_x/size_y`` its width/height.

    Raises:
        ValueError: Lengths disagree or a label is outside ``class_names``.
    """
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) if len(boxes_xyxy) else np.zeros((0, 4))
    score_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    label_arr = np.asarray(labels).reshape(-1)
    n = boxes.shape[0]
    if score_arr.size != n or label_arr.size != n or (ids is not None and len(ids) != n):
        raise ValueError(f"detections_to_msg: expected {n} scores, labels and ids for {n} boxes, got "
                         f"{score_arr.size} scores, {label_arr.size} labels, "
                         f"{'no' if ids is None else len(ids)} ids")
    bad = [int(v) for v in label_arr if not 0 <= int(v) < len(class_names)]
    if bad:
        raise ValueError(f"detections_to_msg: expected labels in 0..{len(class_names) - 1}, got {bad[:5]}")
    array = Detection2DArray()
    array.header = header
    for i in range(n):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        det = Detection2D()
        det.header = header
        det.id = "" if ids is None else str(ids[i])
        det.bbox.center.position.x = (x1 + x2) / 2.0
        det.bbox.center.position.y = (y1 + y2) / 2.0
        det.bbox.size_x = x2 - x1
        det.bbox.size_y = y2 - y1
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = class_names[int(label_arr[i])]
        hyp.hypothesis.score = float(score_arr[i])
        det.results.append(hyp)
        array.detections.append(det)
    return array


def msg_to_detections(msg: Any) -> Detections:
    """Read a ``vision_msgs/msg/Detection2DArray`` (rclpy or rosbags message) back into arrays.

    Args:
        msg: The message.

    Returns:
        Detections; use ``Detections.labels(class_names)`` for label indices.
    """
    n = len(msg.detections)
    boxes = np.zeros((n, 4), dtype=np.float32)
    scores = np.zeros(n, dtype=np.float32)
    result = Detections(boxes_xyxy=boxes, scores=scores)
    for i, det in enumerate(msg.detections):
        cx, cy = float(det.bbox.center.position.x), float(det.bbox.center.position.y)
        w, h = float(det.bbox.size_x), float(det.bbox.size_y)
        boxes[i] = (cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)
        hyps = [(str(r.hypothesis.class_id), float(r.hypothesis.score)) for r in det.results]
        result.hypotheses.append(hyps)
        result.class_ids.append(hyps[0][0] if hyps else "")
        scores[i] = hyps[0][1] if hyps else 0.0
        result.ids.append(str(det.id))
    return result
