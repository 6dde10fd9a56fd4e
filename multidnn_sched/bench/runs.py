"""What one model did in one benchmark run: an outcome for every offered frame, and the arrival plan.

Every mode gets the same plan: per model, a continuous open-loop stream of arrivals at the model's rate; the
first ``warmup_frames`` are served like any other frame but not scored (the same untimed warm-up at the real
rate for every mode), the next ``timed_frames`` are the timed window. A timed frame ends in exactly one outcome:
completed (on time or late), dropped (with a cause) or failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DROP_QUEUE = "queue"
"""Dropped by the per-model queue (depth exceeded, the oldest pending frame goes: newest wins)."""
DROP_SHED = "shed"
"""Dropped because it could no longer make its deadline (``runtime.shedding.is_hopeless``)."""
DROP_ADMISSION = "admission"
"""Dropped on arrival by the executor's admission control (blocks modes only)."""
DROP_CAUSES: tuple[str, ...] = (DROP_QUEUE, DROP_SHED, DROP_ADMISSION)


@dataclass(frozen=True)
class ModelPlan:
    """The arrival stream of one model in one run.

    Attributes:
        rate_hz: the model's frame rate in this run.
        warmup_frames: untimed frames served first (at the same rate).
        timed_frames: frames of the timed window (the offered frames the run is scored on).
    """

    rate_hz: float
    warmup_frames: int
    timed_frames: int

    @property
    def total_frames(self) -> int:
        return self.warmup_frames + self.timed_frames

    def arrivals_sec(self, t0: float) -> list[float]:
        """Arrival instants of every frame (warm-up first), ``t0`` = the first one."""
        period = 1.0 / self.rate_hz
        return [t0 + i * period for i in range(self.total_frames)]

    def timed_start_sec(self, t0: float) -> float:
        return t0 + self.warmup_frames / self.rate_hz


@dataclass(frozen=True)
class RunPlan:
    """Arrival streams of every model of one run (same frames, instants and queue depths for every mode)."""

    models: dict[str, ModelPlan]

    @staticmethod
    def uniform(names: list[str], rates_hz: dict[str, float], warmup_sec: float, duration_sec: float) -> RunPlan:
        """Every model: ``warmup_sec`` of untimed frames, then ``duration_sec`` timed, at its own rate."""
        return RunPlan({
            name: ModelPlan(rates_hz[name], int(round(warmup_sec * rates_hz[name])),
                            max(1, int(round(duration_sec * rates_hz[name]))))
            for name in names
        })

    def arrivals_sec(self, t0: float) -> dict[str, list[float]]:
        return {name: plan.arrivals_sec(t0) for name, plan in self.models.items()}

    def timed_start_sec(self, t0: float) -> float:
        """When the first timed frame of any model arrives."""
        return min(plan.timed_start_sec(t0) for plan in self.models.values())

    @property
    def shared_camera(self) -> bool:
        """True when every model gets the same frames at the same instants (joint on-time is defined)."""
        plans = list(self.models.values())
        return all(p == plans[0] for p in plans[1:])


@dataclass
class ModelRun:
    """The outcome of every timed frame of one model in one run.

    Frame indices count from the first warm-up frame; indices below ``first_timed`` are warm-up and are not
    recorded (``record_*`` ignores them), so a run holds exactly the timed window.

    Attributes:
        name: model name.
        first_timed: index of the first timed frame (= the plan's ``warmup_frames``).
        offered: timed frames offered (= the plan's ``timed_frames``).
        latency_ms: frame index -> completion − arrival, ms, of every completed frame.
        dropped: frame index -> drop cause (one of ``DROP_CAUSES``).
        failed: frame indices whose computation raised.
        outputs: unique-frame index -> compact output of the first completed frame showing it (task metric).
    """

    name: str
    first_timed: int = 0
    offered: int = 0
    latency_ms: dict[int, float] = field(default_factory=dict)
    dropped: dict[int, str] = field(default_factory=dict)
    failed: list[int] = field(default_factory=list)
    outputs: dict[int, object] = field(default_factory=dict)

    def timed(self, index: int) -> bool:
        return index >= self.first_timed

    def record_done(self, index: int, latency_ms: float) -> bool:
        """Record a completed frame; returns True if it is timed (the caller then keeps its output)."""
        if not self.timed(index):
            return False
        self.latency_ms[index] = latency_ms
        return True

    def record_drop(self, index: int, cause: str) -> None:
        if cause not in DROP_CAUSES:
            raise ValueError(f"expected a drop cause in {DROP_CAUSES}, got {cause!r}")
        if self.timed(index):
            self.dropped[index] = cause

    def record_failure(self, index: int) -> None:
        if self.timed(index):
            self.failed.append(index)

    def keep_output(self, unique_index: int, output: object) -> None:
        self.outputs.setdefault(unique_index, output)

    @property
    def completed(self) -> list[int]:
        return sorted(self.latency_ms)

    @property
    def latencies_ms(self) -> list[float]:
        """Latencies of completed frames, in frame order."""
        return [self.latency_ms[i] for i in self.completed]

    def dropped_by_cause(self) -> dict[str, int]:
        counts = dict.fromkeys(DROP_CAUSES, 0)
        for cause in self.dropped.values():
            counts[cause] += 1
        return counts

    def unaccounted(self) -> list[int]:
        """Timed frames with no outcome (a runner bug if non-empty after a run)."""
        seen = set(self.latency_ms) | set(self.dropped) | set(self.failed)
        return [i for i in range(self.first_timed, self.first_timed + self.offered) if i not in seen]

    def on_time(self, index: int, deadline_ms: float) -> bool:
        latency = self.latency_ms.get(index)
        return latency is not None and latency <= deadline_ms
