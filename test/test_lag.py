"""Tests of multidnn_sched.runtime.lag: pure numbers, fake clock."""

from __future__ import annotations

import pytest
import torch

from multidnn_sched.runtime.lag import LagTracker, ema


class FakeClock:
    def __init__(self) -> None:
        self.now_sec = 0.0

    def __call__(self) -> float:
        return self.now_sec


def test_ema_first_sample_starts_average() -> None:
    assert ema(None, 10.0, 0.2) == 10.0
    assert ema(10.0, 20.0, 0.5) == pytest.approx(15.0)


def test_lag_is_ema_of_observed_minus_solo() -> None:
    clock = FakeClock()
    tracker = LagTracker(alpha=0.5, clock=clock)
    key = ("det", "layer1")
    tracker.set_solo(key, 10.0)
    clock.now_sec = 1.0
    first = tracker.update(key, 14.0)
    assert first.lag_ms == pytest.approx(4.0)
    assert first.ema_observed_ms == pytest.approx(14.0)
    assert first.last_update_sec == 1.0
    second = tracker.update(key, 10.0)
    assert second.lag_ms == pytest.approx(2.0)
    assert second.ema_observed_ms == pytest.approx(12.0)
    assert second.samples == 2


def test_lag_zero_without_solo_then_seeded_by_first_sample_after_profiling() -> None:
    tracker = LagTracker(alpha=0.2)
    key = ("cls", "head")
    assert tracker.update(key, 5.0).lag_ms == 0.0
    tracker.set_solo(key, 3.0)
    assert tracker.update(key, 7.0).lag_ms == pytest.approx(4.0)


def test_set_solo_on_variant_change_keeps_lag_and_moves_observed() -> None:
    tracker = LagTracker(alpha=1.0)
    key = ("det", "head")
    tracker.set_solo(key, 10.0)
    tracker.update(key, 13.0)
    tracker.set_solo(key, 6.0)
    timing = tracker.timing(key)
    assert timing.lag_ms == pytest.approx(3.0)
    assert timing.ema_observed_ms == pytest.approx(9.0)
    tracker.set_solo(key, 6.0, keep_lag=False)
    assert tracker.timing(key).ema_observed_ms is None
    assert tracker.timing(key).lag_ms == 0.0


def test_snapshot_returns_copies() -> None:
    tracker = LagTracker()
    tracker.update(("a", "b"), 1.0)
    snap = tracker.snapshot()
    snap[("a", "b")].samples = 99
    assert tracker.timing(("a", "b")).samples == 1


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_bad_alpha_rejected(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        LagTracker(alpha=alpha)


def test_negative_latency_rejected() -> None:
    with pytest.raises(ValueError, match="observed latency"):
        LagTracker().update(("a", "b"), -1.0)


def test_lone_runs_refine_the_solo_figure_and_contended_runs_feed_lag_and_the_contended_ema() -> None:
    tracker = LagTracker(alpha=0.5)
    key = ("m", "b", "original", 4)
    tracker.set_solo(key, 10.0)
    tracker.update(key, 12.0, alone=True)  # drift, not contention
    t = tracker.timing(key)
    assert t.solo_ms == pytest.approx(11.0) and t.lag_ms == pytest.approx(2.0) and t.ema_contended_ms is None
    tracker.update(key, 21.0)  # beside another block
    t = tracker.timing(key)
    assert t.solo_ms == pytest.approx(11.0) and t.ema_contended_ms == pytest.approx(21.0)
    assert t.lag_ms == pytest.approx(0.5 * 10.0 + 0.5 * 2.0) and t.contended_samples == 1
    fresh = ("m", "b", "original", 32)  # a bucket never profiled: its first lone run is its solo figure
    tracker.update(fresh, 40.0, alone=True)
    assert tracker.timing(fresh).solo_ms == pytest.approx(40.0) and tracker.timing(fresh).lag_ms == 0.0


def test_input_bucket_is_the_batch_size_rounded_up_to_a_power_of_two() -> None:
    from multidnn_sched.runtime.lag import input_bucket

    assert [input_bucket(torch.zeros(n, 3)) for n in (1, 2, 3, 4, 5, 17, 32)] == [1, 2, 4, 4, 8, 32, 32]
    assert input_bucket((torch.zeros(6, 2), torch.zeros(1))) == 8
    assert input_bucket({"x": torch.zeros(0, 2)}) == 1 and input_bucket("no tensor") == 1


def test_peek_reads_the_live_figures_and_timing_returns_a_detached_copy() -> None:
    tracker = LagTracker(alpha=0.5)
    key = ("m", "b", "original", 4)
    assert tracker.peek(key) is None
    tracker.set_solo(key, 10.0)
    live = tracker.update(key, 14.0)
    assert tracker.peek(key) is live
    copy = tracker.timing(key)
    tracker.update(key, 30.0)
    assert live.ema_observed_ms == tracker.peek(key).ema_observed_ms == 22.0
    assert copy.ema_observed_ms == 14.0  # the copy did not follow


def test_bucket_carries_cover_every_other_power_of_two_bucket_at_its_middle() -> None:
    from multidnn_sched.runtime.lag import PROFILE_MAX_BUCKET, bucket_carries, input_bucket

    example = torch.arange(4 * 3, dtype=torch.float32).reshape(4, 3)
    carries = bucket_carries(example)
    assert [c.shape[0] for c in carries] == [1, 2, 6, 12, 24]  # bucket 4 is the example's own
    assert [input_bucket(c) for c in carries] == [1, 2, 8, 16, 32] and 32 == PROFILE_MAX_BUCKET
    assert torch.equal(carries[3][4:8], example) and torch.equal(carries[0][0], example[0])  # rows repeated
    assert bucket_carries(torch.zeros(1, 3, 8, 8)) == []  # a frame, not a batch of crops
    assert bucket_carries((torch.zeros(4, 3), torch.zeros(4))) == []  # a structured carry
    assert [c.shape[0] for c in bucket_carries(example, max_bucket=8)] == [1, 2, 6]
