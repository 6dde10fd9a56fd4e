"""``BlockExecutor(worker_threads=N)``: the partitioned CPU pool — every parallel block runs with exactly N
intra-op threads, never greedy, a sequential block alone with ``sequential_threads`` (every core by default),
each profiled and LAG-measured at its own count; and the bench workload keys."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
import yaml
from test_executor import FakeClock, ThreadTick
from torch import nn

from multidnn_sched.bench.workload import load_workload
from multidnn_sched.exceptions import ConfigError
from multidnn_sched.ros.shared_runtime import SharedRuntime
from multidnn_sched.runtime.block import Block, PartitionedModel
from multidnn_sched.runtime.device import partitioned_cpu_pool, resolve_pool, usable_cores
from multidnn_sched.runtime.executor import BlockExecutor

ROOT = Path(__file__).resolve().parents[1]


class ThreadRecorder(nn.Module):
    """Records the calling thread's intra-op thread count and how many recorders run at once."""

    running = 0
    lock = threading.Lock()

    def __init__(self, seen: list[int], overlap: list[int], hold: threading.Event | None = None) -> None:
        super().__init__()
        self.seen, self.overlap, self.hold = seen, overlap, hold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with ThreadRecorder.lock:
            ThreadRecorder.running += 1
            self.overlap.append(ThreadRecorder.running)
        self.seen.append(torch.get_num_threads())
        if self.hold is not None:
            self.hold.wait(0.2)
        with ThreadRecorder.lock:
            ThreadRecorder.running -= 1
        return x


def _executor(schedule: str, worker_threads: int | None, num_workers: int = 2,
              sequential_threads: int | None = None) -> BlockExecutor:
    return BlockExecutor(schedule=schedule, cpu_threads=2, num_workers=num_workers, worker_threads=worker_threads,
                         sequential_threads=sequential_threads, shed_late_frames=False, decision_interval_sec=None,
                         reprofile_idle_sec=None)


@pytest.mark.parametrize(("schedule", "worker_threads", "sequential_threads", "expected"),
                         [("sequential", None, None, 2), ("sequential", 1, None, 2), ("sequential", 1, 1, 1),
                          ("parallel", None, None, 2), ("parallel", 1, None, 1)])
def test_block_threads_follow_the_pool(schedule: str, worker_threads: int | None, sequential_threads: int | None,
                                       expected: int) -> None:
    """A lone frame on an idle device: elastic gives it every core (sequential: the exclusive slot; parallel:
    greedy on an idle device); the partitioned pool keeps a parallel block at the fixed count and runs a
    sequential one with every core, or with ``sequential_threads``."""
    seen: list[int] = []
    before = torch.get_num_threads()
    ex = _executor(schedule, worker_threads, sequential_threads=sequential_threads)
    try:
        ex.register_model(PartitionedModel("m", [Block("b", ThreadRecorder(seen, []))]), deadline_ms=1000.0)
        ex.submit("m", torch.zeros(1)).result(timeout=10)
        assert seen == [expected]
    finally:
        torch.set_num_threads(before)
        assert ex.shutdown(timeout_sec=5.0)


def test_partitioned_parallel_blocks_overlap_and_sequential_ones_run_alone() -> None:
    for schedule, expected_max, expected_threads in (("parallel", 2, 1), ("sequential", 1, 2)):
        seen: list[int] = []
        overlap: list[int] = []
        hold = threading.Event()
        ex = _executor(schedule, 1)
        try:
            for name in ("a", "b"):
                ex.register_model(PartitionedModel(name, [Block("b", ThreadRecorder(seen, overlap, hold))]),
                                  deadline_ms=1000.0, queue_depth=2)
            futures = [ex.submit(name, torch.zeros(1)) for name in ("a", "b")]
            for fut in futures:
                fut.result(timeout=10)
            assert max(overlap) == expected_max, schedule
            assert set(seen) == {expected_threads}, schedule
        finally:
            assert ex.shutdown(timeout_sec=5.0)


@pytest.mark.parametrize(("worker_threads", "expected_threads", "expected_solo_ms"), [(None, 2, 4.0), (1, 1, 10.0)])
def test_profiling_times_the_fixed_count(worker_threads: int | None, expected_threads: int,
                                         expected_solo_ms: float) -> None:
    """Solo latency (LAG's reference) is measured at the thread count the blocks will run with."""
    clock = FakeClock()
    before = torch.get_num_threads()
    ex = BlockExecutor(clock=clock, cpu_threads=2, num_workers=2, worker_threads=worker_threads,
                       shed_late_frames=False, decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        ex.register_model(PartitionedModel("m", [Block("t", ThreadTick(clock, {1: 10.0, 2: 4.0}))]),
                          deadline_ms=100.0, example_input=torch.zeros(1))
        solo = ex.profile_solo(repeats=3)
        assert solo[("m", "t", "original")] == pytest.approx(expected_solo_ms)
        assert ex.stats().blocks[("m", "t")].threads_alone == expected_threads
    finally:
        torch.set_num_threads(before)
        assert ex.shutdown(timeout_sec=5.0)


def test_sequential_blocks_are_profiled_and_measured_at_their_own_thread_count() -> None:
    """Partitioned pool 2 x 1: every block is profiled at 1 thread (parallel) and at 2 (sequential, every core);
    a sequential run is measured against the 2-thread solo (LAG ~0 alone), the parallel figures stay those of
    1 thread, and the policy sees both solos (``sequential_solo_ms``) and the device's ``sequential_threads``."""
    clock = FakeClock()
    before = torch.get_num_threads()
    ex = BlockExecutor(clock=clock, cpu_threads=2, num_workers=2, worker_threads=1, shed_late_frames=False,
                       decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        assert ex.sequential_threads == 2
        ex.register_model(PartitionedModel("m", [Block("t", ThreadTick(clock, {1: 10.0, 2: 4.0}))]),
                          deadline_ms=100.0, example_input=torch.zeros(1))
        solo = ex.profile_solo(repeats=3)
        assert solo[("m", "t", "original")] == pytest.approx(10.0)
        obs = ex.observations()
        assert obs.device.sequential_threads == 2 and obs.device.sequential_is_faster
        assert obs.blocks[0].solo_ms == pytest.approx(10.0)
        assert obs.blocks[0].sequential_solo_ms == pytest.approx(4.0)
        ex.set_override("m", "t", mode="sequential")
        for _ in range(3):
            ex.submit("m", torch.zeros(1)).result(timeout=10)
        stats = ex.stats().blocks[("m", "t")]
        assert stats.mode == "sequential"
        assert stats.solo_ms == pytest.approx(4.0)
        assert stats.ema_observed_ms == pytest.approx(4.0)
        assert stats.lag_ms == pytest.approx(0.0, abs=1e-9)
        ex.set_override("m", "t", mode="parallel")
        ex.submit("m", torch.zeros(1)).result(timeout=10)
        stats = ex.stats().blocks[("m", "t")]
        assert stats.solo_ms == pytest.approx(10.0) and stats.lag_ms == pytest.approx(0.0, abs=1e-9)
        assert ex._predicted_run_ms(ex._models["m"]) == (pytest.approx(10.0), pytest.approx(10.0))
        ex.set_override("m", "t", mode="sequential")
        assert ex._predicted_run_ms(ex._models["m"]) == (pytest.approx(4.0), pytest.approx(4.0))
    finally:
        torch.set_num_threads(before)
        assert ex.shutdown(timeout_sec=5.0)


def test_sequential_at_the_parallel_count_keeps_one_set_of_figures() -> None:
    """``sequential_threads=worker_threads``: sequential means "alone at the same count" (the A/B setting);
    nothing is profiled twice and the policy is told sequential is no faster."""
    ex = BlockExecutor(cpu_threads=2, num_workers=2, worker_threads=1, sequential_threads=1,
                       decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        assert ex.sequential_threads is None
        assert not ex.observations().device.sequential_is_faster
    finally:
        assert ex.shutdown(timeout_sec=5.0)


@pytest.mark.parametrize("bad", [0, 3, -1])
def test_worker_threads_out_of_range_is_a_config_error(bad: int) -> None:
    with pytest.raises(ConfigError, match="worker_threads must be None or in 1..2"):
        BlockExecutor(cpu_threads=2, worker_threads=bad, decision_interval_sec=None, reprofile_idle_sec=None)


def test_oversubscribing_pool_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="multidnn_sched.executor"):
        ex = BlockExecutor(cpu_threads=2, num_workers=2, worker_threads=2, decision_interval_sec=None,
                           reprofile_idle_sec=None)
    try:
        assert "oversubscribe" in caplog.text
    finally:
        assert ex.shutdown(timeout_sec=5.0)


@pytest.mark.parametrize(("value", "ok"), [(1, True), (None, True), ("1", False), (0, False), (True, False)])
def test_workload_worker_threads_key(tmp_path: Path, value: object, ok: bool) -> None:
    raw = yaml.safe_load((ROOT / "config/workloads/default.yaml").read_text())
    raw["executor"] = {"num_workers": 2, "worker_threads": value}
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(raw))
    if ok:
        assert load_workload(path).executor.worker_threads == value
    else:
        with pytest.raises(ConfigError, match="executor.worker_threads: expected an integer >= 1 or null"):
            load_workload(path)


@pytest.mark.parametrize(("cores", "models", "expected"),
                         [(2, 3, (2, 1)), (2, 1, (1, 2)), (8, 3, (3, 2)), (1, 3, (1, 1)), (16, 4, (4, 4)),
                          (6, 4, (4, 1))])
def test_partitioned_cpu_pool_fits_the_cores(cores: int, models: int, expected: tuple[int, int]) -> None:
    workers, threads = partitioned_cpu_pool(cores, models)
    assert (workers, threads) == expected
    assert workers * threads <= cores and workers <= models


@pytest.mark.parametrize(("cores", "models"), [(0, 3), (2, 0)])
def test_partitioned_cpu_pool_rejects_empty_inputs(cores: int, models: int) -> None:
    with pytest.raises(ValueError, match="cores >= 1 and models >= 1"):
        partitioned_cpu_pool(cores, models)


@pytest.mark.parametrize(("device", "workers", "threads", "cores", "expected"), [
    ("cpu", None, None, 2, (2, 1)),   # both auto: the partitioned pool
    ("cpu", None, None, 8, (3, 2)),
    ("cpu", 1, None, 2, (1, None)),   # workers given, threads auto: elastic
    ("cpu", 2, 1, 2, (2, 1)),         # both given: as given
    ("cpu", None, 1, 8, (3, 1)),      # a thread budget: as many workers as fit, one per model at most
    ("cpu", None, 4, 2, (1, 4)),      # more threads than cores: left to BlockExecutor's range error
    ("cuda", None, None, 2, (None, None)),
    ("cuda:0", 3, 1, 2, (3, None)),
])
def test_resolve_pool(device: str, workers: int | None, threads: int | None, cores: int,
                      expected: tuple[int | None, int | None]) -> None:
    assert resolve_pool(device, workers, threads, models=3, cores=cores) == expected


def test_container_default_is_the_partitioned_pool() -> None:
    from multidnn_sched.ros.container import CONTAINER_PARAMS

    values = {spec.name: spec.default for spec in CONTAINER_PARAMS}
    models = {name: nn.Sequential(nn.Identity()) for name in ("detector", "embedder", "classifier")}
    runtime = SharedRuntime(models, values, example_inputs={}, variants_manifest=None, profile=False)
    try:
        workers, threads = partitioned_cpu_pool(usable_cores(), 3)
        assert runtime.executor.num_workers == workers
        assert runtime.executor.worker_threads == threads
        status = runtime.status()
        assert (status.workers, status.worker_threads) == (workers, threads)
        assert runtime.submit("embedder", torch.ones(2)).result(timeout=30).tolist() == [1.0, 1.0]
    finally:
        runtime.shutdown()
