"""What any scheduler could do with a workload: an upper bound and an ideal-scheduler simulation.

Both take the run plan (every model's arrival instants) and each model's measured solo service time — one frame
through the whole model, alone, with every core — so they say where a target is physically out of reach:

* :func:`capacity_bound` — an UPPER BOUND on the on-time frames of any scheduler on this device: a frame on
  time was computed, computed frames must fit in the timed window's device time (plus what the queue may hold
  at its start), so at most the cheapest frames that fit can be on time (a fluid knapsack: sort frames by cost,
  take them while the summed work fits). A frame's cost is the device time it occupies at its model's most
  efficient thread count (:func:`device_cost_ms`): overlapping models with fewer threads each may use the
  cores better than one model with all of them (small inputs scale badly), and the bound must allow for it.
* :func:`simulate_ideal_edf` — an ACHIEVABLE reference: a zero-overhead single server, preemptive at any
  instant, earliest absolute deadline first, that never starts (and abandons) a frame that can no longer make
  its deadline, with each model's queue depth (newest wins). It is a strong heuristic, not the optimum (the
  most on-time frames with release times is NP-hard in general), so it may score below the capacity bound.
  Real modes pay dispatch, Python and cache costs it does not, and cannot preempt inside a block; beating it
  by a wide margin would be a measurement error.

Pure functions with numbers in and numbers out (unit-tested with hand-computed cases).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass

from multidnn_sched.bench.runs import RunPlan

_EPS_SEC = 1e-12


@dataclass(frozen=True)
class BoundFigures:
    """Per model and overall: on-time frames out of the offered (timed) frames.

    Attributes:
        on_time: model -> frames on time (a float for the fluid bound).
        offered: model -> timed frames offered.
    """

    on_time: dict[str, float]
    offered: dict[str, int]

    @property
    def on_time_rate(self) -> float:
        total = sum(self.offered.values())
        return sum(self.on_time.values()) / total if total else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "on_time_rate": self.on_time_rate,
            "models": {
                name: {"on_time": self.on_time[name], "offered": self.offered[name],
                       "on_time_rate": self.on_time[name] / self.offered[name] if self.offered[name] else 0.0}
                for name in self.offered
            },
        }


def capacity_bound(
    plan: RunPlan,
    service_ms: Mapping[str, float],
    deadline_ms: Mapping[str, float],
    *,
    device_cost_ms: Mapping[str, float] | None = None,
) -> BoundFigures:
    """Upper bound on on-time frames of the timed window (see the module docstring).

    The device time available to the timed frames is the window's length plus the longest deadline (a frame
    arriving at the end of the window may still be computed before its deadline); frames whose service alone
    exceeds their deadline can never be on time.

    ``device_cost_ms``: the device time one frame occupies at its most efficient thread count (see
    :func:`device_cost_ms`); default ``service_ms`` (the solo latency with every core, which assumes the model
    scales perfectly over the cores). ``service_ms`` still decides whether a frame can make its deadline at all.
    """
    _check(plan, service_ms, deadline_ms)
    cost_of = dict(service_ms) if device_cost_ms is None else dict(device_cost_ms)
    _check(plan, cost_of, deadline_ms)
    window_sec = max(p.timed_frames / p.rate_hz for p in plan.models.values())
    budget_ms = window_sec * 1000.0 + max(deadline_ms[name] for name in plan.models)
    frames = sorted(
        (cost_of[name], name) for name, p in plan.models.items() for _ in range(p.timed_frames)
        if service_ms[name] <= deadline_ms[name]
    )
    on_time: dict[str, float] = dict.fromkeys(plan.models, 0.0)
    for cost_ms, name in frames:
        if budget_ms <= 0.0:
            break
        take = min(1.0, budget_ms / cost_ms) if cost_ms > 0 else 1.0
        on_time[name] += take
        budget_ms -= take * cost_ms
    return BoundFigures(on_time, {name: p.timed_frames for name, p in plan.models.items()})


def device_cost_ms(solo_ms_by_threads: Mapping[int, Mapping[str, float]], cores: int) -> dict[str, float]:
    """Device time per frame at each model's most efficient thread count: ``min over t of solo_t x t / cores``.

    Args:
        solo_ms_by_threads: intra-op thread count -> model -> solo latency (ms) with that many threads.
        cores: the device's usable cores.

    A frame computed with ``t`` of the ``cores`` threads occupies ``t / cores`` of the device for its latency,
    and the rest of the cores can serve other frames meanwhile. With every core this is the solo latency; a
    model that scales badly over the cores (small inputs: the measured 2-core classifier took 50 ms with two
    threads, 2026-12-06) costs less device time per frame with one thread beside others, which is what the
    ``threads`` mode exploits — so a bound built on the every-core latency alone is not an upper bound (that
    day's ``threads`` run served 0.914 of the default workload's frames on time against a 0.671 "bound").
    Each thread count's latency is measured alone, so contention between overlapping frames can only make the
    real cost higher: the bound stays an upper bound.
    """
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    out: dict[str, float] = {}
    for threads, solo in solo_ms_by_threads.items():
        if not 1 <= threads <= cores:
            raise ValueError(f"thread count {threads} outside 1..{cores}")
        for name, ms in solo.items():
            cost = ms * threads / cores
            out[name] = min(out.get(name, cost), cost)
    return out


@dataclass(order=True)
class _Frame:
    deadline_sec: float
    arrival_sec: float
    model: str
    timed: bool
    left_sec: float


def simulate_ideal_edf(
    plan: RunPlan,
    service_ms: Mapping[str, float],
    deadline_ms: Mapping[str, float],
    queue_depth: Mapping[str, int],
) -> BoundFigures:
    """On-time frames of an ideal preemptive EDF server with stale-frame skipping (module docstring).

    Per model at most one frame is in service or preempted and at most ``queue_depth`` wait behind it; a new
    arrival beyond that drops the oldest waiting frame (newest wins), as every real mode does.
    """
    _check(plan, service_ms, deadline_ms)
    events: list[tuple[float, int, str, bool]] = []
    for name, p in plan.models.items():
        for i, t in enumerate(p.arrivals_sec(0.0)):
            events.append((t, len(events), name, i >= p.warmup_frames))
    events.sort()
    waiting: dict[str, list[_Frame]] = {name: [] for name in plan.models}
    active: list[_Frame] = []  # heap by absolute deadline: at most one frame per model
    on_time = dict.fromkeys(plan.models, 0.0)
    now = 0.0
    index = 0

    def hopeless(frame: _Frame, at_sec: float) -> bool:
        # Firm deadlines, on-time frames counted: work on a frame that cannot make it is wasted, so the ideal
        # server abandons it even when the model could never make it (the executor keeps such late answers).
        return at_sec + frame.left_sec > frame.deadline_sec + _EPS_SEC

    def promote(name: str, at_sec: float) -> None:
        while waiting[name]:
            frame = waiting[name].pop(0)
            if not hopeless(frame, at_sec):
                heapq.heappush(active, frame)
                return

    while index < len(events) or active:
        next_arrival = events[index][0] if index < len(events) else float("inf")
        while active and hopeless(active[0], now):
            dropped = heapq.heappop(active)
            promote(dropped.model, now)
        if not active:
            now = max(now, next_arrival)
        else:
            frame = active[0]
            finish = now + frame.left_sec
            if finish <= next_arrival:
                heapq.heappop(active)
                now = finish
                if frame.timed and now <= frame.deadline_sec + _EPS_SEC:
                    on_time[frame.model] += 1.0
                promote(frame.model, now)
                continue
            frame.left_sec -= next_arrival - now
            now = next_arrival
        while index < len(events) and events[index][0] <= now + _EPS_SEC:
            t, _, name, timed = events[index]
            index += 1
            new = _Frame(t + deadline_ms[name] / 1000.0, t, name, timed, service_ms[name] / 1000.0)
            busy = any(f.model == name for f in active)
            if not busy:
                heapq.heappush(active, new)
                continue
            waiting[name].append(new)
            if len(waiting[name]) > queue_depth.get(name, 1):
                waiting[name].pop(0)
        heapq.heapify(active)
    return BoundFigures(on_time, {name: p.timed_frames for name, p in plan.models.items()})


def _check(plan: RunPlan, service_ms: Mapping[str, float], deadline_ms: Mapping[str, float]) -> None:
    missing = [n for n in plan.models if n not in service_ms or n not in deadline_ms]
    if missing:
        raise ValueError(f"bound: no service time or deadline for {missing}")
    bad = {n: service_ms[n] for n in plan.models if not service_ms[n] > 0.0}
    if bad:
        raise ValueError(f"bound: service times must be > 0 ms, got {bad}")
