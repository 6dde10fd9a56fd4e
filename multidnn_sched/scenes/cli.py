"""``multidnn-scenes``: write a synthetic scene sequence as a rosbag2 (and optionally a preview PNG).

Example::

    multidnn-scenes --seed 1234 --frames 300 --out data/scene_seed1234 --preview data/scene_seed1234.png

The default profile is ``hard`` (the evaluation and demo default); ``--profile easy`` gives the plain scenes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from multidnn_sched.exceptions import BagError, ConfigError
from multidnn_sched.scenes.generator import (
    ATTRIBUTES,
    CLASSES,
    PROFILES,
    SceneConfig,
    SceneFrame,
    SceneGenerator,
    profile_config,
)

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``multidnn-scenes``."""
    parser = argparse.ArgumentParser(
        prog="multidnn-scenes",
        description="Render a deterministic synthetic camera sequence (shapes, tracks, attributes) to a rosbag2.",
    )
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument("--frames", type=int, default=300, help="number of frames (default 300)")
    parser.add_argument("--out", type=Path, default=None, help="bag directory (default data/scene_seed<seed>)")
    parser.add_argument("--width", type=int, default=640, help="image width in pixels (default 640)")
    parser.add_argument("--height", type=int, default=480, help="image height in pixels (default 480)")
    parser.add_argument("--rate", type=float, default=15.0, help="frame rate in Hz (default 15)")
    parser.add_argument("--profile", choices=PROFILES, default="hard",
                        help="scene profile: hard (default; clutter, occluders, look-alikes, rim-coloured "
                             "attributes) or easy (solid shapes)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage")
    parser.add_argument(
        "--image-format",
        choices=("raw", "jpeg", "png"),
        default="raw",
        help="raw: sensor_msgs/Image rgb8 on /camera/image_raw (default); jpeg / png: sensor_msgs/CompressedImage "
        "on /camera/image_raw/compressed",
    )
    parser.add_argument("--preview", type=Path, default=None, help="also write frame 0 with GT boxes as a PNG")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _scaled_config(width: int, height: int, rate_hz: float, profile: str = "hard") -> SceneConfig:
    """The profile's world scaled to the image size (object sizes and speeds are defined for 640x480)."""
    return profile_config(profile, width, height, rate_hz)


def write_preview(path: Path, frame: SceneFrame) -> None:
    """Save a frame with its ground-truth boxes and labels drawn on it (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    h, w = frame.image.shape[:2]
    fig = plt.figure(figsize=(w / 100.0, h / 100.0), dpi=100)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(frame.image)
    ax.set_axis_off()
    for obj in frame.objects:
        x1, y1, x2, y2 = obj.box_xyxy
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=1.0))
        label = f"#{obj.track_id} {CLASSES[obj.class_id]} {ATTRIBUTES[obj.attribute_id]} {obj.visible_fraction:.2f}"
        ax.text(x1, max(y1 - 2.0, 8.0), label, color="white", fontsize=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 bad arguments or existing output)."""
    args = build_parser().parse_args(argv)
    out: Path = args.out if args.out is not None else Path("data") / f"scene_seed{args.seed}"
    try:
        if args.frames < 1:
            raise ConfigError(f"--frames: expected >= 1, got {args.frames}")
        config = _scaled_config(args.width, args.height, args.rate, args.profile)
        config.validate()
        if out.exists():
            if not args.overwrite:
                raise BagError(f"{out}: output exists already; pass --overwrite to replace it")
            if not (out / "metadata.yaml").exists():
                raise BagError(f"{out}: exists and is not a rosbag2 directory; refusing to delete it")
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        from multidnn_sched.scenes.bag import bag_info, write_scene_bag

        start = time.perf_counter()
        write_scene_bag(out, config, seed=args.seed, n_frames=args.frames, storage=args.storage,
                        image_format=args.image_format,
                        progress=not args.no_progress)
        elapsed_sec = time.perf_counter() - start
        info = bag_info(out)
        if args.preview is not None:
            first = next(iter(SceneGenerator(config, seed=args.seed).frames(1)))
            write_preview(args.preview, first)
    except (ConfigError, BagError) as exc:
        print(f"multidnn-scenes: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {out} ({args.storage}, {size_mb:.1f} MB) in {elapsed_sec:.1f} s: {args.frames} frames "
          f"{config.width}x{config.height} @ {config.rate_hz:g} Hz, seed {args.seed}, profile {config.profile}, "
          f"{info.duration_sec:.2f} s of data")
    for topic, summary in sorted(info.topics.items()):
        print(f"  {topic}  {summary.msgtype}  x{summary.message_count}")
    if args.preview is not None:
        print(f"preview: {args.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
