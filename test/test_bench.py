"""multidnn-bench building blocks: workload parsing, the queue policy, static runners, ratios, the table."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from multidnn_sched.bench.report import ModelSummary, compute_ratios, format_table, mode_entry
from multidnn_sched.bench.static_modes import ModelRun, pending_to_run, run_model_loop, run_threads
from multidnn_sched.bench.tasks import FrameTruth, TaskInputs
from multidnn_sched.bench.workload import load_workload
from multidnn_sched.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_workload_parses() -> None:
    workload = load_workload(ROOT / "config" / "workloads" / "default.yaml", duration_sec=2.0)
    assert [m.name for m in workload.models] == ["detector", "embedder", "classifier"]
    assert workload.n_frames == 30
    arrivals = workload.arrivals_sec(10.0)
    assert arrivals[0] == 10.0 and arrivals[1] == pytest.approx(10.0 + 1 / 15)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate_hz: 15\nmodels: [{name: yolo, deadline_ms: 10}]", "expected one of"),
        ("rate_hz: 15\nmodels: [{name: detector}]", "deadline_ms"),
        ("models: [{name: detector, deadline_ms: 5}]", "rate_hz"),
        ("rate_hz: 15\nmodels: [{name: detector, deadline_ms: -5}]", "must be > 0"),
        ("- just a list", "mapping"),
    ],
)
def test_bad_workload_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_workload(path)
    assert str(path) in str(info.value)


def test_queue_policy_newest_wins() -> None:
    assert pending_to_run(0, -1, 1) == ([], None)
    assert pending_to_run(3, 3, 1) == ([], 3)
    assert pending_to_run(3, 6, 1) == ([3, 4, 5], 6)  # depth 1: only the newest survives
    assert pending_to_run(3, 6, 2) == ([3, 4], 5)  # depth 2: the two newest stay, the older of them runs


class SleepModel(nn.Module):
    def __init__(self, sleep_sec: float) -> None:
        super().__init__()
        self.sleep_sec = sleep_sec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.sleep_sec)
        return x * 2


def tiny_task(name: str, n: int = 4) -> TaskInputs:
    empty = np.zeros((0,), np.int64)
    truth = FrameTruth(np.zeros((0, 4), np.float32), empty, empty, empty, np.zeros((0, 4), np.float32), empty,
                       np.zeros((0,), np.float32))
    return TaskInputs(name, [torch.full((1, 2), float(i)) for i in range(n)], [truth] * n, (64, 48))


def test_model_loop_drops_when_overloaded_and_accounts_every_frame() -> None:
    # Frames every 10 ms, a model that needs 35 ms: the queue policy must drop, never lose track of a frame.
    t0 = time.monotonic() + 0.02
    arrivals = [t0 + 0.01 * i for i in range(12)]
    run = run_model_loop(SleepModel(0.035), tiny_task("m"), arrivals, queue_depth=1)
    accounted = sorted(run.completed + run.dropped + run.failed)
    assert accounted == list(range(12))
    assert run.dropped, "an overloaded model must drop frames"
    assert len(run.completed) < 12
    assert all(lat >= 30.0 for lat in run.latencies_ms)
    assert set(run.outputs) <= set(range(4))


def test_sequential_lock_serialises_models() -> None:
    t0 = time.monotonic() + 0.02
    arrivals = [t0 + 0.1 * i for i in range(3)]
    models = {"a": SleepModel(0.04), "b": SleepModel(0.04)}
    tasks = {"a": tiny_task("a"), "b": tiny_task("b")}
    runs = run_threads(models, tasks, {"a": 1, "b": 1}, arrivals, global_lock=True)
    # With the global lock one of the two models waits for the other on every frame.
    worst = max(max(r.latencies_ms) for r in runs.values())
    assert worst >= 75.0
    for r in runs.values():
        assert sorted(r.completed + r.dropped) == [0, 1, 2] and r.completed


def test_ratios_and_table() -> None:
    def entry(p99: float, acc: float) -> dict:
        run = ModelRun("m", latencies_ms=[p99] * 10, completed=list(range(10)))
        return mode_entry({"m": ModelSummary.of(run, 10, 100.0, acc)}, decisions=0)

    modes = {"threads": entry(100.0, 0.9), "sequential": entry(80.0, 0.9), "multiprocess": entry(160.0, 0.9),
             "blocks": entry(60.0, 0.9), "blocks+swap": entry(40.0, 0.88)}
    ratios = compute_ratios(modes)
    assert ratios["blocks_vs_best_static"]["m"] == pytest.approx(0.75)
    assert ratios["swap_vs_multiprocess"]["m"] == pytest.approx(0.25)
    assert ratios["swap_accuracy_vs_sequential"]["m"] == pytest.approx(0.88 / 0.9)
    table = format_table({"modes": modes, "ratios": ratios})
    assert "| blocks+swap | m | 40.0 | 40.0 |" in table
    assert "blocks_vs_best_static: m=0.75" in table


def test_deadline_miss_rate_counts_late_and_dropped_frames() -> None:
    run = ModelRun("m", latencies_ms=[50.0, 150.0], completed=[0, 1], dropped=[2, 3])
    summary = ModelSummary.of(run, offered=4, deadline_ms=100.0, accuracy=None)
    assert summary.deadline_miss_rate == pytest.approx(0.75)
    assert summary.frames_dropped == 2
