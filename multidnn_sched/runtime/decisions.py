"""Typed scheduling decisions: what a policy returns and the executor applies at block boundaries.

A :class:`Decision` is one change: a block's execution *mode* (parallel beside other models' blocks, or
sequential — alone with the whole device), a block's active *variant*, or the *admission* fraction of a model's
arriving frames. Kinds and modes are ``str`` enums, so they compare equal to (and serialize as) their plain
names in JSON, logs and ROS parameters; an admission fraction is a ``float`` in (0, 1], never a string.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from multidnn_sched.exceptions import ConfigError


class Mode(str, enum.Enum):
    """How a block runs: ``parallel`` takes one share of the device beside other models' blocks (CPU: one
    worker's share of the cores; CUDA: the model's stream), ``sequential`` waits for and takes the whole device."""

    PARALLEL = "parallel"
    SEQUENTIAL = "sequential"

    def __str__(self) -> str:
        return self.value


class DecisionKind(str, enum.Enum):
    """What a :class:`Decision` changes."""

    MODE = "mode"
    VARIANT = "variant"
    ADMIT = "admit"

    def __str__(self) -> str:
        return self.value


PARALLEL = Mode.PARALLEL
SEQUENTIAL = Mode.SEQUENTIAL
MODES = tuple(Mode)
ORIGINAL = "original"
"""Name of a block's original (uncompressed) implementation."""
ADMIT = DecisionKind.ADMIT


@dataclass(frozen=True)
class Decision:
    """One change to apply at a block boundary.

    Attributes:
        model: model name.
        block: block name; ``None`` for a model-wide decision (``ADMIT``).
        kind: what changes.
        value: a :class:`Mode` (``MODE``), a variant name (``VARIANT``) or the admitted fraction of frames in
            (0, 1] (``ADMIT``). Plain strings are accepted for modes and converted.
        reason: human-readable why, with the numbers that drove it.
        time_sec: the ``now_sec`` of the decision.

    Raises:
        ConfigError: an unknown kind or mode, a block-less mode/variant decision, or a fraction outside (0, 1].
    """

    model: str
    block: str | None
    kind: DecisionKind
    value: Mode | str | float
    reason: str
    time_sec: float = 0.0

    def __post_init__(self) -> None:
        try:
            kind = DecisionKind(self.kind)
        except ValueError:
            raise ConfigError(
                f"decision kind must be one of {[k.value for k in DecisionKind]}, got {self.kind!r}"
            ) from None
        object.__setattr__(self, "kind", kind)
        if kind is DecisionKind.ADMIT:
            if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
                raise ConfigError(f"admit decision value must be a float fraction, got {self.value!r}")
            if not 0.0 < float(self.value) <= 1.0:
                raise ConfigError(f"admit fraction must be in (0, 1], got {self.value!r}")
            object.__setattr__(self, "value", float(self.value))
            return
        if self.block is None:
            raise ConfigError(f"a {kind.value} decision needs a block, got block=None for {self.model!r}")
        if kind is DecisionKind.MODE:
            try:
                object.__setattr__(self, "value", Mode(self.value))
            except ValueError:
                raise ConfigError(f"mode must be one of {[m.value for m in Mode]}, got {self.value!r}") from None
        elif not isinstance(self.value, str) or not self.value:
            raise ConfigError(f"variant decision value must be a variant name, got {self.value!r}")

    @property
    def admit_fraction(self) -> float | None:
        """The admitted fraction of an ``ADMIT`` decision (``None`` for other kinds)."""
        return float(self.value) if self.kind is DecisionKind.ADMIT else None  # type: ignore[arg-type]

    def describe(self) -> str:
        """``model/block kind=value`` for logs and diagnostics."""
        target = self.model if self.block is None else f"{self.model}/{self.block}"
        value = f"{self.value:.3f}" if isinstance(self.value, float) else str(self.value)
        return f"{target} {self.kind.value}={value}"

    def as_record(self) -> dict[str, object]:
        """JSON-ready dict (plain strings and floats)."""
        return {
            "model": self.model,
            "block": self.block,
            "kind": self.kind.value,
            "value": self.value if isinstance(self.value, float) else str(self.value),
            "reason": self.reason,
            "time_sec": self.time_sec,
        }
