"""How much IDF1 appearance CAN buy on a generated sequence: the real tracker with ideal inputs.

The sanity gate asks for IDF1(trained embedder) - IDF1(trivial baseline) >= 0.25. Whether any embedder can meet
that depends on the scenes, not only on the network: DeepSORT gates every association by the Kalman
prediction (chi-square 95 %), so appearance only decides between candidates inside that gate. This module
bounds the gap: the real :class:`~multidnn_sched.models.tracker.Tracker` is fed the ground-truth boxes of
objects at least ``detect_visible`` visible (a perfect detector) and one of three appearance inputs:

- ``ideal``: one unit vector per appearance identity (``SceneFrame.appearance``: shape, rim, fill, texture),
  plus small noise: a perfect embedder;
- ``texture_blind``: one unit vector per type (shape, rim and fill colour, no texture), plus the same noise:
  the best a thumbnail-like baseline that cannot read texture could do;
- ``none``: no appearance (motion and IoU only).

``ideal - texture_blind`` is an upper bound of the IDF1 gap a real embedder can reach over a texture-blind
baseline on that sequence. Needs generated frames (bags carry no appearance identities).

CLI: ``python -m multidnn_sched.evaluation.idf1_bound --seed 4242 --frames 300 [--profile hard]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from multidnn_sched.evaluation.metrics import TrackingFrame, tracking_metrics
from multidnn_sched.exceptions import ConfigError
from multidnn_sched.models.tracker import Tracker
from multidnn_sched.scenes.generator import PATTERNS, PROFILES, SceneFrame, SceneGenerator, profile_config

MODES: tuple[str, ...] = ("ideal", "texture_blind", "none")
_NOISE_DIM = 32
_NOISE_STD = 0.08


def _vectors(frame: SceneFrame, objects: list, mode: str, rng: np.random.Generator, width: int) -> np.ndarray:
    out = np.zeros((len(objects), width + _NOISE_DIM))
    for k, o in enumerate(objects):
        identity = frame.appearance[o.track_id]
        out[k, identity if mode == "ideal" else identity // len(PATTERNS)] = 1.0
    out[:, width:] = rng.normal(0.0, _NOISE_STD, (len(objects), _NOISE_DIM))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def idf1_bound(
    frames: Sequence[SceneFrame], detect_visible: float = 0.3, ignore_visible: float = 0.5, seed: int = 0
) -> dict[str, dict[str, float]]:
    """IDF1 / MOTA / switches of the real tracker on GT boxes with each appearance input of :data:`MODES`.

    Args:
        frames: generated frames of one sequence (``SceneFrame`` with ``appearance``), in order.
        detect_visible: objects at least this visible are "detected" (their GT box, +/- 1 px noise).
        ignore_visible: GT below this visible fraction is ignored by the metric (as in the evaluation).
        seed: seed of the box and vector noise.

    Raises:
        ConfigError: no frames, or a frame without appearance identities.
    """
    frames = list(frames)
    if not frames:
        raise ConfigError("idf1_bound: expected at least one generated frame, got none")
    width = 1 + max((max(f.appearance.values(), default=0) for f in frames), default=0)
    result: dict[str, dict[str, float]] = {}
    for mode in MODES:
        rng = np.random.default_rng(seed)
        tracker = Tracker()
        track_frames: list[TrackingFrame] = []
        for f in frames:
            if f.objects and not f.appearance:
                raise ConfigError(f"idf1_bound: frame {f.index} has no appearance identities (generated "
                                  "frames needed, not a bag)")
            seen = [o for o in f.objects if o.visible_fraction >= detect_visible]
            boxes = np.array([o.box_xyxy for o in seen], np.float64).reshape(-1, 4)
            boxes = boxes + rng.normal(0.0, 1.0, boxes.shape)
            vectors = None if mode == "none" else _vectors(f, seen, mode, rng, width)
            tracks = tracker.update(boxes, np.ones(len(seen)), np.zeros(len(seen), np.int64), vectors)
            track_frames.append(TrackingFrame(
                f.index,
                np.array([o.track_id for o in f.objects], np.int64),
                np.array([o.box_xyxy for o in f.objects], np.float64).reshape(-1, 4),
                np.array([t.track_id for t in tracks], np.int64),
                np.array([t.box_xyxy for t in tracks], np.float64).reshape(-1, 4),
                np.array([o.visible_fraction < ignore_visible for o in f.objects], bool),
            ))
        m = tracking_metrics(track_frames)
        result[mode] = {"idf1": float(m["idf1"]), "mota": float(m["mota"]),
                        "num_switches": int(m["num_switches"])}
    result["gap"] = {"ideal_minus_texture_blind": result["ideal"]["idf1"] - result["texture_blind"]["idf1"]}
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m multidnn_sched.evaluation.idf1_bound``; prints JSON, returns the exit code."""
    parser = argparse.ArgumentParser(prog="idf1_bound", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=4242, help="scene seed")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--profile", choices=PROFILES, default="hard")
    args = parser.parse_args(argv)
    try:
        frames = list(SceneGenerator(profile_config(args.profile), args.seed).frames(args.frames))
        report = idf1_bound(frames)
    except ConfigError as exc:
        print(f"idf1_bound: error: {exc}", file=sys.stderr)
        return 2
    objects = len({o.track_id for f in frames for o in f.objects})
    print(json.dumps({"seed": args.seed, "frames": args.frames, "profile": args.profile, "objects": objects,
                      **report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
