"""sensor_msgs/CompressedImage (``jpeg``, ``png``) <-> RGB ``uint8[H, W, 3]``, with Pillow. No rclpy here.

``format`` is read the way image_transport's ``compressed`` plugin writes it (``"jpeg"``, ``"png"``, or
``"bgr8; jpeg compressed bgr8"``): the codec is the word ``jpeg`` / ``jpg`` / ``png`` in it; an empty format
falls back to the data's magic bytes. The pixels are always decoded to RGB (JPEG and PNG store RGB, whatever
the raw encoding was). Every failure raises :class:`~multidnn_sched.exceptions.ImageConversionError` with a
``cause`` from :data:`COMPRESSED_DECODE_CAUSES`, so a node counts it as a bad input.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from multidnn_sched.exceptions import ImageConversionError

COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")
"""Codecs a ``CompressedImage`` may use."""

COMPRESSED_DECODE_CAUSES: tuple[str, ...] = ("unknown_format", "bad_compressed", "zero_size", "too_large")
"""Values of ``ImageConversionError.cause`` raised by :func:`compressed_msg_to_rgb`."""

MAX_COMPRESSED_PIXELS = 8192 * 8192
"""Largest decoded image accepted (a corrupt or hostile header must not allocate gigabytes)."""

JPEG_QUALITY = 90
"""Default JPEG quality of :func:`rgb_to_compressed_msg` (image_transport's default is 95; 90 is ~35 % smaller)."""

_MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG": "png"}


def _error(cause: str, message: str) -> ImageConversionError:
    error = ImageConversionError(message)
    error.cause = cause  # type: ignore[attr-defined]
    return error


def compressed_codec(format_text: str, data: bytes) -> str:
    """``"jpeg"`` or ``"png"`` from a ``CompressedImage.format`` (or, if it names none, the magic bytes).

    Raises:
        ImageConversionError: ``cause="unknown_format"``.
    """
    words = format_text.lower().replace(";", " ").split()
    for word in reversed(words):  # "bgr8; jpeg compressed bgr8": the codec word
        if word in ("jpeg", "jpg"):
            return "jpeg"
        if word == "png":
            return "png"
    if not words:
        for magic, codec in _MAGIC.items():
            if data.startswith(magic):
                return codec
    raise _error("unknown_format", f"expected CompressedImage format naming jpeg or png, got {format_text!r}")


def compressed_msg_to_rgb(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/msg/CompressedImage`` (rclpy or rosbags message) to RGB ``uint8[H, W, 3]``.

    Raises:
        ImageConversionError: ``cause`` ``unknown_format``, ``zero_size`` (no data), ``bad_compressed``
            (Pillow cannot decode it, or the codec differs from ``format``) or ``too_large``.
    """
    data = msg.data
    return decode_compressed(str(msg.format), data.tobytes() if isinstance(data, np.ndarray) else bytes(data))


def decode_compressed(format_text: str, data: bytes) -> np.ndarray:
    """JPEG / PNG bytes -> RGB ``uint8[H, W, 3]`` (a fresh array); errors as :func:`compressed_msg_to_rgb`."""
    from PIL import Image as PilImage
    from PIL import UnidentifiedImageError

    codec = compressed_codec(format_text, data)
    if not data:
        raise _error("zero_size", f"expected {codec} data, got an empty CompressedImage")
    try:
        with PilImage.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_COMPRESSED_PIXELS:
                raise _error("too_large", f"expected at most {MAX_COMPRESSED_PIXELS} pixels, got {width}x{height}")
            found = (image.format or "").lower()
            if found != codec:
                raise _error(
                    "bad_compressed", f"expected {codec} data (format {format_text!r}), got {found or 'unknown'}"
                )
            image.draft("RGB", (width, height))  # JPEG: decode straight to RGB
            rgb = image.convert("RGB")
            rgb.load()
    except ImageConversionError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:  # Pillow's decode failures
        raise _error("bad_compressed", f"expected decodable {codec} data ({len(data)} bytes), got: {error}") from None
    return np.asarray(rgb, dtype=np.uint8).copy()


def encode_rgb(array: np.ndarray, codec: str = "jpeg", quality: int = JPEG_QUALITY) -> bytes:
    """RGB ``uint8[H, W, 3]`` -> JPEG / PNG bytes.

    Raises:
        ImageConversionError: ``cause="unknown_format"`` for a codec outside :data:`COMPRESSED_FORMATS`,
            ``"bad_shape"`` for anything but ``uint8[H, W, 3]``.
    """
    from PIL import Image as PilImage

    if codec not in COMPRESSED_FORMATS:
        raise _error("unknown_format", f"expected codec one of {', '.join(COMPRESSED_FORMATS)}, got {codec!r}")
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or array.size == 0:
        raise _error("bad_shape", f"expected RGB uint8[H, W, 3], got {array.dtype}{list(array.shape)}")
    buffer = io.BytesIO()
    image = PilImage.fromarray(np.ascontiguousarray(array), "RGB")
    if codec == "jpeg":
        image.save(buffer, "JPEG", quality=int(quality))
    else:
        image.save(buffer, "PNG", compress_level=1)  # fast; PNG is lossless at every level
    return buffer.getvalue()


def rgb_to_compressed_msg(
    array: np.ndarray, codec: str = "jpeg", header: Any = None, quality: int = JPEG_QUALITY
) -> Any:
    """Encode RGB ``uint8[H, W, 3]`` as an rclpy ``sensor_msgs/msg/CompressedImage`` (``format`` = ``codec``);
    errors as :func:`encode_rgb`."""
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = codec
    msg.data = encode_rgb(array, codec, quality)
    return msg
