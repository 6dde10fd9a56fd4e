"""What the executor queues: frames, per-model state, ready-heap jobs, and the admission credit.

A model has a bounded deque of pending frames and at most ``max_in_flight`` frames dispatched (``in_flight``,
oldest first: their results are released in that order); a dispatched frame is a :class:`Job` in the ready
heap ordered by ``key`` (absolute deadline or arrival, then priority), carrying its progress through the
model's blocks. Admission control admits an exact regular share of arriving frames.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from fractions import Fraction

from multidnn_sched.runtime.block import Carry, PartitionedModel
from multidnn_sched.runtime.decisions import Mode
from multidnn_sched.runtime.stats import ModelStats

SLOWDOWN_WINDOW = 32
"""Frames behind a model's slowdown figure (median of observed / solo device time per frame)."""
ADMIT_PATTERN_MAX_DENOMINATOR = 1000
"""Admission fractions become exact ``Fraction`` credits (denominator <= 1000): 1/3 admits exactly every third
frame for ever, with no float drift to patch by a tolerance."""

_NO_CREDIT = Fraction(0)


@dataclass(eq=False)
class Frame:
    future: Future
    carry: Carry
    arrival_sec: float
    started_sec: float | None = None
    """When its first block started (the :class:`~multidnn_sched.runtime.frame_times.FrameTimes` attached)."""
    outcome: Outcome | None = None
    """Set when its job ended; the future is resolved once every older dispatched frame of the model is."""


@dataclass
class Outcome:
    """How a dispatched frame's job ended, kept until the frame is released in order."""

    result: Carry
    error: BaseException | None
    shed: bool = False
    observed_ms: float = 0.0
    solo_ms: float | None = None


@dataclass
class Model:
    pm: PartitionedModel
    deadline_ms: float
    priority: int
    queue_depth: int
    accuracy: float | None
    example_input: Carry | None
    modes: list[Mode]
    stats: ModelStats
    latencies: deque
    recent: deque
    """The policy's window: end-to-end latency (ms) of each recent frame, ``None`` for one not computed."""
    overridden: set[str] = field(default_factory=set)
    pending: deque = field(default_factory=deque)
    arrivals: deque = field(default_factory=lambda: deque(maxlen=32))
    in_flight: deque = field(default_factory=deque)
    """Dispatched frames (in the ready heap or running), oldest first."""
    max_in_flight: int = 1
    """How many of its frames may be dispatched at once (the executor's ``frames_in_flight``)."""
    last_profile_sec: float | None = None
    admit_fraction: float = 1.0
    admit_credit: Fraction = field(default_factory=Fraction)
    slowdowns: deque = field(default_factory=lambda: deque(maxlen=SLOWDOWN_WINDOW))
    expected_rate_hz: float | None = None
    unrefuted_sheds: int = 0
    """Frames shed before their first block since a block of this model last ran: sheds on predictions that no
    run has refreshed since (see ``BlockExecutor.shed_probe_frames``)."""


@dataclass(order=True)
class Job:
    key: tuple[float, int]
    seq: int
    model: Model = field(compare=False)
    frame: Frame = field(compare=False)
    block_index: int = field(default=0, compare=False)
    carry: Carry = field(default=None, compare=False)
    observed_ms: float = field(default=0.0, compare=False)
    solo_ms: float | None = field(default=0.0, compare=False)
    predicted_ms: list[float] | None = field(default=None, compare=False)
    """Per block, the predicted latency of its active implementation (the shedding check's figures): taken once
    per frame and kept current as the frame's own blocks run, re-taken when ``predicted_epoch`` goes stale."""
    predicted_epoch: tuple[int, int] | None = field(default=None, compare=False)
    probe: bool = field(default=False, compare=False)
    """A frame run to refresh its model's predictions after a run of sheds: never shed itself."""


def admit(model: Model) -> bool:
    """Credit-based admission (caller holds the executor's lock): evenly spread, ``admit_fraction`` of frames
    pass, exactly."""
    if model.admit_fraction >= 1.0:
        if model.admit_credit:
            model.admit_credit = _NO_CREDIT  # not a new Fraction per frame: ~15 us each on the submit path
        return True
    model.admit_credit += Fraction(model.admit_fraction).limit_denominator(ADMIT_PATTERN_MAX_DENOMINATOR)
    if model.admit_credit >= 1:
        model.admit_credit -= 1
        return True
    return False


def fail(frame: Frame, error: BaseException) -> None:
    try:
        frame.future.set_exception(error)
    except InvalidStateError:  # cancelled or already resolved by the caller meanwhile
        pass
