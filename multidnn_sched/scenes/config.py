"""Scene profiles and the parameters of the synthetic world (:class:`SceneConfig`, ``easy`` / ``hard``)."""

from __future__ import annotations

from dataclasses import dataclass

from multidnn_sched.exceptions import ConfigError

PROFILES: tuple[str, ...] = ("easy", "hard")
"""Scene profiles: ``easy`` (solid shapes, mild photometrics) and ``hard`` (see :func:`hard_config`)."""

HARD_PROFILE_VERSION: int = 2
"""Version of the hard profile's world rules (2: per-type styles, look-alikes >= 48 px, a pillar with swaps,
more turnover); part of the training-cache key so a cache rendered by older rules is not reused."""

@dataclass
class SceneConfig:
    """Parameters of the synthetic world.

    Attributes:
        width: Image width in pixels.
        height: Image height in pixels.
        rate_hz: Frame rate; ``stamp_ns = round(index * 1e9 / rate_hz)``.
        min_objects: Fewest objects the generator keeps on screen (new ones enter when below).
        max_objects: Most objects on screen at once.
        min_size_px: Smallest object size (bounding square side before rotation), pixels.
        max_size_px: Largest object size, pixels.
        min_speed_px_per_frame: Slowest object speed.
        max_speed_px_per_frame: Fastest object speed.
        noise_std: Standard deviation of additive Gaussian sensor noise, in 8-bit grey levels.
        blur_probability: Probability that a frame is blurred (box blur, 3 or 5 px).
        lighting_amplitude: Peak relative change of the global lighting gain (0.25 -> gain in 0.75..1.25).
        lighting_period_frames: Mean period of the slow lighting drift, frames.
        occlusion: When False, objects are placed so that their squares do not overlap at spawn time and
            are drawn without depth order effects (still possible to overlap later while moving).
        rotation: When True, shapes rotate slowly (triangle/star/square/cross orientation varies).
        profile: ``"easy"`` (solid shapes coloured by their attribute) or ``"hard"``: the attribute colour is
            only a rim around a textured fill of ANOTHER colour (a mean-colour rule reads the fill), look-alike
            newcomers (same shape, rim and fill colours, other texture), log-uniform sizes, coloured clutter
            shapes in the backdrop, static foreground occluders (poles), a colour cast and a moving light
            gradient, stronger and varying noise, box or directional motion blur. Use :func:`hard_config`.
        occluder_count: Hard profile: number of static foreground poles (vertical or horizontal bars).
    """

    width: int = 640
    height: int = 480
    rate_hz: float = 15.0
    min_objects: int = 3
    max_objects: int = 8
    min_size_px: float = 40.0
    max_size_px: float = 140.0
    min_speed_px_per_frame: float = 0.5
    max_speed_px_per_frame: float = 7.0
    noise_std: float = 6.0
    blur_probability: float = 0.1
    lighting_amplitude: float = 0.25
    lighting_period_frames: float = 120.0
    occlusion: bool = True
    rotation: bool = True
    profile: str = "easy"
    occluder_count: int = 0

    def validate(self) -> None:
        """Check ranges.

        Raises:
            ConfigError: A value is out of range; the message names the field, what was expected and what came.
        """
        checks: list[tuple[bool, str]] = [
            (16 <= self.width <= 8192, f"width in 16..8192 px, got {self.width}"),
            (16 <= self.height <= 8192, f"height in 16..8192 px, got {self.height}"),
            (0.0 < self.rate_hz <= 1000.0, f"rate_hz in (0, 1000], got {self.rate_hz}"),
            (0 <= self.min_objects <= self.max_objects, f"0 <= min_objects <= max_objects, got "
             f"{self.min_objects}..{self.max_objects}"),
            (self.max_objects <= 64, f"max_objects <= 64, got {self.max_objects}"),
            (4.0 <= self.min_size_px <= self.max_size_px, f"4 <= min_size_px <= max_size_px, got "
             f"{self.min_size_px}..{self.max_size_px}"),
            (self.max_size_px <= min(self.width, self.height), f"max_size_px <= min(width, height) = "
             f"{min(self.width, self.height)}, got {self.max_size_px}"),
            (0.0 <= self.min_speed_px_per_frame <= self.max_speed_px_per_frame, "0 <= min_speed <= max_speed "
             f"(px/frame), got {self.min_speed_px_per_frame}..{self.max_speed_px_per_frame}"),
            (0.0 <= self.noise_std <= 64.0, f"noise_std in 0..64, got {self.noise_std}"),
            (0.0 <= self.blur_probability <= 1.0, f"blur_probability in 0..1, got {self.blur_probability}"),
            (0.0 <= self.lighting_amplitude < 1.0, f"lighting_amplitude in [0, 1), got {self.lighting_amplitude}"),
            (self.lighting_period_frames > 0.0, f"lighting_period_frames > 0, got {self.lighting_period_frames}"),
            (self.profile in PROFILES, f"profile in {PROFILES}, got {self.profile!r}"),
            (0 <= self.occluder_count <= 16, f"occluder_count in 0..16, got {self.occluder_count}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"SceneConfig: expected {message}")


def hard_config(width: int = 640, height: int = 480, rate_hz: float = 15.0) -> SceneConfig:
    """The ``hard`` profile (default of evaluation and the demo bag), sizes and speeds scaled to the image.

    Objects 22..200 px (log-uniform) at 640x480, 4 to 10 on screen, 1.5..7 px per frame (more turnover than
    the easy profile), noise 10 grey levels (x0.6..1.6 per frame), 30 % of frames blurred (half box, half
    directional motion blur), lighting +/-35 % plus a colour cast and a moving light gradient, 3 foreground
    poles and 1 wide pillar. Identity: objects of one type (shape, rim colour) share rim and fill colours and
    texture scale within a sequence and differ only in texture kind; 70 % of newcomers are look-alikes of an
    on-screen object (>= 48 px, same size +/- 4 %); an object crossing behind the pillar may be replaced there
    by a look-alike (see ``multidnn_sched.scenes.identity``).
    """
    scale = min(width / 640.0, height / 480.0)
    return SceneConfig(
        width=width, height=height, rate_hz=rate_hz, min_objects=4, max_objects=10,
        min_size_px=max(4.0, 22.0 * scale), max_size_px=max(4.0, min(200.0 * scale, float(min(width, height)))),
        min_speed_px_per_frame=1.5 * scale, max_speed_px_per_frame=7.0 * scale,
        noise_std=10.0, blur_probability=0.3, lighting_amplitude=0.35, lighting_period_frames=120.0,
        profile="hard", occluder_count=3,
    )


def easy_config(width: int = 640, height: int = 480, rate_hz: float = 15.0) -> SceneConfig:
    """The ``easy`` profile (``SceneConfig()`` defaults) with sizes and speeds scaled to the image."""
    scale = min(width / 640.0, height / 480.0)
    base = SceneConfig()
    return SceneConfig(
        width=width, height=height, rate_hz=rate_hz,
        min_size_px=max(4.0, base.min_size_px * scale), max_size_px=max(4.0, base.max_size_px * scale),
        min_speed_px_per_frame=base.min_speed_px_per_frame * scale,
        max_speed_px_per_frame=base.max_speed_px_per_frame * scale,
    )


def profile_config(profile: str, width: int = 640, height: int = 480, rate_hz: float = 15.0) -> SceneConfig:
    """``easy_config`` or ``hard_config`` by name.

    Raises:
        ConfigError: unknown profile name.
    """
    if profile == "hard":
        return hard_config(width, height, rate_hz)
    if profile == "easy":
        return easy_config(width, height, rate_hz)
    raise ConfigError(f"scene profile: expected one of {PROFILES}, got {profile!r}")
