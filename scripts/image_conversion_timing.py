"""Image input cost per frame: raw decode, JPEG decode, detector resize, at 640x480, 1280x720 and 1920x1080.

    .venv/bin/python scripts/image_conversion_timing.py [--runs 20] [--threads 1]

Prints one JSON line per size with median milliseconds of: ``bgr8_to_rgb`` (``sensor_msgs/Image`` bgr8 ->
RGB array), ``jpeg_decode`` (``CompressedImage`` -> RGB), ``resize_torch`` (the detector's antialiased
bilinear resize in torch, float), ``resize_pil`` (Pillow's antialiased bilinear on uint8) and
``detector_preprocess`` (what the detector node runs: resize + normalise), and the largest pixel difference
between the two resizes. Indicative on a shared machine; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from multidnn_sched.models.detector import DETECTOR_INPUT_HW, detector_preprocess
from multidnn_sched.msgs.compressed import decode_compressed, encode_rgb
from multidnn_sched.msgs.conversions import image_msg_to_numpy, numpy_to_image_msg
from multidnn_sched.scenes.generator import SceneConfig, SceneGenerator

SIZES = ((640, 480), (1280, 720), (1920, 1080))


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _resize_torch(rgb: np.ndarray) -> torch.Tensor:
    chw = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float()
    out = F.interpolate(chw, size=DETECTOR_INPUT_HW, mode="bilinear", align_corners=False, antialias=True)
    return out.round().clamp(0, 255).to(torch.uint8)


def _resize_pil(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    height, width = DETECTOR_INPUT_HW
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for width, height in SIZES:
        frame = next(iter(SceneGenerator(SceneConfig(width=width, height=height), seed=0).frames(1))).image
        bgr = numpy_to_image_msg(frame[..., ::-1].copy(), "rgb8")
        bgr.encoding = "bgr8"
        jpeg = encode_rgb(frame, "jpeg")
        torch_out = _resize_torch(frame)[0].permute(1, 2, 0).numpy().astype(int)
        pil_out = _resize_pil(frame).astype(int)
        row = {
            "size": f"{width}x{height}",
            "bgr8_to_rgb_ms": _median_ms(lambda bgr=bgr: image_msg_to_numpy(bgr), args.runs),
            "jpeg_decode_ms": _median_ms(lambda jpeg=jpeg: decode_compressed("jpeg", jpeg), args.runs),
            "jpeg_kb": len(jpeg) / 1024,
            "resize_torch_ms": _median_ms(lambda frame=frame: _resize_torch(frame), args.runs),
            "resize_pil_ms": _median_ms(lambda frame=frame: _resize_pil(frame), args.runs),
            "detector_preprocess_ms": _median_ms(lambda frame=frame: detector_preprocess(frame), args.runs),
            "resize_max_abs_diff": int(np.abs(torch_out - pil_out).max()),
            "resize_mean_abs_diff": float(np.abs(torch_out - pil_out).mean()),
        }
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
