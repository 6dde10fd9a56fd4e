"""Tests of multidnn_sched.bench.bound with hand-computed cases."""

from __future__ import annotations

import pytest

from multidnn_sched.bench.bound import capacity_bound, device_cost_ms, simulate_ideal_edf
from multidnn_sched.bench.runs import ModelPlan, RunPlan


def plan(**models: tuple[float, int, int]) -> RunPlan:
    return RunPlan({name: ModelPlan(rate, warmup, timed) for name, (rate, warmup, timed) in models.items()})


def test_an_underloaded_model_is_served_completely() -> None:
    p = plan(m=(10.0, 0, 10))
    assert simulate_ideal_edf(p, {"m": 50.0}, {"m": 100.0}, {"m": 1}).on_time == {"m": 10.0}
    assert capacity_bound(p, {"m": 50.0}, {"m": 100.0}).on_time == {"m": 10.0}


def test_overload_two_of_three_frames_then_the_stale_one_is_skipped() -> None:
    # 150 ms of work every 100 ms, deadline 200 ms: frame 0 ends at 0.15, frame 1 at 0.30 (just on time), frame 2
    # could only end at 0.45 > 0.40 and is skipped, frame 3 starts fresh at 0.30 ... 2 of every 3 on time.
    p = plan(m=(10.0, 0, 9))
    ideal = simulate_ideal_edf(p, {"m": 150.0}, {"m": 200.0}, {"m": 1})
    assert ideal.on_time == {"m": 6.0}
    bound = capacity_bound(p, {"m": 150.0}, {"m": 200.0})
    assert bound.on_time["m"] == pytest.approx((900.0 + 200.0) / 150.0)  # device time of the window / cost
    assert ideal.on_time_rate <= bound.on_time_rate


def test_edf_preempts_for_the_tighter_deadline_and_warm_up_frames_are_not_scored() -> None:
    # slow: 1 frame at t=0, 80 ms of work, deadline 200 ms; fast: 10 Hz, 10 ms, deadline 20 ms. Every fast
    # frame preempts the slow one and makes it; the slow frame still ends at 0.09 + 0 preemption losses.
    p = plan(slow=(1.0, 0, 1), fast=(10.0, 2, 3))
    ideal = simulate_ideal_edf(p, {"slow": 80.0, "fast": 10.0}, {"slow": 200.0, "fast": 20.0},
                               {"slow": 1, "fast": 1})
    assert ideal.on_time == {"slow": 1.0, "fast": 3.0}  # the 2 warm-up frames of fast were served, not scored
    assert ideal.offered == {"slow": 1, "fast": 3}


def test_a_model_that_cannot_make_its_deadline_even_alone_counts_nothing_in_the_bound() -> None:
    p = plan(big=(5.0, 0, 5), small=(5.0, 0, 5))
    bound = capacity_bound(p, {"big": 300.0, "small": 10.0}, {"big": 200.0, "small": 50.0})
    assert bound.on_time == {"big": 0.0, "small": 5.0}
    ideal = simulate_ideal_edf(p, {"big": 300.0, "small": 10.0}, {"big": 200.0, "small": 50.0},
                               {"big": 1, "small": 1})
    assert ideal.on_time["big"] == 0.0 and ideal.on_time["small"] >= 4.0


def test_missing_or_bad_service_times_are_errors() -> None:
    p = plan(m=(10.0, 0, 2))
    with pytest.raises(ValueError, match="no service time"):
        capacity_bound(p, {}, {"m": 100.0})
    with pytest.raises(ValueError, match="> 0 ms"):
        simulate_ideal_edf(p, {"m": 0.0}, {"m": 100.0}, {"m": 1})


def test_device_cost_takes_the_most_efficient_thread_count() -> None:
    # a: 50 ms with 2 threads, 60 ms with 1 -> 1 thread occupies half the device: 30 ms; b scales: 2 threads best
    cost = device_cost_ms({2: {"a": 50.0, "b": 20.0}, 1: {"a": 60.0, "b": 45.0}}, cores=2)
    assert cost == {"a": 30.0, "b": 20.0}
    with pytest.raises(ValueError, match="outside"):
        device_cost_ms({4: {"a": 1.0}}, cores=2)


def test_the_bound_counts_device_cost_but_deadlines_by_the_fastest_latency() -> None:
    # 10 frames at 10 Hz of 150 ms (every core) against a 200 ms deadline: the every-core cost fits 8 frames
    # (1200 ms / 150 = 8); at 100 ms of device time each (one thread beside another frame) all 10 fit
    p = plan(m=(10.0, 0, 10))
    assert capacity_bound(p, {"m": 150.0}, {"m": 200.0}).on_time["m"] == pytest.approx(1200.0 / 150.0)
    assert capacity_bound(p, {"m": 150.0}, {"m": 200.0}, device_cost_ms={"m": 100.0}).on_time["m"] == 10.0
    # a frame that cannot make its deadline even with every core stays out, however cheap its device time
    assert capacity_bound(p, {"m": 250.0}, {"m": 200.0}, device_cost_ms={"m": 10.0}).on_time["m"] == 0.0
