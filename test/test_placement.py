"""Tests of multidnn_sched.runtime.placement and the executor's ``placement="pinned"`` (partitioned scheduling)."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch
from torch import nn

from multidnn_sched.exceptions import ConfigError
from multidnn_sched.runtime.block import Block, PartitionedModel
from multidnn_sched.runtime.executor import BlockExecutor
from multidnn_sched.runtime.placement import place_models


def test_the_heaviest_model_gets_a_worker_and_the_rest_balance() -> None:
    # the held-out 25 Hz tight workload's one-thread figures: detector 71 ms / 40 ms, classifier 32 / 40, ...
    homes = place_models({"detector": 1.77, "classifier": 0.81, "embedder": 0.35}, 2)
    assert homes["classifier"] == homes["embedder"] != homes["detector"]
    homes = place_models({"a": 0.4, "b": 0.3, "c": 0.3, "d": 0.2}, 2)
    assert homes == {"a": 0, "b": 1, "c": 1, "d": 0}  # worst fit: 0.6 / 0.6
    assert place_models({"x": 0.5, "y": 0.5}, 2) == {"x": 0, "y": 1}  # ties: name, then the lowest worker
    assert place_models({"x": 0.5, "y": 0.5}, 1) == {"x": 0, "y": 0}
    assert place_models({}, 3) == {}


@pytest.mark.parametrize(("loads", "workers"), [({"a": 1.0}, 0), ({"a": math.nan}, 2), ({"a": -0.1}, 2)])
def test_place_models_rejects_bad_arguments(loads: dict[str, float], workers: int) -> None:
    with pytest.raises(ValueError, match="place_models"):
        place_models(loads, workers)


def test_pinned_placement_needs_several_fixed_workers_and_a_known_name() -> None:
    with pytest.raises(ConfigError, match="num_workers >= 2"):
        BlockExecutor(num_workers=1, placement="pinned", decision_interval_sec=None)
    with pytest.raises(ConfigError, match="placement must be one of"):
        BlockExecutor(num_workers=2, placement="partitioned", decision_interval_sec=None)


class WhereRan(nn.Module):
    """Sleeps, and records the worker thread it ran on per model tag."""

    def __init__(self, sleep_sec: float, seen: dict[str, set[str]], tag: str) -> None:
        super().__init__()
        self.sleep_sec, self.seen, self.tag = sleep_sec, seen, tag
        self.lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.seen.setdefault(self.tag, set()).add(threading.current_thread().name)
        time.sleep(self.sleep_sec)
        return x


@pytest.mark.parametrize("placement", ["shared", "pinned"])
def test_pinned_models_run_only_on_their_home_worker(placement: str) -> None:
    """One heavy model and two light ones on two workers: pinned, the heavy one has a worker to itself and no
    model's blocks ever run on another worker, even while the heavy one's worker idles (partitioned scheduling
    is not work-conserving, by design); shared, the light ones spread over both workers."""
    seen: dict[str, set[str]] = {}
    ex = BlockExecutor(num_workers=2, placement=placement, shed_late_frames=False, decision_interval_sec=None,
                       reprofile_idle_sec=None)
    try:
        for name, sleep_sec in (("heavy", 0.03), ("light_a", 0.001), ("light_b", 0.001)):
            blocks = [Block(f"b{i}", WhereRan(sleep_sec, seen, name)) for i in range(2)]
            ex.register_model(PartitionedModel(name, blocks), deadline_ms=1000.0, queue_depth=16,
                              example_input=torch.zeros(1))
            ex.profile_solo(name, repeats=1, warmup=0)
        # phase 1, every model at 50 Hz: heavy 60 ms a frame (load 3), light 2 ms (0.1 each)
        futures = []
        for _ in range(12):
            futures += [ex.submit(name, torch.zeros(1)) for name in ("heavy", "light_a", "light_b")]
            time.sleep(0.02)
        for future in futures:
            future.result(timeout=30)
        seen.clear()
        # phase 2, the heavy model idle: both light models at once, two ready jobs and two free workers
        futures = []
        for _ in range(12):
            futures += [ex.submit(name, torch.zeros(1)) for name in ("light_a", "light_b")]
            time.sleep(0.02)
        for future in futures:
            future.result(timeout=30)
        homes = ex.homes()
        if placement == "shared":
            assert homes == {}
            assert len(seen["light_a"] | seen["light_b"]) == 2  # both workers served the light models
        else:
            assert homes["light_a"] == homes["light_b"] != homes["heavy"]
            assert seen["light_a"] == seen["light_b"] and len(seen["light_a"]) == 1, seen  # never off home
    finally:
        assert ex.shutdown(timeout_sec=5.0)
