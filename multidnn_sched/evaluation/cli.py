"""``multidnn-evaluate``: task accuracy (mAP, MOTA / IDF1, top-1) of the default models over a scene bag.

Bad input (unreadable / truncated bag, no image topic, no ground truth, bad checkpoint) prints one line naming
the file and the problem and exits with code 2. ``--sanity`` adds a ``sanity`` section (trained models against
trivial baselines on the same frames, see ``multidnn_sched.evaluation.sanity``); a failed gate exits with 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from multidnn_sched.evaluation.evaluate import LabelledFrame, bag_frames, evaluate, generated_frames
from multidnn_sched.evaluation.sanity import sanity_report, sanity_summary
from multidnn_sched.exceptions import BagError, CheckpointError, ConfigError
from multidnn_sched.models.checkpoints import WEIGHTS_DIR
from multidnn_sched.models.zoo import load_default_models
from multidnn_sched.scenes.generator import PROFILES, profile_config

EXIT_BAD_INPUT: int = 2
EXIT_SANITY_FAILED: int = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multidnn-evaluate", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bag", type=Path, help="rosbag2 written by multidnn-scenes (image + ground truth)")
    source.add_argument("--scene-seed", type=int, help="evaluate frames straight from SceneGenerator(seed)")
    parser.add_argument("--profile", choices=PROFILES, default="hard",
                        help="scene profile of --scene-seed frames (default hard; a bag carries its own)")
    parser.add_argument("--frames", type=int, default=None, help="evaluate at most this many frames")
    parser.add_argument("--json", type=Path, default=None, help="write the report here (also printed)")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="weights dir with manifest.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-profile", action="store_true", help="skip solo latency / GMACs figures")
    parser.add_argument("--sanity", action="store_true",
                        help="also score trivial baselines on the same frames and check the gates (JSON 'sanity')")
    return parser


def _summary(report: dict) -> str:
    return (
        f"frames {report['frames']}: detector mAP50 {report['detector']['map50']:.3f} "
        f"mAP {report['detector']['map']:.3f} | tracker MOTA {report['tracker']['mota']:.3f} "
        f"IDF1 {report['tracker']['idf1']:.3f} | classifier top-1 {report['classifier']['top1']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0 on success, 2 on bad input (one error line on stderr, no traceback)."""
    args = build_parser().parse_args(argv)
    try:
        if args.frames is not None and args.frames <= 0:
            raise ConfigError(f"--frames: expected a positive frame count, got {args.frames}")
        if args.bag is not None and not args.bag.exists():
            raise BagError(f"{args.bag}: no such bag (expected a rosbag2 directory or storage file)")

        def frames() -> Iterator[LabelledFrame]:
            if args.bag is not None:
                return bag_frames(args.bag, args.frames)
            count = args.frames if args.frames is not None else 300
            return generated_frames(args.scene_seed, count, profile_config(args.profile))

        report = evaluate(frames(), args.weights, args.device, profile=not args.no_profile)
        if args.sanity:
            report["sanity"] = sanity_report(frames(), load_default_models(args.device, args.weights), args.device)
    except (BagError, CheckpointError, ConfigError) as exc:
        print(f"multidnn-evaluate: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report["source"] = (
        str(args.bag) if args.bag is not None else f"SceneGenerator(seed={args.scene_seed}, profile={args.profile})"
    )
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"multidnn-evaluate: error: {args.json}: cannot write the report: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    print(_summary(report))
    if "sanity" in report:
        print(sanity_summary(report["sanity"]))
        if not report["sanity"]["passed"]:
            return EXIT_SANITY_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
