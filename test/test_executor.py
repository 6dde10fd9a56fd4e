"""Tests of multidnn_sched.runtime.executor and device: tiny models, sleeps, fake clocks; always shut down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from multidnn_sched.exceptions import ConfigError, ExecutorShutdownError, FrameDroppedError
from multidnn_sched.runtime.block import Block, PartitionedModel
from multidnn_sched.runtime.device import Device, SlotGate
from multidnn_sched.runtime.executor import BlockExecutor, percentile
from multidnn_sched.runtime.policy import PARALLEL, SEQUENTIAL, Decision, Observations, Policy, PolicyConfig


def tiny_model(name: str, seed: int = 0) -> PartitionedModel:
    torch.manual_seed(seed)
    return PartitionedModel(
        name,
        [
            Block("stem", nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())),
            Block("body", nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())),
            Block("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))),
        ],
    )


class Sleep(nn.Module):
    """Identity that sleeps and records how many Sleep blocks run at once."""

    def __init__(self, sleep_sec: float, tracker: dict[str, int] | None = None, log: list[str] | None = None,
                 tag: str = "") -> None:
        super().__init__()
        self.sleep_sec, self.tracker, self.log, self.tag = sleep_sec, tracker, log, tag
        self.lock = threading.Lock()
        self.started = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.started.set()
        if self.log is not None:
            self.log.append(self.tag)
        if self.tracker is not None:
            with self.lock:
                self.tracker["now"] += 1
                self.tracker["max"] = max(self.tracker["max"], self.tracker["now"])
        time.sleep(self.sleep_sec)
        if self.tracker is not None:
            with self.lock:
                self.tracker["now"] -= 1
        return x


class FakeClock:
    def __init__(self) -> None:
        self.now_sec = 100.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now_sec

    def advance(self, ms: float) -> None:
        with self.lock:
            self.now_sec += ms / 1000.0


class Tick(nn.Module):
    """Identity that advances a fake clock by ``ms`` per call: deterministic block latency. ``during`` runs
    inside the call (e.g. to start another block meanwhile)."""

    def __init__(self, clock: FakeClock, ms: float) -> None:
        super().__init__()
        self.clock, self.ms = clock, ms
        self.during: Callable[[], None] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.during is not None:
            self.during()
        self.clock.advance(self.ms)
        return x + 1


@pytest.fixture
def executor() -> Iterator[BlockExecutor]:
    ex = BlockExecutor(shed_late_frames=False, decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        yield ex
    finally:
        assert ex.shutdown(timeout_sec=5.0)


@pytest.mark.parametrize("schedule", ["policy", "parallel", "sequential"])
def test_results_equal_direct_forward(schedule: str) -> None:
    ex = BlockExecutor(shed_late_frames=False, schedule=schedule, decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        models = [tiny_model("a", 1), tiny_model("b", 2)]
        for pm in models:
            ex.register_model(pm, deadline_ms=100.0, queue_depth=8)
        x = torch.randn(1, 3, 12, 12)
        futures = [(pm, ex.submit(pm.name, x)) for pm in models for _ in range(3)]
        with torch.inference_mode():
            for pm, fut in futures:
                torch.testing.assert_close(fut.result(timeout=10), pm(x))
        stats = ex.stats()
        assert all(stats.models[pm.name].frames_done == 3 for pm in models)
        assert {b.mode for b in stats.blocks.values()} == {SEQUENTIAL if schedule == "sequential" else PARALLEL}
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_full_queue_drops_oldest_pending_newest_wins(executor: BlockExecutor) -> None:
    slow = Sleep(0.3)
    executor.register_model(PartitionedModel("cam", [Block("s", slow)]), deadline_ms=50.0, queue_depth=1)
    first = executor.submit("cam", torch.zeros(1))
    assert slow.started.wait(5.0)
    middle = [executor.submit("cam", torch.full((1,), float(i))) for i in (1, 2)]
    newest = executor.submit("cam", torch.full((1,), 3.0))
    assert first.result(timeout=5).item() == 0.0  # executing: never dropped
    for fut in middle:
        with pytest.raises(FrameDroppedError, match="newest wins"):
            fut.result(timeout=5)
    assert newest.result(timeout=5).item() == 3.0
    stats = executor.stats().models["cam"]
    assert (stats.submitted, stats.frames_done, stats.dropped, stats.failed) == (4, 2, 2, 0)


def test_bad_frame_fails_alone_and_others_keep_running(executor: BlockExecutor) -> None:
    executor.register_model(tiny_model("a"), deadline_ms=100.0, queue_depth=4)
    executor.register_model(tiny_model("b"), deadline_ms=100.0, queue_depth=4)
    bad = executor.submit("a", torch.randn(1, 5, 8, 8))
    other = executor.submit("b", torch.randn(1, 3, 8, 8))
    with pytest.raises(RuntimeError, match="channels"):
        bad.result(timeout=10)
    assert other.result(timeout=10).shape == (1, 4)
    assert executor.submit("a", torch.randn(1, 3, 8, 8)).result(timeout=10).shape == (1, 4)
    stats = executor.stats().models["a"]
    assert (stats.failed, stats.frames_done) == (1, 1)


def test_shutdown_with_sleeping_block_returns_false_then_joins() -> None:
    sleeper = Sleep(1.0)
    ex = BlockExecutor(shed_late_frames=False, decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        ex.register_model(PartitionedModel("slow", [Block("s", sleeper), Block("t", nn.Identity())]),
                          deadline_ms=10.0, queue_depth=2)
        running = ex.submit("slow", torch.zeros(1))
        assert sleeper.started.wait(5.0)
        pending = ex.submit("slow", torch.zeros(1))
        t0 = time.monotonic()
        assert ex.shutdown(timeout_sec=0.1) is False  # a running block cannot be interrupted
        assert time.monotonic() - t0 < 0.8
        with pytest.raises(ExecutorShutdownError):
            pending.result(timeout=1)
        with pytest.raises(ExecutorShutdownError):  # stopped at the next block boundary
            running.result(timeout=5)
        with pytest.raises(ExecutorShutdownError):
            ex.submit("slow", torch.zeros(1))
    finally:
        assert ex.shutdown(timeout_sec=5.0) is True
    assert all(t.daemon for t in ex._threads)


def test_context_manager_shuts_down() -> None:
    with BlockExecutor(shed_late_frames=False, decision_interval_sec=0.05, reprofile_idle_sec=None) as ex:
        ex.register_model(tiny_model("a"), deadline_ms=100.0)
        assert ex.submit("a", torch.randn(1, 3, 8, 8)).result(timeout=10).shape == (1, 4)
    assert not any(t.is_alive() for t in ex._threads)


def test_unknown_model_and_bad_registration_rejected(executor: BlockExecutor) -> None:
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        executor.submit("nope", torch.zeros(1))
    executor.register_model(tiny_model("a"), deadline_ms=100.0)
    with pytest.raises(ConfigError, match="already registered"):
        executor.register_model(tiny_model("a"), deadline_ms=100.0)
    with pytest.raises(ConfigError, match="deadline_ms"):
        executor.register_model(tiny_model("b"), deadline_ms=0.0)
    with pytest.raises(ConfigError, match="schedule"):
        BlockExecutor(shed_late_frames=False, schedule="bogus")


@pytest.mark.parametrize(("schedule", "expected_max"), [("sequential", 1), ("parallel", 2)])
def test_sequential_blocks_run_alone_parallel_blocks_overlap(schedule: str, expected_max: int) -> None:
    tracker = {"now": 0, "max": 0}
    ex = BlockExecutor(schedule=schedule, cpu_threads=2, num_workers=2,
                       shed_late_frames=False, decision_interval_sec=None,
                       reprofile_idle_sec=None)
    try:
        for name in ("a", "b"):
            blocks = [Block(f"s{i}", Sleep(0.03, tracker)) for i in range(3)]
            ex.register_model(PartitionedModel(name, blocks), deadline_ms=500.0, queue_depth=4)
        futures = [ex.submit(name, torch.zeros(1)) for _ in range(2) for name in ("a", "b")]
        for fut in futures:
            fut.result(timeout=10)
        assert tracker["max"] == expected_max
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_edf_order_earliest_deadline_first_with_one_worker() -> None:
    log: list[str] = []
    gate_block = Sleep(0.2)
    ex = BlockExecutor(shed_late_frames=False, num_workers=1, decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        ex.register_model(PartitionedModel("busy", [Block("s", gate_block)]), deadline_ms=1000.0)
        ex.register_model(PartitionedModel("lax", [Block("s", Sleep(0.0, log=log, tag="lax"))]), deadline_ms=500.0)
        ex.register_model(PartitionedModel("tight", [Block("s", Sleep(0.0, log=log, tag="tight"))]),
                          deadline_ms=20.0)
        first = ex.submit("busy", torch.zeros(1))
        assert gate_block.started.wait(5.0)
        lax = ex.submit("lax", torch.zeros(1))
        tight = ex.submit("tight", torch.zeros(1))  # arrives later, but its deadline is earlier
        for fut in (first, lax, tight):
            fut.result(timeout=10)
        assert log == ["tight", "lax"]
    finally:
        assert ex.shutdown(timeout_sec=5.0)


@pytest.mark.parametrize(("queue_order", "expected"), [("edf", ["short", "long"]), ("lst", ["long", "short"])])
def test_lst_order_starts_the_least_laxity_first(queue_order: str, expected: list[str]) -> None:
    """``long`` (120 ms of work, 200 ms deadline: 80 ms of slack) and ``short`` (no work, 100 ms deadline: 100 ms
    of slack) wait behind a busy frame: EDF runs ``short`` first (nearer deadline), LST runs ``long`` first
    (later start would make it miss), from the profiled solo figures."""
    log: list[str] = []
    gate_block = Sleep(0.2)
    ex = BlockExecutor(num_workers=1, queue_order=queue_order, shed_late_frames=False,
                       decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        ex.register_model(PartitionedModel("busy", [Block("s", gate_block)]), deadline_ms=1000.0)
        ex.register_model(PartitionedModel("long", [Block("s", Sleep(0.12, log=log, tag="long"))]),
                          deadline_ms=200.0, example_input=torch.zeros(1))
        ex.register_model(PartitionedModel("short", [Block("s", Sleep(0.0, log=log, tag="short"))]),
                          deadline_ms=100.0, example_input=torch.zeros(1))
        ex.profile_solo("long", repeats=1, warmup=0)
        ex.profile_solo("short", repeats=1, warmup=0)
        log.clear()
        busy = ex.submit("busy", torch.zeros(1))
        assert gate_block.started.wait(5.0)
        short = ex.submit("short", torch.zeros(1))  # arrives first and has the nearer deadline
        long = ex.submit("long", torch.zeros(1))
        for fut in (busy, short, long):
            fut.result(timeout=10)
        assert log == expected
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_lst_order_without_figures_is_edf() -> None:
    ex = BlockExecutor(num_workers=1, queue_order="lst", decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        ex.register_model(PartitionedModel("m", [Block("s", Sleep(0.0))]), deadline_ms=50.0)
        model = ex._model("m")
        assert ex._job_key(model, 10.0) == (10.05, 0)  # no solo figure yet: arrival + deadline
        ex.profile_solo("m", torch.zeros(1), repeats=1, warmup=0)
        solo_ms = ex._predicted_run_ms(model)[0]  # type: ignore[index]
        assert ex._job_key(model, 10.0)[0] == pytest.approx(10.05 - solo_ms / 1000.0)
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_fifo_order_and_priority_bias() -> None:
    log: list[str] = []
    gate_block = Sleep(0.2)
    ex = BlockExecutor(num_workers=1, queue_order="fifo", priority_weight_ms=1000.0,
                       shed_late_frames=False, decision_interval_sec=None,
                       reprofile_idle_sec=None)
    try:
        ex.register_model(PartitionedModel("busy", [Block("s", gate_block)]), deadline_ms=1000.0)
        for name, prio in (("first", 0), ("second", 0), ("vip", 1)):
            ex.register_model(PartitionedModel(name, [Block("s", Sleep(0.0, log=log, tag=name))]),
                              deadline_ms=100.0, priority=prio)
        busy = ex.submit("busy", torch.zeros(1))
        assert gate_block.started.wait(5.0)
        futures = [ex.submit(name, torch.zeros(1)) for name in ("first", "second", "vip")]
        for fut in [busy, *futures]:
            fut.result(timeout=10)
        assert log == ["vip", "first", "second"]
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_lag_figures_with_fake_clock() -> None:
    clock = FakeClock()
    ex = BlockExecutor(shed_late_frames=False, clock=clock, decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        tick = Tick(clock, 5.0)
        ex.register_model(PartitionedModel("m", [Block("t", tick)]), deadline_ms=100.0,
                          example_input=torch.zeros(1))
        solo = ex.profile_solo("m", repeats=3)
        assert solo[("m", "t", "original")] == pytest.approx(5.0)
        tick.ms = 8.0  # slower in service, but it ran ALONE: a solo sample, not contention
        ex.submit("m", torch.zeros(1), arrival_time=clock()).result(timeout=10)
        block = ex.stats().blocks[("m", "t")]
        assert block.solo_ms == pytest.approx(0.2 * 8.0 + 0.8 * 5.0)  # the solo figure follows the drift
        assert block.ema_observed_ms == pytest.approx(8.0)
        assert block.lag_ms == pytest.approx(3.0)  # measured against the solo figure before the sample
        for _ in range(30):
            ex.submit("m", torch.zeros(1), arrival_time=clock()).result(timeout=10)
        steady = ex.stats().blocks[("m", "t")]
        assert steady.solo_ms == pytest.approx(8.0, abs=0.01) and steady.lag_ms == pytest.approx(0.0, abs=0.05)
        model = ex.stats().models["m"]
        assert model.p50_ms == pytest.approx(8.0)
        assert model.deadline_misses == 0
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_profile_without_example_input_is_an_error(executor: BlockExecutor) -> None:
    executor.register_model(tiny_model("a"), deadline_ms=100.0)
    with pytest.raises(ConfigError, match="example_input"):
        executor.profile_solo("a")


class OneShotPolicy(Policy):
    def __init__(self, decision: Decision) -> None:
        super().__init__()
        self.decision = decision
        self.seen: list[Observations] = []

    def decide(self, observations: Observations, now_sec: float) -> list[Decision]:
        self.seen.append(observations)
        return [self.decision] if len(self.seen) == 1 else []


def test_decide_now_applies_and_logs_decisions(caplog: pytest.LogCaptureFixture) -> None:
    policy = OneShotPolicy(Decision("a", "body", "mode", SEQUENTIAL, "synthetic reason"))
    ex = BlockExecutor(shed_late_frames=False, policy=policy, decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        ex.register_model(tiny_model("a"), deadline_ms=100.0, priority=2)
        ex.submit("a", torch.randn(1, 3, 8, 8)).result(timeout=10)
        with caplog.at_level("INFO", logger="multidnn_sched.executor"):
            applied = ex.decide_now()
        assert [d.value for d in applied] == [SEQUENTIAL]
        assert ex.stats().blocks[("a", "body")].mode == SEQUENTIAL
        assert ex.decisions[-1].reason == "synthetic reason"
        assert "synthetic reason" in caplog.text
        seen = policy.seen[0]
        assert seen.models[0].priority == 2 and seen.models[0].samples == 1
        assert [b.block for b in seen.blocks] == ["stem", "body", "head"]
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_override_locks_block_for_policy(executor: BlockExecutor) -> None:
    executor.register_model(tiny_model("a"), deadline_ms=100.0)
    executor.set_override("a", "head", mode=SEQUENTIAL)
    blocks = {b.block: b for b in executor.observations().blocks}
    assert blocks["head"].locked and blocks["head"].mode == SEQUENTIAL
    assert not blocks["stem"].locked
    executor.clear_override("a", "head")
    assert not executor.stats().blocks[("a", "head")].overridden
    with pytest.raises(ConfigError, match="mode must be"):
        executor.set_override("a", "head", mode="sideways")


def test_slot_gate_grants_all_when_alone_one_when_shared() -> None:
    gate = SlotGate(2)
    assert gate.acquire(False, 0.0) == 2  # alone: all cores, like a direct forward
    gate.release(2)
    first = gate.acquire(True, 0.0)
    assert first == 2
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(gate.acquire(False, 1.0)))
    waiter.start()
    time.sleep(0.05)
    assert got == []  # exclusive holder: the parallel request waits
    gate.release(first)
    waiter.join(2.0)
    assert got == [2]
    gate.release(2)
    assert not gate.busy


def test_slot_gate_counts_block_runs_with_its_slots() -> None:
    """acquire_run / release_run: the slots and the overlap count under one lock. A run is alone only if no
    other run was in flight at its start and none started before its end."""
    gate = SlotGate(2)
    granted, ticket = gate.acquire_run(False, 0.0)
    assert granted == 2
    assert gate.release_run(granted, ticket) is True  # nothing else ran
    assert not gate.busy
    granted, ticket = gate.acquire_run(False, 0.0)
    other = gate.run_started()  # another run starts meanwhile (a second worker)
    assert gate.release_run(granted, ticket) is False
    assert gate.run_ended(other) is False  # it started while the first was in flight
    granted, ticket = gate.acquire_run(True, 0.0)
    assert granted == 2
    later = gate.run_started()
    assert gate.run_ended(later) is False
    assert gate.release_run(granted, ticket) is False  # overlapped by a run that began and ended inside it
    granted, ticket = gate.acquire_run(False, 0.0)
    assert gate.release_run(granted, ticket) is True  # the count is back to zero: alone again
    with pytest.raises(RuntimeError, match="more slots than granted"):
        gate.release_run(1, gate.run_started())


def test_slot_gate_strict_key_order() -> None:
    gate = SlotGate(1)
    held = gate.acquire(False, 0.0)
    order: list[str] = []

    def take(tag: str, key: float) -> None:
        slots = gate.acquire(False, key)
        order.append(tag)
        gate.release(slots)

    threads = [threading.Thread(target=take, args=(tag, key)) for tag, key in (("late", 9.0), ("soon", 1.0))]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    gate.release(held)
    for thread in threads:
        thread.join(2.0)
    assert order == ["soon", "late"]


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([], 50.0) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50.0) == pytest.approx(2.5)
    assert percentile([5.0, 1.0], 100.0) == 5.0


def test_device_rejects_unknown_spec() -> None:
    with pytest.raises(ValueError, match="device must be"):
        Device("meta")


@pytest.mark.needs_cuda
@pytest.mark.parametrize("schedule", ["parallel", "sequential"])
def test_cuda_streams_and_event_timing(schedule: str) -> None:
    ex = BlockExecutor("cuda", schedule=schedule, decision_interval_sec=None,
                       shed_late_frames=False, reprofile_idle_sec=None)
    try:
        models = [tiny_model("a", 1).blocks, tiny_model("b", 2).blocks]
        for name, blocks in zip(("a", "b"), models, strict=True):
            for block in blocks:
                block.module.cuda()
            ex.register_model(PartitionedModel(name, blocks), deadline_ms=100.0, queue_depth=4,
                              example_input=torch.randn(1, 3, 16, 16))
        solo = ex.profile_solo()
        assert all(ms > 0.0 for ms in solo.values())
        x = torch.randn(1, 3, 16, 16)
        futures = {name: [ex.submit(name, x) for _ in range(3)] for name in ("a", "b")}
        for name, blocks in zip(("a", "b"), models, strict=True):
            expected = PartitionedModel(name, blocks)(x.cuda())
            for fut in futures[name]:
                out = fut.result(timeout=30)
                assert out.is_cuda
                torch.testing.assert_close(out, expected)
        assert ex.device.stream_for("a") is not ex.device.stream_for("b")
        stats = ex.stats()
        assert all(b.samples == 3 and b.ema_observed_ms is not None for b in stats.blocks.values())
    finally:
        assert ex.shutdown(timeout_sec=10.0)


def test_configure_model_and_lag_alpha_live(executor: BlockExecutor) -> None:
    executor.register_model(tiny_model("a"), deadline_ms=100.0)
    executor.configure_model("a", deadline_ms=40.0, priority=3, queue_depth=2)
    seen = executor.observations().models[0]
    assert (seen.deadline_ms, seen.priority) == (40.0, 3)
    executor.set_lag_alpha(0.5)
    assert executor._lag.alpha == 0.5
    with pytest.raises(ConfigError, match="alpha"):
        executor.set_lag_alpha(0.0)
    with pytest.raises(ConfigError, match="queue_depth"):
        executor.configure_model("a", queue_depth=0)


def test_one_worker_hands_job_over_at_block_boundary_to_more_urgent_job() -> None:
    log: list[str] = []
    first = Sleep(0.15, log=log, tag="long0")
    ex = BlockExecutor(shed_late_frames=False, num_workers=1, decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        long_blocks = [Block("b0", first)] + [Block(f"b{i}", Sleep(0.0, log=log, tag=f"long{i}")) for i in (1, 2)]
        ex.register_model(PartitionedModel("long", long_blocks), deadline_ms=1000.0)
        ex.register_model(PartitionedModel("urgent", [Block("u", Sleep(0.0, log=log, tag="urgent"))]),
                          deadline_ms=20.0)
        slow = ex.submit("long", torch.zeros(1))
        assert first.started.wait(5.0)
        quick = ex.submit("urgent", torch.zeros(1))
        slow.result(timeout=10)
        quick.result(timeout=10)
        assert log == ["long0", "urgent", "long1", "long2"]
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_reprofiles_solo_latency_when_idle() -> None:
    ex = BlockExecutor(decision_interval_sec=0.02, reprofile_idle_sec=0.05,
                       shed_late_frames=False, reprofile_interval_sec=0.0)
    try:
        ex.register_model(tiny_model("a"), deadline_ms=100.0, example_input=torch.randn(1, 3, 8, 8))
        deadline = time.monotonic() + 10.0
        while ex.stats().blocks[("a", "head")].solo_ms is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert all(b.solo_ms is not None and b.solo_ms > 0.0 for b in ex.stats().blocks.values())
    finally:
        assert ex.shutdown(timeout_sec=5.0)


class ThreadTick(nn.Module):
    """Advances a fake clock by a latency that depends on the calling thread's intra-op thread count."""

    def __init__(self, clock: FakeClock, ms_by_threads: dict[int, float]) -> None:
        super().__init__()
        self.clock, self.ms_by_threads = clock, ms_by_threads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.advance(self.ms_by_threads[torch.get_num_threads()])
        return x


@pytest.mark.parametrize(("ms_by_threads", "num_workers", "expected_threads", "expected_solo_ms"),
                         [({1: 10.0, 2: 4.0}, 2, 2, 4.0), ({1: 10.0, 2: 9.5}, 2, 1, 10.0),
                          ({1: 10.0, 2: 9.5}, 1, 2, 9.5)])
def test_profiling_keeps_all_threads_only_when_they_pay(
    ms_by_threads: dict[int, float], num_workers: int, expected_threads: int, expected_solo_ms: float
) -> None:
    """With several workers a block keeps all cores only if they pay; a lone worker always uses every core."""
    clock = FakeClock()
    ex = BlockExecutor(clock=clock, cpu_threads=2, num_workers=num_workers,
                       shed_late_frames=False, decision_interval_sec=None,
                       reprofile_idle_sec=None)
    before = torch.get_num_threads()
    try:
        ex.register_model(PartitionedModel("m", [Block("t", ThreadTick(clock, ms_by_threads))]), deadline_ms=100.0,
                          example_input=torch.zeros(1))
        solo = ex.profile_solo(repeats=3)
        assert solo[("m", "t", "original")] == pytest.approx(expected_solo_ms)
        block = ex.stats().blocks[("m", "t")]
        assert (block.threads_alone, block.solo_ms) == (expected_threads, pytest.approx(expected_solo_ms))
    finally:
        torch.set_num_threads(before)
        assert ex.shutdown(timeout_sec=5.0)


def test_cancelled_pending_frame_is_skipped(executor: BlockExecutor) -> None:
    log: list[str] = []
    slow = Sleep(0.2)
    executor.register_model(PartitionedModel("m", [Block("s", slow), Block("t", Sleep(0.0, log=log, tag="ran"))]),
                            deadline_ms=100.0, queue_depth=2)
    running = executor.submit("m", torch.zeros(1))
    assert slow.started.wait(5.0)
    cancelled = executor.submit("m", torch.zeros(1))
    assert cancelled.cancel()
    last = executor.submit("m", torch.zeros(1))
    running.result(timeout=10)
    last.result(timeout=10)
    assert cancelled.cancelled() and log == ["ran", "ran"]


class StreamlessGpu(Device):
    """A device that schedules like CUDA (parallel blocks never wait for each other) but runs on the CPU."""

    @property
    def is_cuda(self) -> bool:
        return True

    def stream_for(self, model: str) -> None:
        return None


def test_gpu_like_device_never_grants_parallel_blocks_the_whole_device() -> None:
    tracker = {"now": 0, "max": 0}
    ex = BlockExecutor(StreamlessGpu("cpu"), shed_late_frames=False, schedule="parallel", decision_interval_sec=None,
                       reprofile_idle_sec=None)
    try:
        for name in ("a", "b", "c"):
            blocks = [Block(f"s{i}", Sleep(0.03, tracker)) for i in range(2)]
            ex.register_model(PartitionedModel(name, blocks), deadline_ms=500.0, example_input=torch.zeros(1))
        solo = ex.profile_solo(repeats=1, warmup=0)
        assert len(solo) == 6 and all(ms >= 25.0 for ms in solo.values())
        assert tracker["max"] == 1  # profiling runs each block alone
        futures = [ex.submit(name, torch.zeros(1)) for name in ("a", "b", "c")]
        for fut in futures:
            fut.result(timeout=10)
        assert tracker["max"] == 3  # three streams' worth of parallel blocks at once
        assert all(b.threads_alone is None for b in ex.stats().blocks.values())
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_policy_round_serializes_lagging_block_of_late_model() -> None:
    clock = FakeClock()
    policy = Policy(PolicyConfig(admission_enabled=False))  # back-to-back frames: the device is also overloaded
    ex = BlockExecutor("cpu", policy, num_workers=2, shed_late_frames=False, clock=clock,
                       decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        tick = Tick(clock, 5.0)
        ex.register_model(PartitionedModel("m", [Block("t", tick), Block("u", nn.Identity())]), deadline_ms=10.0,
                          example_input=torch.zeros(1))
        ex.profile_solo(repeats=2, warmup=0)
        tick.ms = 12.0  # interference: 7 ms LAG, the frame misses its 10 ms deadline
        tick.during = lambda: ex._block_ended(ex._block_started())  # another block overlaps every run
        for _ in range(6):
            ex.submit("m", torch.zeros(1), arrival_time=clock()).result(timeout=10)
        assert ex.stats().blocks[("m", "t")].solo_ms == pytest.approx(5.0)
        applied = ex.decide_now()
        assert [(d.block, d.kind, d.value) for d in applied] == [("t", "mode", SEQUENTIAL)]
        assert ex.stats().blocks[("m", "t")].mode == SEQUENTIAL
        assert ex.stats().models["m"].deadline_misses == 6
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_cpu_default_is_one_worker_and_profiling_runs_off_the_callers_thread() -> None:
    """One worker on CPU by default (executor.CPU_DEFAULT_WORKERS, measured), and the policy is told so: it
    cannot overlap blocks there. Profiling runs in its own short-lived thread, so neither the caller nor the
    decision thread keeps a multi-threaded OpenMP team (executor.ONE_OPENMP_TEAM_NOTE)."""
    seen: list[str] = []

    class WhereAmI(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(threading.current_thread().name)
            return x

    ex = BlockExecutor(shed_late_frames=False, decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        def workers() -> int:
            return len([t for t in ex._threads if t.name.startswith("blockexec-worker")])

        assert workers() == 1
        ex.register_model(PartitionedModel("m", [Block("b", WhereAmI())]), deadline_ms=100.0,
                          example_input=torch.zeros(1))
        for name in ("x", "y", "z"):
            ex.register_model(PartitionedModel(name, [Block("b", nn.Identity())]), deadline_ms=100.0)
        assert workers() == 1 and ex.observations().device.workers == 1
        assert not ex.observations().device.can_overlap
        two = BlockExecutor(num_workers=2, decision_interval_sec=None, reprofile_idle_sec=None)
        try:
            assert two.observations().device.workers == 2 and two.observations().device.can_overlap == (
                two.device.slots >= 2)
        finally:
            assert two.shutdown(timeout_sec=5.0)
        ex.profile_solo("m", repeats=1, warmup=0)
        assert seen and all(name.startswith("blockexec-profile") for name in seen)
        assert ex.device.cpu_threads >= 1
    finally:
        assert ex.shutdown(timeout_sec=5.0)


@pytest.mark.parametrize("shed", [True, False])
def test_frames_that_can_no_longer_meet_the_deadline_are_shed(shed: bool) -> None:
    ex = BlockExecutor(decision_interval_sec=None, reprofile_idle_sec=None, shed_late_frames=shed)
    try:
        ex.register_model(PartitionedModel("m", [Block("s", Sleep(0.06))]), deadline_ms=100.0, queue_depth=2)
        first = ex.submit("m", torch.zeros(1))
        second = ex.submit("m", torch.zeros(1))  # waits ~60 ms, then needs ~60 ms more: 120 > 100
        first.result(timeout=10)
        if shed:
            with pytest.raises(FrameDroppedError, match="could no longer meet"):
                second.result(timeout=10)
            assert ex.stats().models["m"].dropped == 1
        else:
            second.result(timeout=10)
            assert ex.stats().models["m"].deadline_misses == 1
        third = ex.submit("m", torch.zeros(1))  # a fresh frame can still make it: never shed
        third.result(timeout=10)
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_admit_decision_drops_the_expected_share_of_frames_on_arrival(executor: BlockExecutor) -> None:
    executor.register_model(tiny_model("cam"), deadline_ms=1000.0, queue_depth=64)
    executor.apply(Decision("cam", None, "admit", 0.25, "test: overloaded"))
    futures = [executor.submit("cam", torch.randn(1, 3, 8, 8)) for _ in range(8)]
    outcomes = []
    for fut in futures:
        try:
            fut.result(timeout=10)
            outcomes.append("done")
        except FrameDroppedError as exc:
            assert "admission control" in str(exc)
            outcomes.append("skipped")
    assert outcomes == ["skipped", "skipped", "skipped", "done"] * 2  # evenly spread, 1 in 4
    stats = executor.stats().models["cam"]
    assert (stats.submitted, stats.frames_done, stats.dropped, stats.skipped) == (8, 2, 6, 6)
    assert stats.admit_fraction == 0.25
    assert executor.observations().models[0].admit_fraction == 0.25
    executor.apply(Decision("cam", None, "admit", 1.0, "test: fits"))
    assert executor.submit("cam", torch.randn(1, 3, 8, 8)).result(timeout=10).shape == (1, 4)
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="admit fraction"):
            Decision("cam", None, "admit", bad, "test")
    for bad_type in ("0.25", "half", True):  # fractions are floats, never strings
        with pytest.raises(ConfigError, match="float fraction"):
            Decision("cam", None, "admit", bad_type, "test")
    with pytest.raises(ConfigError, match="needs a block"):
        Decision("cam", None, "mode", SEQUENTIAL, "test")
    with pytest.raises(ConfigError, match="mode must be"):
        Decision("cam", "b", "mode", "sideways", "test")
    with pytest.raises(ConfigError, match="unknown block"):
        executor.apply(Decision("cam", "nope", "mode", SEQUENTIAL, "test"))


@pytest.mark.parametrize("probe_frames", [3, None])
def test_a_stale_prediction_cannot_shed_a_model_for_good(probe_frames: int | None) -> None:
    """A frame shed before its first block refreshes nothing: without probes, a prediction that went stale
    (here: one slow run, 90 ms on a 100 ms deadline, then the block is fast again) sheds every later frame that
    waited 20 ms; with ``shed_probe_frames=3`` the frame after three sheds in a row runs, refreshes the figure,
    and the model is served again."""
    import time as _time

    ex = BlockExecutor(decision_interval_sec=None, reprofile_idle_sec=None, shed_probe_frames=probe_frames)
    try:
        block = Sleep(0.01)
        ex.register_model(PartitionedModel("m", [Block("s", block)]), deadline_ms=100.0, example_input=torch.zeros(1))
        ex.profile_solo()  # solo ~10 ms
        block.sleep_sec = 0.09
        ex.submit("m", torch.zeros(1)).result(timeout=10)  # one slow run: the EMA prediction is ~90 ms
        block.sleep_sec = 0.01
        outcomes = []
        for _ in range(5):  # each waited 20 ms already: 20 + 90 > 100 by the EMA, 20 + 10 fits by solo
            future = ex.submit("m", torch.zeros(1), arrival_time=_time.perf_counter() - 0.02)
            try:
                future.result(timeout=10)
                outcomes.append("done")
            except FrameDroppedError:
                outcomes.append("shed")
        stats = ex.stats().models["m"]
        if probe_frames is None:
            assert outcomes == ["shed"] * 5
            assert stats.shed_probes == 0
        else:
            assert outcomes == ["shed", "shed", "shed", "done", "done"]  # the probe refreshed the EMA (~74 ms)
            assert stats.shed_probes == 1
            assert stats.dropped == 3
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_a_probe_is_not_spent_on_a_frame_that_cannot_make_it_even_by_solo_figures() -> None:
    import time as _time

    ex = BlockExecutor(decision_interval_sec=None, reprofile_idle_sec=None, shed_probe_frames=1)
    try:
        block = Sleep(0.01)
        ex.register_model(PartitionedModel("m", [Block("s", block)]), deadline_ms=100.0, example_input=torch.zeros(1))
        ex.profile_solo()
        block.sleep_sec = 0.09
        ex.submit("m", torch.zeros(1)).result(timeout=10)
        block.sleep_sec = 0.01
        for _ in range(2):  # the first is shed and counted; the second is due but 95 + 10 > 100 even by solo
            late = ex.submit("m", torch.zeros(1), arrival_time=_time.perf_counter() - 0.095)
            with pytest.raises(FrameDroppedError):
                late.result(timeout=10)
        assert ex.stats().models["m"].shed_probes == 0
        ex.submit("m", torch.zeros(1), arrival_time=_time.perf_counter() - 0.02).result(timeout=10)  # probes
        assert ex.stats().models["m"].shed_probes == 1
    finally:
        assert ex.shutdown(timeout_sec=5.0)
    with pytest.raises(ConfigError, match="shed_probe_frames"):
        BlockExecutor(decision_interval_sec=None, shed_probe_frames=0)


def test_frame_preempted_past_its_deadline_is_shed_at_the_next_block_boundary() -> None:
    ex = BlockExecutor(num_workers=1, decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        first_block = Sleep(0.02)
        ex.register_model(PartitionedModel("m", [Block("a", first_block), Block("b", Sleep(0.04))]),
                          deadline_ms=100.0)
        ex.register_model(PartitionedModel("hog", [Block("s", Sleep(0.12))]), deadline_ms=50.0)
        ex.submit("m", torch.zeros(1)).result(timeout=10)  # observed latencies: m needs ~60 ms, fits in 100
        first_block.started.clear()
        victim = ex.submit("m", torch.zeros(1))
        assert first_block.started.wait(5.0)
        hog = ex.submit("hog", torch.zeros(1))  # earlier deadline (EDF): takes over at m's boundary for 120 ms
        hog.result(timeout=10)
        with pytest.raises(FrameDroppedError, match="could no longer meet"):
            victim.result(timeout=10)  # resumes after >= 140 ms with 40 ms to go: shed, block b never runs
        stats = ex.stats().models["m"]
        assert (stats.frames_done, stats.dropped) == (1, 1)
        assert ex.submit("m", torch.zeros(1)).result(timeout=10).shape == (1,)
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_arrival_rate_ignores_one_pause_in_the_stream() -> None:
    from collections import deque

    from multidnn_sched.runtime.stats import rate_hz as _rate_hz

    arrivals = deque([i / 15.0 for i in range(16)] + [1.0 + 0.2 + i / 15.0 for i in range(16)])  # 0.2 s pause
    assert _rate_hz(arrivals) == pytest.approx(15.0)
    assert _rate_hz(deque([1.0])) is None and _rate_hz(deque([1.0, 1.0])) is None


def test_failed_frame_does_not_keep_its_input_alive_until_a_garbage_collection(executor: BlockExecutor) -> None:
    import gc
    import weakref

    executor.register_model(tiny_model("a"), deadline_ms=100.0, queue_depth=4)
    gc.disable()
    try:
        bad = torch.randn(1, 5, 8, 8)
        watch = weakref.ref(bad)
        future = executor.submit("a", bad)
        error = future.exception(timeout=10)
        assert isinstance(error, RuntimeError) and error.__traceback__ is not None  # file/line kept
        del bad, error
        executor.submit("a", torch.randn(1, 3, 8, 8)).result(timeout=10)  # the worker moves on to the next job
        assert watch() is None, "the failed frame's input is still referenced (traceback cycle)"
        assert future.exception() is not None
    finally:
        gc.enable()


def test_lag_is_measured_against_the_solo_of_the_variant_that_ran_at_its_input_bucket() -> None:
    from multidnn_sched.runtime.block import BlockVariant

    clock = FakeClock()
    ex = BlockExecutor(shed_late_frames=False, clock=clock, decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        original, light = Tick(clock, 10.0), Tick(clock, 4.0)
        block = Block("t", original)
        block.variants["light"] = BlockVariant("light", light, accuracy=0.99)
        ex.register_model(PartitionedModel("m", [block]), deadline_ms=1000.0, accuracy=1.0,
                          example_input=torch.zeros(4, 2))
        solo = ex.profile_solo("m", repeats=2, warmup=0)
        assert solo[("m", "t", "original")] == pytest.approx(10.0) and solo[("m", "t", "light")] == pytest.approx(4.0)
        overlap = lambda: ex._block_ended(ex._block_started())  # noqa: E731 - another block starts meanwhile
        original.during = light.during = overlap
        original.ms, light.ms = 13.0, 5.0  # contended: +3 ms and +1 ms
        ex.submit("m", torch.zeros(4, 2)).result(timeout=10)
        assert ex.stats().blocks[("m", "t")].lag_ms == pytest.approx(3.0)
        ex.set_override("m", "t", variant="light")
        ex.submit("m", torch.zeros(4, 2)).result(timeout=10)
        swapped = ex.stats().blocks[("m", "t")]
        assert swapped.variant == "light" and swapped.solo_ms == pytest.approx(4.0)
        assert swapped.lag_ms == pytest.approx(1.0)  # vs the light variant's own solo, not the original's 10 ms
        # The example's other buckets (1-32 crops) were profiled too, each implementation at its own size; the
        # variant's own figure (what the swap decisions compare) stays the example's.
        assert ex._lag.timing(("m", "t", "light", 32)).solo_ms == pytest.approx(4.0)
        assert ex._lag.timing(("m", "t", "original", 1)).solo_ms == pytest.approx(10.0)
        assert block.variants["light"].solo_latency_ms == pytest.approx(4.0)
        ex.submit("m", torch.zeros(64, 2)).result(timeout=10)  # a bucket never profiled: no solo, no fake LAG
        assert ex._lag.timing(("m", "t", "light", 64)).solo_ms is None
        assert ex._lag.timing(("m", "t", "light", 4)).samples == 1
        observed = next(b for b in ex.observations().blocks if b.block == "t")
        assert not observed.solo_at_input and observed.solo_ms == pytest.approx(4.0)  # the profile's, flagged
    finally:
        assert ex.shutdown(timeout_sec=5.0)


@pytest.mark.parametrize(("short_deadline_ms", "expected"), [
    (150.0, ["a", "b", "s"]),  # the urgent frame can wait 40 ms and still make 150 ms: no preemption
    (45.0, ["a", "s", "b"]),  # it cannot (waits ~35 ms + 10 ms > 45 ms): it takes over at the boundary
])
def test_a_more_urgent_frame_preempts_only_when_it_cannot_wait(short_deadline_ms: float, expected: list[str]) -> None:
    ex = BlockExecutor(num_workers=1, decision_interval_sec=None, reprofile_idle_sec=None, shed_late_frames=False)
    try:
        log: list[str] = []
        first = Sleep(0.04, log=log, tag="a")
        ex.register_model(PartitionedModel("long", [Block("a", first), Block("b", Sleep(0.04, log=log, tag="b"))]),
                          deadline_ms=400.0)
        ex.register_model(PartitionedModel("short", [Block("s", Sleep(0.01, log=log, tag="s"))]),
                          deadline_ms=short_deadline_ms)
        ex.submit("long", torch.zeros(1)).result(timeout=10)  # observed latencies for the predictions
        ex.submit("short", torch.zeros(1)).result(timeout=10)
        log.clear()
        first.started.clear()
        victim = ex.submit("long", torch.zeros(1))
        assert first.started.wait(5.0)
        urgent = ex.submit("short", torch.zeros(1))  # earlier absolute deadline than the running frame
        urgent.result(timeout=10)
        victim.result(timeout=10)
        assert log == expected
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_the_shedding_check_reads_a_per_frame_snapshot_that_matches_a_fresh_read() -> None:
    """The snapshot a frame's shedding check uses (taken once, kept current as its blocks run, re-read when a
    variant changes) holds the figures a full walk over the blocks would read at that moment."""
    from concurrent.futures import Future

    from multidnn_sched.runtime.block import BlockVariant
    from multidnn_sched.runtime.jobs import Frame, Job

    clock = FakeClock()
    ex = BlockExecutor(clock=clock, decision_interval_sec=None, reprofile_idle_sec=None)
    try:
        heavy = Block("heavy", Tick(clock, 20.0))
        heavy.variants["light"] = BlockVariant("light", Tick(clock, 4.0), accuracy=0.99)
        ex.register_model(PartitionedModel("m", [Block("a", Tick(clock, 10.0)), heavy]), deadline_ms=1000.0,
                          accuracy=1.0, example_input=torch.zeros(1))
        ex.profile_solo("m", repeats=1, warmup=0)
        model = ex._model("m")

        def fresh() -> list[float | None]:
            with ex._stats_lock:
                return [ex._predicted_block_ms("m", b.name) for b in model.pm.blocks]

        job = Job((0.0, 0), 0, model, Frame(Future(), torch.zeros(1), clock()))
        assert ex._job_predictions(job) == pytest.approx([10.0, 20.0]) == fresh()
        ex.apply(Decision("m", "heavy", "variant", "light", "test"))  # a swap re-reads the snapshot
        assert ex._job_predictions(job) == pytest.approx([10.0, 4.0]) == fresh()
        ex.submit("m", torch.zeros(1)).result(timeout=10)  # observed figures replace the solo ones
        job = Job((0.0, 0), 1, model, Frame(Future(), torch.zeros(1), clock()))
        assert ex._job_predictions(job) == pytest.approx([10.0, 4.0]) == fresh()
        model.pm.blocks[0].module.ms = 16.0  # block "a" slows down; the frame's own run of it is folded in
        ex.submit("m", torch.zeros(1)).result(timeout=10)
        ex._note_block_run(job, 0, ex._lag.peek(ex._last_key[("m", "a")]))
        assert job.predicted_ms is not None and job.predicted_ms == pytest.approx(fresh())
        assert 10.0 < job.predicted_ms[0] < 16.0  # the EMA moved from 10 ms towards 16 ms
        assert ex._job_predictions(job) is job.predicted_ms  # same epoch: no re-read
    finally:
        assert ex.shutdown(timeout_sec=5.0)
