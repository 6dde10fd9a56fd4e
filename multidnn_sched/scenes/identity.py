"""Hard-profile identity rules of the scene generator: types, look-alikes and pillar swaps.

A *type* is (shape class, rim colour). Within one sequence a type's rim and fill colours and texture scale are
drawn once, so two objects of one type differ only in texture kind and size. Newcomers either copy an on-screen
object's type (a look-alike) or take a type that is not on screen; an object crossing behind a pillar may be
replaced there by a look-alike. :class:`HardIdentityRules` is mixed into the generator's sequence state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

PATTERNS: tuple[str, ...] = ("stripes", "checker", "dots", "rings")
"""Fill textures of the hard profile (dark marks in the fill colour, ~50 % coverage each)."""

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
"""Shape class names; ``class_id`` indexes this tuple."""

ATTRIBUTES: tuple[str, ...] = ("red", "green", "blue", "yellow")
"""Colour attribute names; ``attribute_id`` indexes this tuple."""

# Base RGB of each attribute. Hues are 60+ degrees apart and the backdrop is low-saturation, so a global gain
# (lighting) and small per-object jitter never move one colour into another's hue range.
_ATTRIBUTE_RGB: np.ndarray = np.array(
    [[215.0, 35.0, 35.0], [40.0, 190.0, 50.0], [40.0, 70.0, 220.0], [225.0, 205.0, 40.0]], dtype=np.float32
)
_COLOUR_JITTER = 18.0  # +/- per channel, uniform, per object
_HARD_LOOKALIKE_PROBABILITY = 0.7  # a newcomer copies an on-screen object's type (shape, colours), other texture
_HARD_LOOKALIKE_MIN_SIZE_PX = 48.0  # only objects this large (at 640x480) get look-alikes: texture stays legible
_HARD_LOOKALIKE_SIZE_JITTER = 0.04  # a look-alike's size is its model's +/- 4 %
_HARD_PATTERN_FREQ = (2.5, 4.0)  # texture periods across an object (per type)
_HARD_PATTERN_REUSE_FRAMES = 60  # a type's texture is not given to a newcomer within this many frames of its last use
_HARD_SWAP_PROBABILITY = 0.5  # per crossing of a pillar's axis by an eligible object
_HARD_SWAP_MAX_SIZE_RATIO = 1.5  # only objects at most this much wider than the pillar (mostly hidden) swap


@dataclass
class _Mover:
    """Internal state of one object in the world."""

    track_id: int
    class_id: int
    attribute_id: int
    colour_rgb: np.ndarray  # [3] float32
    size_px: float
    cx: float
    cy: float
    vx: float
    vy: float
    angle_rad: float
    spin_rad_per_frame: float
    depth: float  # larger = closer to the camera = drawn later
    entered: bool = False  # True once it has been (partly) visible
    fill_id: int = -1  # hard profile: fill colour (an attribute index != attribute_id); -1: solid (easy)
    fill_rgb: np.ndarray | None = None
    pattern_id: int = 0
    pattern_freq: float = 3.0
    appearance_id: int = 0


class _WorldConfig(Protocol):
    """What the rules read of the generator's ``SceneConfig`` (not imported: the generator imports this)."""

    width: int
    height: int
    rotation: bool


class HardIdentityRules:
    """Mixin of the generator's sequence state: the hard profile's identity rules (see the module docstring).

    The host provides the attributes declared below and ``_spawn(inside, hard_appearance)``.
    """

    cfg: _WorldConfig
    rng: np.random.Generator
    movers: list[_Mover]
    step: int
    scale: float
    pillars: list[tuple[float, float]]
    type_styles: dict[tuple[int, int], tuple[np.ndarray, int, np.ndarray, float]]
    pattern_seen: dict[tuple[int, int, int], int]

    def _spawn(self, inside: bool, hard_appearance: bool = True) -> _Mover:
        raise NotImplementedError

    def _hard_appearance(self, mover: _Mover, inside: bool) -> None:
        """Hard profile: type style, look-alike copies and a texture unused by type-mates.

        A *type* is (shape class, rim colour). Its rim and fill colours and texture scale are drawn once per
        sequence, so two objects of one type differ only in texture kind and size. A newcomer either copies an
        on-screen object's type (a look-alike: size within ``_HARD_LOOKALIKE_SIZE_JITTER``) or takes a type
        that is not on screen.
        """
        rng, cfg = self.rng, self.cfg
        scale = min(cfg.width / 640.0, cfg.height / 480.0)
        min_model_px = _HARD_LOOKALIKE_MIN_SIZE_PX * scale
        models = [m for m in self.movers
                  if m.size_px >= min_model_px and len(self._type_mates(m.class_id, m.attribute_id)) < len(PATTERNS)]
        if models and rng.uniform() < _HARD_LOOKALIKE_PROBABILITY:
            model = models[int(rng.integers(0, len(models)))]
            mover.class_id, mover.attribute_id = model.class_id, model.attribute_id
            mover.size_px = model.size_px * float(rng.uniform(1.0 - _HARD_LOOKALIKE_SIZE_JITTER,
                                                              1.0 + _HARD_LOOKALIKE_SIZE_JITTER))
            self._place_resized(mover)
        else:
            on_screen = {(m.class_id, m.attribute_id) for m in self.movers}
            free = [(c, a) for c in range(len(CLASSES)) for a in range(len(ATTRIBUTES)) if (c, a) not in on_screen]
            if free:
                mover.class_id, mover.attribute_id = free[int(rng.integers(0, len(free)))]
        self._finish_hard_appearance(mover)

    def _finish_hard_appearance(self, mover: _Mover, exclude: tuple[int, ...] = ()) -> None:
        """The type's colours and texture scale, a texture kind unused by type-mates, spin and appearance id."""
        rng, cfg = self.rng, self.cfg
        style = self._type_style(mover.class_id, mover.attribute_id)
        mover.colour_rgb = style[0].copy()
        mover.fill_id = style[1]
        mover.fill_rgb = style[2].copy()
        mover.pattern_freq = style[3]
        mates = self._type_mates(mover.class_id, mover.attribute_id)
        on_screen_patterns = {m.pattern_id for m in mates} | set(exclude)
        recent = {p for p in range(len(PATTERNS))
                  if self.step - self.pattern_seen.get((mover.class_id, mover.attribute_id, p), -10**9)
                  <= _HARD_PATTERN_REUSE_FRAMES}
        choices = ([p for p in range(len(PATTERNS)) if p not in on_screen_patterns | recent]
                   or [p for p in range(len(PATTERNS)) if p not in on_screen_patterns] or list(range(len(PATTERNS))))
        mover.pattern_id = choices[int(rng.integers(0, len(choices)))]
        # Faster spin than the easy profile: a template taken a second earlier no longer matches.
        mover.spin_rad_per_frame = float(rng.uniform(-0.08, 0.08)) if cfg.rotation else 0.0
        n_attr = len(ATTRIBUTES)
        mover.appearance_id = ((mover.class_id * n_attr + mover.attribute_id) * n_attr + mover.fill_id) * len(
            PATTERNS) + mover.pattern_id

    def _impostor(self, source: _Mover) -> _Mover:
        """A look-alike of ``source`` (type, size +/- 4 %, another texture) at its place, on its course."""
        rng = self.rng
        mover = self._spawn(inside=False, hard_appearance=False)
        mover.class_id, mover.attribute_id = source.class_id, source.attribute_id
        mover.size_px = source.size_px * float(rng.uniform(1.0 - _HARD_LOOKALIKE_SIZE_JITTER,
                                                           1.0 + _HARD_LOOKALIKE_SIZE_JITTER))
        k = float(rng.uniform(0.9, 1.1))
        mover.cx, mover.cy = source.cx, source.cy
        mover.vx, mover.vy = k * source.vx, k * source.vy
        mover.angle_rad, mover.depth, mover.entered = source.angle_rad, source.depth, True
        # The source is gone: its texture counts as seen now, so the newcomer takes another one.
        self.pattern_seen[(source.class_id, source.attribute_id, source.pattern_id)] = self.step
        self._finish_hard_appearance(mover, exclude=(source.pattern_id,))
        return mover

    def _type_mates(self, class_id: int, attribute_id: int) -> list[_Mover]:
        return [m for m in self.movers if m.class_id == class_id and m.attribute_id == attribute_id]

    def _type_style(self, class_id: int, attribute_id: int) -> tuple[np.ndarray, int, np.ndarray, float]:
        """(rim RGB, fill attribute id, fill RGB, texture frequency) of a type, drawn at its first use."""
        key = (class_id, attribute_id)
        if key not in self.type_styles:
            rng = self.rng
            fills = [a for a in range(len(ATTRIBUTES)) if a != attribute_id]
            fill_id = fills[int(rng.integers(0, len(fills)))]
            rim = (_ATTRIBUTE_RGB[attribute_id] + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, 3)).astype(np.float32)
            fill = (_ATTRIBUTE_RGB[fill_id] + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, 3)).astype(np.float32)
            self.type_styles[key] = (rim, fill_id, fill, float(rng.uniform(*_HARD_PATTERN_FREQ)))
        return self.type_styles[key]

    def _place_resized(self, mover: _Mover) -> None:
        """Keep a resized mover's placement valid: inside the image, or just outside the border it enters by."""
        half = mover.size_px / 2.0
        mover.cx = _place_on_axis(mover.cx, half, self.cfg.width)
        mover.cy = _place_on_axis(mover.cy, half, self.cfg.height)

    def _pillar_swaps(self) -> None:
        """Hard profile: an object whose centre crosses a pillar's axis while hidden may be swapped for a look-alike.

        The newcomer (same type, size +/- 4 %, another texture, a new track id) continues the course of the
        one it replaces, which leaves the scene unseen: only appearance can tell that the object stepping out
        from behind the pillar is another one.
        """
        rng = self.rng
        for k, m in enumerate(self.movers):
            if not m.entered or m.vx == 0.0 or m.size_px < _HARD_LOOKALIKE_MIN_SIZE_PX * self.scale:
                continue
            before = m.cx - m.vx
            for x0, half_w in self.pillars:
                if (before - x0) * (m.cx - x0) > 0.0 or m.size_px > _HARD_SWAP_MAX_SIZE_RATIO * 2.0 * half_w:
                    continue
                if rng.uniform() < _HARD_SWAP_PROBABILITY:
                    self.movers[k] = self._impostor(m)
                break


def _place_on_axis(centre: float, half: float, extent: float) -> float:
    """One axis of ``_place_resized``: just outside the border it is beyond, else clamped inside the image."""
    if centre < 0.0:
        return -half + 1.0
    if centre > extent:
        return extent + half - 1.0
    return min(max(centre, min(half, extent / 2.0)), max(extent - half, extent / 2.0))
