"""The scheduling policy's parameters, :class:`PolicyConfig` (one default for the bench, the ROS container and
the executor: the ROS ``policy.*`` parameters and the workloads' ``policy:`` section start from these).

Where each default comes from is in its attribute's description and in the table of ``docs/runtime.md``
("PolicyConfig"): a measurement where one exists, otherwise it is named a design margin of the first version
(2026-11-23) that no held-out workload has tuned.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PolicyConfig:
    """Policy parameters (defaults in parentheses are documented in docs/runtime.md).

    Attributes:
        lag_serialize_ms: minimum LAG (ms) for a block to be serialized.
        lag_serialize_ratio: minimum LAG / solo for a block to be serialized.
        hysteresis: a model is comfortable when latency <= deadline * (1 - hysteresis).
        min_dwell_sec: minimum time between two changes of one block, and how long a model must stay
            comfortable before anything is relaxed.
        settle_sec: after a change to a model, wait this long before its next change.
        accuracy_floor: lowest allowed estimated accuracy relative to the original model.
        serialize_min_cover: serialize only if the model's summed LAG >= this x its overshoot.
        swap_enabled: allow variant swaps.
        serialize_enabled: allow parallel -> sequential changes.
        max_changes: most decisions one :meth:`Policy.decide` call returns.
        max_overload_swaps: most swaps one round makes for an overloaded device (step 4).
        min_swap_gain_ms: a swap must save at least this much solo latency (a free variant 0.1 ms faster is
            churn, not help).
        min_samples: a model needs this many latency samples before it drives any decision.
        relax_dwell_sec: how long a model must stay comfortable before anything of it is relaxed.
        relax_needs_all_comfortable: relax only while EVERY model is comfortable — models share the device,
            so one model's swap-back lengthens the others' latency (without this, swaps flap across models).
        relax_latency_fraction: a swap-back / return to parallel must keep the model's predicted latency at or
            below this fraction of its deadline (and inside the hysteresis band): near saturation a swap-back
            costs more than its own solo difference, because queueing grows with the load.
        relax_max_utilization: a swap-back must keep the device's predicted utilization — sum over models of
            arrival rate x the active blocks' latencies (:func:`device_utilization`) — at or below this (when
            every rate is known).
        shared_device_swaps: a late model may be helped by swapping a block of ANY model (best gain/cost over
            all models, each kept above its own floor): on one shared device another model's heavy block delays
            it as much as its own. ``False``: only the late model's own blocks.
        swap_utilization: swap (when enabled) while the predicted utilization at full frame rate exceeds this,
            even if no model is late yet (``None``: only lateness triggers swaps).
        admission_enabled: admit only a fraction of frames of the costliest models while the device is
            overloaded (see ``admission_utilization``). Off by default — measured on the default workload
            (15 Hz, 2 cores, quiet, 2026-12-02): ``blocks`` served 0.599 of offered frames on time with
            admission on (the predicted utilization, solo x slowdown, ran high and cut the detector to 1/3 and
            the classifier to 1/2 while the device idled) and 0.831 with it off (EDF, block-boundary
            preemption and shedding alone; ``sequential`` 0.778 in the same session). Re-measured 2026-12-06
            (quiet, detector solo 44 ms) with the demand from solo figures alone (no slowdown, the capacity
            bound's own prediction): ``blocks`` 0.648, ``sequential`` 0.722 in the same run — the max-min fair
            shares (detector 0.57, classifier 0.62) rounded down to 1/2 each, below what the loop serves the
            classifier (0.70). Off stays the default.
        parallel_reprobe_sec: a block made sequential because it cost more device time in parallel (step 0)
            returns to parallel after this long, to re-measure: the other models' load changes. 20 s: one bench
            timed window; a probe costs at most one dwell (2 s) of the more expensive mode per 20 s.
        admission_utilization: admission fractions keep the predicted utilization at or below this: the
            device's capacity (1.0), so frames are only refused when the admitted work cannot fit at all.
        min_admit_fraction: no model is admitted less often than this (it is the next model's turn).
    """

    lag_serialize_ms: float = 2.0
    lag_serialize_ratio: float = 0.25
    hysteresis: float = 0.15
    min_dwell_sec: float = 2.0
    settle_sec: float = 1.0
    accuracy_floor: float = 0.97
    serialize_min_cover: float = 0.25
    swap_enabled: bool = True
    serialize_enabled: bool = True
    max_changes: int = 1
    max_overload_swaps: int = 6
    min_swap_gain_ms: float = 0.5
    min_samples: int = 5
    relax_dwell_sec: float = 5.0
    relax_needs_all_comfortable: bool = True
    shared_device_swaps: bool = True
    relax_latency_fraction: float = 0.6
    relax_max_utilization: float = 0.5
    swap_utilization: float | None = 0.6
    admission_enabled: bool = False
    parallel_reprobe_sec: float = 20.0
    admission_utilization: float = 1.0
    min_admit_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.hysteresis < 1.0:
            raise ValueError(f"PolicyConfig.hysteresis must be in [0, 1), got {self.hysteresis!r}")
        if not 0.0 < self.accuracy_floor <= 1.0:
            raise ValueError(f"PolicyConfig.accuracy_floor must be in (0, 1], got {self.accuracy_floor!r}")
        if self.max_changes < 1:
            raise ValueError(f"PolicyConfig.max_changes must be >= 1, got {self.max_changes!r}")
        if not 0.0 < self.admission_utilization <= 1.0:
            raise ValueError(
                f"PolicyConfig.admission_utilization must be in (0, 1], got {self.admission_utilization!r}"
            )
        if not 0.0 < self.min_admit_fraction <= 1.0:
            raise ValueError(f"PolicyConfig.min_admit_fraction must be in (0, 1], got {self.min_admit_fraction!r}")
        if self.swap_utilization is not None and self.swap_utilization <= 0.0:
            raise ValueError(f"PolicyConfig.swap_utilization must be > 0 or None, got {self.swap_utilization!r}")
