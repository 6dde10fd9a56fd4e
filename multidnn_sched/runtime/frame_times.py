"""When a frame waited and ran in a runtime: the record a resolved ``Future`` carries for the ROS latency breakdown.

The executor (and the ROS baseline runtime) attach a :class:`FrameTimes` to each frame's future just before
resolving it with a result, so a caller can split its latency into queue wait and model time without another
lookup. Times are seconds on the runtime's clock (``time.perf_counter`` by default, the clock the ROS nodes use).
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

FRAME_TIMES_ATTRIBUTE = "frame_times"
"""Name of the attribute of a resolved future that holds its :class:`FrameTimes`."""


@dataclass(frozen=True)
class FrameTimes:
    """One frame's passage through a runtime.

    Attributes:
        arrival_sec: when it was submitted.
        started_sec: when its first block started (after the pending queue and the ready heap).
        finished_sec: when its last block finished.
    """

    arrival_sec: float
    started_sec: float
    finished_sec: float

    @property
    def queue_wait_ms(self) -> float:
        return (self.started_sec - self.arrival_sec) * 1000.0

    @property
    def run_ms(self) -> float:
        return (self.finished_sec - self.started_sec) * 1000.0


def attach_frame_times(future: Future, times: FrameTimes) -> None:
    """Store ``times`` on ``future`` (before it is resolved, so a done-callback sees them)."""
    setattr(future, FRAME_TIMES_ATTRIBUTE, times)


def frame_times(future: Future) -> FrameTimes | None:
    """The :class:`FrameTimes` a runtime attached to ``future``; ``None`` when it attached none (fakes)."""
    times = getattr(future, FRAME_TIMES_ATTRIBUTE, None)
    return times if isinstance(times, FrameTimes) else None
