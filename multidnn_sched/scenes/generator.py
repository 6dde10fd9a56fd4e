"""Seeded, deterministic synthetic camera: coloured shapes moving over a textured background.

The world is a static camera looking at a flat, textured backdrop with a few grey distractor blobs. Coloured
shapes (one of :data:`CLASSES`, one colour of :data:`ATTRIBUTES`) enter from the borders, cross the image at
varied speeds and directions while slowly rotating, occlude each other by depth (z-order), and leave. Each
frame gets a global lighting gain that drifts over time, sensor noise, and, now and then, blur.

Everything is drawn from one ``numpy.random.Generator`` seeded with ``seed``, in a fixed order, so
``SceneGenerator(config, seed).frames(n)`` is a pure function of ``(config, seed)``: the first ``k`` frames of
``frames(n)`` equal ``frames(k)``, on every machine with the same numpy.

Box convention: ``box_xyxy`` is in pixel-edge coordinates: ``x1`` is the left edge of the leftmost visible
pixel, ``x2`` the right edge of the rightmost one (last column index + 1), so ``x2 - x1`` is the visible width
in pixels and ``0 <= x1 < x2 <= width``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from multidnn_sched.exceptions import ConfigError
from multidnn_sched.scenes.config import (
    HARD_PROFILE_VERSION,
    PROFILES,
    SceneConfig,
    easy_config,
    hard_config,
    profile_config,
)
from multidnn_sched.scenes.identity import (
    _ATTRIBUTE_RGB,
    _COLOUR_JITTER,
    ATTRIBUTES,
    CLASSES,
    PATTERNS,
    HardIdentityRules,
    _Mover,
)
from multidnn_sched.scenes.raster import _box_blur, _inner_mask, _motion_blur, _pattern_mask, _shape_mask

__all__ = [
    "ATTRIBUTES", "CLASSES", "HARD_PROFILE_VERSION", "PATTERNS", "PROFILES", "GroundTruthObject", "SceneConfig",
    "SceneFrame", "SceneGenerator", "easy_config", "hard_config", "profile_config",
]

_NOISE_BANK_MARGIN_PX = 64  # noise comes from a random crop of one pre-drawn bank (12 ms -> ~1 ms per frame)
_DISTRACTOR_COUNT = 6
_HARD_RIM_BAND = 0.22  # hard profile: rim width in units of the half-size; the rim carries the attribute colour
_HARD_PATTERN_DARKEN = 0.5  # pattern marks: fill colour x this
_HARD_CLUTTER_COUNT = 14  # coloured non-object shapes (rings, bars, half-discs) in the backdrop
_HARD_OCCLUDER_THICKNESS_PX = (6.0, 22.0)
_HARD_PILLAR_COUNT = 1  # wide pillar (40-70 px) where a look-alike may take an object's place
_HARD_SIDE_ENTRY_BIAS = 0.6  # share of top/bottom entries turned into left/right ones (cross the pillars)
_HARD_PILLAR_WIDTH_PX = (40.0, 70.0)
_HARD_SPAWN_PROBABILITY = 0.35  # per frame while below the target count (easy: 0.25): more turnover


def _spawn_probability(hard: bool) -> float:
    return _HARD_SPAWN_PROBABILITY if hard else 0.25


@dataclass
class GroundTruthObject:
    """Ground truth of one object in one frame.

    Attributes:
        track_id: Stable while the object is on screen; never reused within a sequence (starts at 1).
        class_id: Index into :data:`CLASSES`.
        attribute_id: Index into :data:`ATTRIBUTES`.
        box_xyxy: Visible extent (x1, y1, x2, y2), pixel-edge coordinates, clipped to the image.
        visible_fraction: Visible pixels / full shape pixels, in 0..1 (occlusion and border clipping).
    """

    track_id: int
    class_id: int
    attribute_id: int
    box_xyxy: tuple[float, float, float, float]
    visible_fraction: float


@dataclass
class SceneFrame:
    """One rendered frame.

    Attributes:
        index: Frame index in the sequence, from 0.
        stamp_ns: Capture time, ``round(index * 1e9 / rate_hz)`` nanoseconds.
        image: [H, W, 3] uint8 RGB.
        objects: Objects with ``visible_fraction > 0``, in drawing order (back to front).
        appearance: ``track_id -> appearance identity`` of the objects in ``objects`` (not stored in bags;
            for training re-identification): easy ``class * A + attribute``; hard
            ``((class * A + attribute) * A + fill) * len(PATTERNS) + pattern``.
    """

    index: int
    stamp_ns: int
    image: np.ndarray
    objects: list[GroundTruthObject] = field(default_factory=list)
    appearance: dict[int, int] = field(default_factory=dict)


class SceneGenerator:
    """Deterministic synthetic camera.

    Args:
        config: World parameters (validated here).
        seed: Seed of the sequence; the same (config, seed) always gives the same frames.

    Raises:
        ConfigError: ``config`` is out of range.
    """

    def __init__(self, config: SceneConfig | None = None, seed: int = 0) -> None:
        self.config = config if config is not None else SceneConfig()
        self.config.validate()
        self.seed = int(seed)

    def frames(self, n: int) -> Iterator[SceneFrame]:
        """Render the first ``n`` frames of the sequence.

        Args:
            n: Number of frames (>= 0).

        Yields:
            SceneFrame for indices 0..n-1. Each call restarts the sequence from the seed.

        Raises:
            ConfigError: ``n`` is negative.
        """
        if n < 0:
            raise ConfigError(f"SceneGenerator.frames: expected n >= 0 frames, got {n}")
        return _Sequence(self.config, self.seed).run(n)


class _Sequence(HardIdentityRules):
    """The mutable state of one run of the world."""

    def __init__(self, config: SceneConfig, seed: int) -> None:
        self.cfg = config
        self.rng = np.random.default_rng(seed)
        self.next_track_id = 1
        self.movers: list[_Mover] = []
        h, w = config.height, config.width
        self.hard = config.profile == "hard"
        self.background = self._make_background()
        m = _NOISE_BANK_MARGIN_PX
        self.noise_bank = self.rng.standard_normal((h + m, w + m, 3), dtype=np.float32) * config.noise_std
        self.light_phase = float(self.rng.uniform(0.0, 2.0 * math.pi))
        self.light_phase2 = float(self.rng.uniform(0.0, 2.0 * math.pi))
        self.scale = min(config.width / 640.0, config.height / 480.0)
        self.pillars: list[tuple[float, float]] = []  # hard profile: (centre x, half width) of each wide pillar
        self.occluder_mask: np.ndarray | None = None
        self.occluder_image: np.ndarray | None = None
        if self.hard:
            self._make_hard_extras()
        self.type_styles: dict[tuple[int, int], tuple[np.ndarray, int, np.ndarray, float]] = {}
        self.pattern_seen: dict[tuple[int, int, int], int] = {}
        self.step = 0
        self.target_count = int(self.rng.integers(config.min_objects, config.max_objects + 1))
        # Initial objects start inside the image so frame 0 is not empty.
        for _ in range(self.target_count):
            self.movers.append(self._spawn(inside=True))

    # ----------------------------------------------------------------------------------------------- world
    def _make_background(self) -> np.ndarray:
        """Low-saturation gradient + smooth texture + grey distractor blobs, float32 [H, W, 3]."""
        cfg, rng = self.cfg, self.rng
        h, w = cfg.height, cfg.width
        ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
        xs = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
        grey0, grey1 = rng.uniform(70.0, 150.0, size=2)
        tint0, tint1 = rng.uniform(-8.0, 8.0, size=(2, 3))
        angle = rng.uniform(0.0, 2.0 * math.pi)
        t = (xs * math.cos(angle) + ys * math.sin(angle))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        base = (grey0 + (grey1 - grey0) * t)[..., None] + (tint0 + (tint1 - tint0) * t[..., None])
        # Smooth texture: a few random plane waves (wood/cloud-like), amplitude ~10 grey levels.
        texture = np.zeros((h, w), dtype=np.float32)
        for _ in range(5):
            fx, fy = rng.uniform(-12.0, 12.0, size=2)
            ph = rng.uniform(0.0, 2.0 * math.pi)
            texture += np.sin(2.0 * math.pi * (fx * xs + fy * ys) + ph).astype(np.float32)
        image = base + 4.0 * texture[..., None]
        # Grey distractors (ellipses), so "anything that is not background" is not a valid detector rule.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for _ in range(_DISTRACTOR_COUNT):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            ax, ay = rng.uniform(15.0, 60.0, size=2)
            level = rng.uniform(40.0, 200.0)
            mask = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0
            image[mask] = 0.5 * image[mask] + 0.5 * level
        return image.astype(np.float32)

    def _make_hard_extras(self) -> None:
        """Hard profile: coloured clutter in the backdrop, foreground poles, colour cast and light gradient."""
        cfg, rng = self.cfg, self.rng
        h, w = cfg.height, cfg.width
        scale = min(w / 640.0, h / 480.0)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        image = self.background
        # Clutter: saturated rings, bars and half-discs in the attribute colours (not objects, never in GT).
        for _ in range(_HARD_CLUTTER_COUNT):
            kind = int(rng.integers(0, 3))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = float(rng.uniform(10.0, 45.0)) * scale
            colour = _ATTRIBUTE_RGB[int(rng.integers(0, len(ATTRIBUTES)))] * float(rng.uniform(0.6, 1.0))
            angle = float(rng.uniform(0.0, math.pi))
            du, dv = xx - cx, yy - cy
            pu = math.cos(angle) * du + math.sin(angle) * dv
            pv = -math.sin(angle) * du + math.cos(angle) * dv
            if kind == 0:  # ring
                d2 = pu * pu + pv * pv
                mask = (d2 <= r * r) & (d2 >= (0.6 * r) ** 2)
            elif kind == 1:  # bar
                mask = (np.abs(pu) <= r) & (np.abs(pv) <= max(2.0, 0.18 * r))
            else:  # half-disc
                mask = (pu * pu + pv * pv <= r * r) & (pv >= 0.0)
            image[mask] = 0.3 * image[mask] + 0.7 * colour
        # Foreground poles: static grey bars in front of every object (partial occlusion).
        self.occluder_mask = np.zeros((h, w), dtype=bool)
        self.occluder_image = np.zeros((h, w, 3), dtype=np.float32)
        for _ in range(self.cfg.occluder_count):
            thick = float(rng.uniform(*_HARD_OCCLUDER_THICKNESS_PX)) * scale
            level = float(rng.uniform(50.0, 190.0))
            if rng.uniform() < 0.6:
                x0 = float(rng.uniform(0.1 * w, 0.9 * w))
                bar = np.abs(xx - x0) <= thick / 2.0
            else:
                y0 = float(rng.uniform(0.1 * h, 0.9 * h))
                bar = np.abs(yy - y0) <= thick / 2.0
            shade = level * (0.9 + 0.2 * (xx + yy) / float(w + h))
            self.occluder_mask |= bar
            self.occluder_image[bar] = shade[bar][:, None]
        # Wide pillars in front of everything: objects pass behind them, and there a look-alike may take an
        # object's place (see _pillar_swaps).
        for k in range(_HARD_PILLAR_COUNT):
            half_w = float(rng.uniform(*_HARD_PILLAR_WIDTH_PX)) * scale / 2.0
            lo_x, hi_x = (0.15 + 0.7 * k / _HARD_PILLAR_COUNT) * w, (0.15 + 0.7 * (k + 1) / _HARD_PILLAR_COUNT) * w
            x0 = float(rng.uniform(lo_x + half_w, max(lo_x + half_w, hi_x - half_w)))
            level = float(rng.uniform(60.0, 170.0))
            panel = np.abs(xx - x0) <= half_w
            shade = level * (0.85 + 0.3 * yy / float(h)) + 6.0 * np.sin(xx * 0.35)
            self.occluder_mask |= panel
            self.occluder_image[panel] = shade[panel][:, None]
            self.pillars.append((x0, half_w))
        # A light gradient field (direction random), scaled per frame; a colour cast per frame.
        angle = float(rng.uniform(0.0, 2.0 * math.pi))
        field_ = (xx / w - 0.5) * math.cos(angle) + (yy / h - 0.5) * math.sin(angle)
        self.light_field = (field_ / max(float(np.abs(field_).max()), 1e-6)).astype(np.float32)
        self.cast_phases = rng.uniform(0.0, 2.0 * math.pi, size=3)
        self.field_phase = float(rng.uniform(0.0, 2.0 * math.pi))

    def _random_speed(self) -> float:
        lo, hi = self.cfg.min_speed_px_per_frame, self.cfg.max_speed_px_per_frame
        # Log-uniform-ish: many slow objects, some fast ones.
        return float(lo + (hi - lo) * self.rng.uniform(0.0, 1.0) ** 1.5)

    def _spawn(self, inside: bool, hard_appearance: bool = True) -> _Mover:
        cfg, rng = self.cfg, self.rng
        w, h = cfg.width, cfg.height
        if self.hard:
            size = float(math.exp(rng.uniform(math.log(cfg.min_size_px), math.log(cfg.max_size_px))))
        else:
            size = float(rng.uniform(cfg.min_size_px, cfg.max_size_px))
        half = size / 2.0
        speed = self._random_speed()
        if inside:
            cx = float(rng.uniform(half, w - half))
            cy = float(rng.uniform(half, h - half))
            direction = float(rng.uniform(0.0, 2.0 * math.pi))
        else:
            side = int(rng.integers(0, 4))  # 0 left, 1 right, 2 top, 3 bottom
            if self.hard and side >= 2 and rng.uniform() < _HARD_SIDE_ENTRY_BIAS:
                side -= 2  # hard: most objects walk across (and behind the pillars)
            if side in (0, 1):
                cx = -half + 1.0 if side == 0 else w + half - 1.0
                cy = float(rng.uniform(half, h - half))
                base_dir = 0.0 if side == 0 else math.pi
            else:
                cx = float(rng.uniform(half, w - half))
                cy = -half + 1.0 if side == 2 else h + half - 1.0
                base_dir = math.pi / 2.0 if side == 2 else -math.pi / 2.0
            direction = base_dir + float(rng.uniform(-1.0, 1.0))  # within ~57 deg of straight in
            speed = max(speed, 0.8)  # an entering object must actually come in
        if not cfg.occlusion and inside:
            # Re-draw a few times to avoid overlapping spawn squares when occlusion is off.
            for _ in range(20):
                if all(abs(cx - m.cx) > (half + m.size_px / 2) or abs(cy - m.cy) > (half + m.size_px / 2)
                       for m in self.movers):
                    break
                cx = float(rng.uniform(half, w - half))
                cy = float(rng.uniform(half, h - half))
        class_id = int(rng.integers(0, len(CLASSES)))
        attribute_id = int(rng.integers(0, len(ATTRIBUTES)))
        colour = _ATTRIBUTE_RGB[attribute_id] + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, 3).astype(np.float32)
        angle = float(rng.uniform(-0.5, 0.5)) if cfg.rotation else 0.0
        spin = float(rng.uniform(-0.03, 0.03)) if cfg.rotation else 0.0
        mover = _Mover(
            track_id=self.next_track_id, class_id=class_id, attribute_id=attribute_id,
            colour_rgb=colour.astype(np.float32), size_px=size, cx=cx, cy=cy,
            vx=speed * math.cos(direction), vy=speed * math.sin(direction),
            angle_rad=angle, spin_rad_per_frame=spin, depth=float(rng.uniform(0.0, 1.0)),
        )
        if self.hard:
            if hard_appearance:
                self._hard_appearance(mover, inside)
        else:
            mover.appearance_id = class_id * len(ATTRIBUTES) + attribute_id
        self.next_track_id += 1
        return mover

    def _step_world(self) -> None:
        """Move, retire objects that left, and let new ones enter."""
        cfg, rng = self.cfg, self.rng
        w, h = cfg.width, cfg.height
        self.step += 1
        if self.hard:
            for m in self.movers:
                self.pattern_seen[(m.class_id, m.attribute_id, m.pattern_id)] = self.step
        for m in self.movers:
            m.cx += m.vx
            m.cy += m.vy
            m.angle_rad += m.spin_rad_per_frame
            # Occasional gentle turn keeps trajectories varied.
            if rng.uniform() < 0.02:
                turn = float(rng.uniform(-0.4, 0.4))
                c, s = math.cos(turn), math.sin(turn)
                m.vx, m.vy = c * m.vx - s * m.vy, s * m.vx + c * m.vy
        alive: list[_Mover] = []
        for m in self.movers:
            half = m.size_px / 2.0
            outside = m.cx + half < 0 or m.cx - half > w or m.cy + half < 0 or m.cy - half > h
            if not outside:
                alive.append(m)
        self.movers = alive
        if self.hard and self.pillars:
            self._pillar_swaps()
        if rng.uniform() < 0.03:
            self.target_count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        # At most one newcomer per frame keeps arrivals spread out.
        if len(self.movers) < self.target_count and len(self.movers) < cfg.max_objects:
            if len(self.movers) < cfg.min_objects or rng.uniform() < _spawn_probability(self.hard):
                self.movers.append(self._spawn(inside=False))

    # ----------------------------------------------------------------------------------------------- render
    def _render(self, index: int) -> tuple[np.ndarray, list[GroundTruthObject]]:
        cfg, rng = self.cfg, self.rng
        h, w = cfg.height, cfg.width
        image = self.background.copy()
        owner = np.full((h, w), -1, dtype=np.int16)
        order = sorted(range(len(self.movers)), key=lambda i: self.movers[i].depth)
        full_area: dict[int, int] = {}
        windows: dict[int, tuple[int, int, int, int]] = {}
        for i in order:
            m = self.movers[i]
            half = m.size_px / 2.0
            gx0, gx1 = int(math.floor(m.cx - half)), int(math.ceil(m.cx + half)) + 1
            gy0, gy1 = int(math.floor(m.cy - half)), int(math.ceil(m.cy + half)) + 1
            # Shape in its own (unclipped) window: full area counts the part outside the image too.
            xs = (np.arange(gx0, gx1, dtype=np.float32) + 0.5 - m.cx) / half
            ys = (np.arange(gy0, gy1, dtype=np.float32) + 0.5 - m.cy) / half
            c, s = math.cos(m.angle_rad), math.sin(m.angle_rad)
            u = c * xs[None, :] + s * ys[:, None]
            v = -s * xs[None, :] + c * ys[:, None]
            mask = _shape_mask(m.class_id, u, v)
            full_area[i] = int(mask.sum())
            x0, x1 = max(gx0, 0), min(gx1, w)
            y0, y1 = max(gy0, 0), min(gy1, h)
            if x0 >= x1 or y0 >= y1 or full_area[i] == 0:
                continue
            sub = mask[y0 - gy0:y1 - gy0, x0 - gx0:x1 - gx0]
            windows[i] = (x0, y0, x1, y1)
            # Shading: a soft linear gradient across the object (light from the top-left).
            shade = (1.08 - 0.08 * (u + v)[y0 - gy0:y1 - gy0, x0 - gx0:x1 - gx0]).astype(np.float32)
            patch = image[y0:y1, x0:x1]
            if m.fill_rgb is None:
                patch[sub] = (shade[sub][:, None] * m.colour_rgb[None, :])
            else:
                us = u[y0 - gy0:y1 - gy0, x0 - gx0:x1 - gx0]
                vs = v[y0 - gy0:y1 - gy0, x0 - gx0:x1 - gx0]
                inner = _inner_mask(m.class_id, us, vs, _HARD_RIM_BAND) & sub
                marks = _pattern_mask(m.pattern_id, us, vs, m.pattern_freq)
                fill = np.where(marks[..., None], m.fill_rgb * _HARD_PATTERN_DARKEN, m.fill_rgb)
                colour = np.where(inner[..., None], fill, m.colour_rgb)
                patch[sub] = shade[sub][:, None] * colour[sub]
            owner[y0:y1, x0:x1][sub] = i
        if self.occluder_mask is not None and self.occluder_image is not None:
            image[self.occluder_mask] = self.occluder_image[self.occluder_mask]
            owner[self.occluder_mask] = -1
        objects: list[GroundTruthObject] = []
        for i in order:
            if i not in windows:
                continue
            m = self.movers[i]
            x0, y0, x1, y1 = windows[i]
            mine = owner[y0:y1, x0:x1] == i
            visible = int(mine.sum())
            if visible == 0:
                continue
            m.entered = True
            cols = np.flatnonzero(mine.any(axis=0))
            rows = np.flatnonzero(mine.any(axis=1))
            box = (float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1), float(y0 + rows[-1] + 1))
            objects.append(GroundTruthObject(
                track_id=m.track_id, class_id=m.class_id, attribute_id=m.attribute_id, box_xyxy=box,
                visible_fraction=min(1.0, visible / full_area[i]),
            ))
        # Global lighting: two slow sinusoids (smooth drift) -> gain in 1 +/- amplitude.
        period = cfg.lighting_period_frames
        drift = 0.7 * math.sin(2.0 * math.pi * index / period + self.light_phase) + 0.3 * math.sin(
            2.0 * math.pi * index / (0.37 * period) + self.light_phase2)
        gain = 1.0 + cfg.lighting_amplitude * drift
        if self.hard:
            # Colour cast (+/-12 % per channel, slow) and a light gradient whose strength drifts (+/-30 %).
            t = 2.0 * math.pi * index / period
            cast = (1.0 + 0.12 * np.sin(t * np.array([0.8, 1.1, 1.3]) + self.cast_phases)).astype(np.float32)
            k = 0.3 * math.sin(0.6 * t + self.field_phase)
            image *= (gain + k * self.light_field)[..., None]
            image *= cast[None, None, :]
        else:
            image *= gain
        if rng.uniform() < cfg.blur_probability:
            if self.hard and rng.uniform() < 0.5:
                dx, dy = ((1, 0), (0, 1), (1, 1), (1, -1))[int(rng.integers(0, 4))]
                image = _motion_blur(image, dx, dy, int(rng.integers(2, 5)) * 2 + 1)
            else:
                image = _box_blur(image, int(rng.integers(1, 3)))
        m_px = _NOISE_BANK_MARGIN_PX
        oy, ox = (int(v) for v in rng.integers(0, m_px, size=2))
        if cfg.noise_std > 0.0:
            if self.hard:
                image += self.noise_bank[oy:oy + h, ox:ox + w] * float(rng.uniform(0.6, 1.6))
            else:
                image += self.noise_bank[oy:oy + h, ox:ox + w]
        np.clip(image, 0.0, 255.0, out=image)
        return image.astype(np.uint8), objects

    def run(self, n: int) -> Iterator[SceneFrame]:
        for index in range(n):
            if index > 0:
                self._step_world()
            image, objects = self._render(index)
            stamp_ns = int(round(index * 1e9 / self.cfg.rate_hz))
            appearance = {m.track_id: m.appearance_id for m in self.movers}
            yield SceneFrame(index=index, stamp_ns=stamp_ns, image=image, objects=objects,
                             appearance={o.track_id: appearance[o.track_id] for o in objects})
