"""The runtimes attach each frame's queue / start / finish times to its future (the ROS latency breakdown)."""

from __future__ import annotations

import time

import torch
from test_executor import Sleep

from multidnn_sched.ros.runtime import DirectRuntime
from multidnn_sched.runtime.block import Block, PartitionedModel
from multidnn_sched.runtime.executor import BlockExecutor
from multidnn_sched.runtime.frame_times import frame_times

SLEEP_SEC = 0.03


def test_block_executor_attaches_queue_wait_and_run_time() -> None:
    ex = BlockExecutor(shed_late_frames=False, decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        ex.register_model(
            PartitionedModel("m", [Block("a", Sleep(SLEEP_SEC)), Block("b", Sleep(SLEEP_SEC))]),
            deadline_ms=1000.0,
            queue_depth=4,
        )
        before = time.perf_counter()
        futures = [ex.submit("m", torch.zeros(1)) for _ in range(2)]
        for future in futures:
            future.result(timeout=5.0)
        first, second = (frame_times(f) for f in futures)
    finally:
        assert ex.shutdown(timeout_sec=5.0)
    assert first is not None and second is not None
    assert before <= first.arrival_sec <= first.started_sec <= first.finished_sec
    assert first.run_ms >= 2 * SLEEP_SEC * 1000 * 0.9  # both blocks
    assert first.queue_wait_ms < SLEEP_SEC * 1000  # it started at once
    # the second frame waited for the first one (one frame of a model dispatched at a time)
    assert second.queue_wait_ms >= 2 * SLEEP_SEC * 1000 * 0.9
    assert second.started_sec >= first.finished_sec - 1e-3


def test_direct_runtime_attaches_run_time_and_no_queue_wait() -> None:
    runtime = DirectRuntime({"m": Sleep(SLEEP_SEC)})
    future = runtime.submit("m", torch.zeros(1))
    times = frame_times(future)
    assert times is not None and times.queue_wait_ms == 0.0
    assert times.run_ms >= SLEEP_SEC * 1000 * 0.9
    failed = runtime.submit("nope", torch.zeros(1))
    assert frame_times(failed) is None and failed.exception() is not None
