"""``frames_in_flight``: with more than one (opt-in), consecutive frames of one model overlap on different workers
(pipelining) and their results are still released in arrival order; by default a model has one frame dispatched."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

from multidnn_sched.exceptions import ConfigError, ExecutorShutdownError
from multidnn_sched.runtime.block import Block, PartitionedModel
from multidnn_sched.runtime.executor import FRAMES_IN_FLIGHT, BlockExecutor


class Scripted(nn.Module):
    """Identity whose behaviour depends on the frame (the input's first value): frame 1 waits for ``release``
    (or raises after it, ``fail_first``), frame 2 waits until frame 1 is inside its block; every call records
    (frame, thread) and how many calls overlap."""

    def __init__(self, fail_first: bool = False) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered_first = threading.Event()
        self.ran: dict[int, threading.Event] = {1: threading.Event(), 2: threading.Event()}
        self.calls: list[tuple[int, str]] = []
        self.running = 0
        self.max_running = 0
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frame = int(x.flatten()[0].item())
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.calls.append((frame, threading.current_thread().name))
        if frame == 1:
            self.entered_first.set()
        try:
            if frame == 2:  # deterministic overlap: frame 2 starts only once frame 1 is inside its block
                assert self.entered_first.wait(5.0), "frame 1 never started"
            if frame == 1:
                assert self.release.wait(5.0), "frame 1 was never released"
                if self.fail_first:
                    raise RuntimeError("frame 1 fails")
            return x
        finally:
            with self.lock:
                self.running -= 1
            self.ran.setdefault(frame, threading.Event()).set()


def _executor(worker_threads: int | None, **kwargs: object) -> BlockExecutor:
    """The partitioned pool (``worker_threads`` 1) or the elastic one (``None``); pass ``frames_in_flight``."""
    return BlockExecutor(schedule="parallel", cpu_threads=2, num_workers=2, worker_threads=worker_threads,
                         shed_late_frames=False, decision_interval_sec=None, reprofile_idle_sec=None, **kwargs)


def _register(ex: BlockExecutor, module: nn.Module, blocks: int = 1) -> None:
    extra = [Block(f"tail{i}", nn.Identity()) for i in range(blocks - 1)]
    ex.register_model(PartitionedModel("m", [Block("body", module), *extra]), deadline_ms=10_000.0, queue_depth=1)


def _frame(value: float) -> torch.Tensor:
    return torch.full((1, 2), value)


def test_default_is_one_frame_in_flight() -> None:
    ex = _executor(1)
    try:
        assert ex.frames_in_flight == FRAMES_IN_FLIGHT == 1
    finally:
        ex.shutdown()


def test_frames_in_flight_below_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="frames_in_flight"):
        _executor(1, frames_in_flight=0)


def test_pool_runs_consecutive_frames_of_one_model_at_once_on_two_workers() -> None:
    module = Scripted()
    ex = _executor(1, frames_in_flight=2)
    try:
        assert ex.frames_in_flight == 2
        _register(ex, module)
        first = ex.submit("m", _frame(1.0))
        second = ex.submit("m", _frame(2.0))
        assert module.ran[2].wait(5.0), "frame 2 did not start while frame 1 was running"
        assert module.running == 1 and module.max_running == 2  # frame 1 still inside its block
        module.release.set()
        assert first.result(5.0) is not None and second.result(5.0) is not None
        threads = {frame: thread for frame, thread in module.calls}
        assert threads[1] != threads[2]
        stats = ex.stats().models["m"]
        assert stats.frames_done == 2 and stats.dropped == 0
    finally:
        module.release.set()
        ex.shutdown()


def test_one_frame_in_flight_waits_in_the_pending_queue() -> None:
    module = Scripted()
    ex = _executor(1)
    try:
        assert ex.frames_in_flight == 1
        _register(ex, module)
        first = ex.submit("m", _frame(1.0))
        second = ex.submit("m", _frame(2.0))
        time.sleep(0.2)
        assert not module.ran[2].is_set()  # waits in the pending queue behind frame 1
        module.release.set()
        first.result(5.0)
        second.result(5.0)
        assert module.max_running == 1
    finally:
        module.release.set()
        ex.shutdown()


@pytest.mark.parametrize("fail_first", [False, True])
def test_a_newer_frame_that_ends_first_is_released_after_the_older_one(fail_first: bool) -> None:
    module = Scripted(fail_first=fail_first)
    ex = _executor(1, frames_in_flight=2)
    order: list[int] = []
    try:
        _register(ex, module)
        first = ex.submit("m", _frame(1.0))
        second = ex.submit("m", _frame(2.0))
        first.add_done_callback(lambda _: order.append(1))
        second.add_done_callback(lambda _: order.append(2))
        assert module.ran[2].wait(5.0)
        time.sleep(0.1)
        assert not second.done(), "frame 2 was released before the older frame 1"
        module.release.set()
        if fail_first:
            with pytest.raises(RuntimeError, match="frame 1 fails"):
                first.result(5.0)
        else:
            first.result(5.0)
        assert torch.equal(second.result(5.0), _frame(2.0))
        assert order == [1, 2]
        stats = ex.stats().models["m"]
        assert (stats.frames_done, stats.failed) == ((1, 1) if fail_first else (2, 0))
        assert len(stats.latency_ms) == stats.frames_done
        # the held frame's latency counts its wait for frame 1 (what its consumer saw): >= the 0.1 s hold
        assert max(stats.latency_ms) >= 100.0
    finally:
        module.release.set()
        ex.shutdown()


def test_shutdown_with_two_frames_in_flight_resolves_every_future() -> None:
    module = Scripted()
    ex = _executor(1, frames_in_flight=2)
    _register(ex, module, blocks=2)
    first = ex.submit("m", _frame(1.0))
    second = ex.submit("m", _frame(2.0))
    third = ex.submit("m", _frame(3.0))  # pending behind the two dispatched frames
    assert module.ran[2].wait(5.0)
    threading.Timer(0.2, module.release.set).start()
    assert ex.shutdown(timeout_sec=5.0)
    for future in (first, second, third):
        assert future.done()
    with pytest.raises(ExecutorShutdownError):
        third.result(0)
    with pytest.raises(ExecutorShutdownError):
        first.result(0)  # stopped at its block boundary
