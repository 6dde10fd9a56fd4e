"""multidnn-bench building blocks: workload parsing, queue and stale rules, static runners, the metric
arithmetic on synthetic runs, ratios and decompositions, calibration, the sweep on a fake device, bad input."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from compression_tools.manifest import MANIFEST_VERSION
from multidnn_sched.bench import cli
from multidnn_sched.bench.aggregate import aggregate, compute_ratios
from multidnn_sched.bench.calibrate import calibrate_threads, candidate_counts
from multidnn_sched.bench.metrics import ModelSummary, percentile_offered, summarize
from multidnn_sched.bench.modes import BenchContext, run_mode
from multidnn_sched.bench.report import format_ratios, format_table, verdict_lines
from multidnn_sched.bench.runs import DROP_QUEUE, DROP_SHED, ModelPlan, ModelRun, RunPlan
from multidnn_sched.bench.session import run_sweep
from multidnn_sched.bench.static_modes import StaleRule, StaticConfig, pending_to_run, run_model_loop, run_threads
from multidnn_sched.bench.sweep import find_sustainable_rate
from multidnn_sched.bench.tasks import FrameTruth, TaskInputs
from multidnn_sched.bench.workload import ExecutorSettings, ModelLoad, load_workload
from multidnn_sched.exceptions import ConfigError
from multidnn_sched.runtime.shedding import is_hopeless, probe_due

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORKLOAD = ROOT / "config" / "workloads" / "default.yaml"


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "workloads").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_workload_parses(path: Path) -> None:
    workload = load_workload(path)
    assert workload.models and workload.rate_hz > 0
    assert workload.modes is None or set(workload.modes) <= set(cli.MODES)


def test_default_workload_parses() -> None:
    workload = load_workload(DEFAULT_WORKLOAD, duration_sec=2.0)
    assert [m.name for m in workload.models] == ["detector", "embedder", "classifier"]
    assert workload.n_frames == 30


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate_hz: 15\nmodels: [{name: yolo, deadline_ms: 10}]", "expected one of"),
        ("rate_hz: 15\nmodels: [{name: detector}]", "deadline_ms"),
        ("models: [{name: detector, deadline_ms: 5}]", "rate_hz"),
        ("rate_hz: 15\nmodels: [{name: detector, deadline_ms: -5}]", "must be > 0"),
        ("rate_hz: 15\nmodes: blocks\nmodels: [{name: detector, deadline_ms: 5}]", "list of mode names"),
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


def test_stale_rule_is_the_executors_rule() -> None:
    assert is_hopeless(waited_ms=80, remaining_ms=30, total_ms=30, deadline_ms=100)
    assert not is_hopeless(waited_ms=60, remaining_ms=30, total_ms=30, deadline_ms=100)
    # A model that cannot make its deadline even when fresh is never shed (that would drop every frame).
    assert not is_hopeless(waited_ms=500, remaining_ms=120, total_ms=120, deadline_ms=100)
    rule = StaleRule(deadline_ms=100, enabled=True)
    assert not rule.hopeless(1000.0), "no prediction yet: never skip"
    rule.observe(30.0)
    assert rule.hopeless(80.0) and not rule.hopeless(60.0)
    assert not StaleRule(100, enabled=False).hopeless(1e6)


def test_stale_rule_probes_after_a_run_of_skips_like_the_executor() -> None:
    """A stale EMA (one slow forward, 90 ms on a 100 ms deadline) would skip every frame that waited 20 ms for
    good; after ``probe_frames`` skips in a row the next frame that fits by the best forward seen runs."""
    assert not probe_due(2, 3, waited_ms=20, solo_ms=10, deadline_ms=100)
    assert probe_due(3, 3, waited_ms=20, solo_ms=10, deadline_ms=100)
    assert not probe_due(3, 3, waited_ms=95, solo_ms=10, deadline_ms=100), "cannot make it even by solo"
    assert not probe_due(10**6, None, waited_ms=0, solo_ms=10, deadline_ms=100), "probes off"
    assert not probe_due(3, 3, waited_ms=0, solo_ms=None, deadline_ms=100), "no solo figure: no probe"
    rule = StaleRule(deadline_ms=100, enabled=True, probe_frames=3)
    rule.observe(10.0)
    for _ in range(20):
        rule.observe(90.0)  # the EMA converges to ~90, the best forward stays 10
    assert [rule.hopeless(20.0) for _ in range(3)] == [True, True, True]
    assert rule.hopeless(95.0), "due, but 95 + 10 > 100 even by the best forward: skipped"
    assert not rule.hopeless(20.0), "the probe runs"
    assert not rule.hopeless(20.0), "still due until a forward is observed"
    rule.observe(10.0)
    assert rule.unrefuted_skips == 0
    never = StaleRule(deadline_ms=100, enabled=True, probe_frames=None)
    never.observe(10.0)
    for _ in range(20):
        never.observe(90.0)
    assert all(never.hopeless(20.0) for _ in range(50))


class SleepModel(nn.Module):
    """A fake device: each forward takes ``sleep_sec`` with the GIL released."""

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


def test_model_loop_accounts_every_timed_frame_and_skips_stale_ones() -> None:
    # Frames every 10 ms, a model that needs 35 ms: the queue drops, the stale rule sheds, nothing is lost.
    plan = ModelPlan(rate_hz=100.0, warmup_frames=3, timed_frames=12)
    load = ModelLoad("m", deadline_ms=40.0, queue_depth=2)
    run = run_model_loop(SleepModel(0.035), tiny_task("m"), load, plan, time.monotonic() + 0.02, skip_stale=True)
    assert run.unaccounted() == []
    assert set(run.latency_ms) | set(run.dropped) | set(run.failed) == set(range(3, 15))
    assert run.dropped, "an overloaded model must drop frames"
    assert set(run.dropped.values()) <= {DROP_QUEUE, DROP_SHED}
    assert all(lat >= 30.0 for lat in run.latencies_ms)
    assert set(run.outputs) <= set(range(4))


def test_threads_global_lock_serialises_models() -> None:
    models = {"a": SleepModel(0.04), "b": SleepModel(0.04)}
    tasks = {"a": tiny_task("a"), "b": tiny_task("b")}
    loads = {"a": ModelLoad("a", 500.0), "b": ModelLoad("b", 500.0)}
    plan = RunPlan.uniform(["a", "b"], {"a": 10.0, "b": 10.0}, 0.0, 0.3)
    runs = run_threads(models, tasks, loads, plan, StaticConfig({"a": 1, "b": 1}, skip_stale=False),
                       global_lock=True)
    worst = max(max(r.latencies_ms) for r in runs.values())
    assert worst >= 75.0, "with the global lock one model waits for the other on every frame"
    for r in runs.values():
        assert r.unaccounted() == [] and r.latency_ms


def synthetic_run(name: str, offered: int, latencies: dict[int, float], dropped: dict[int, str]) -> ModelRun:
    return ModelRun(name, first_timed=0, offered=offered, latency_ms=latencies, dropped=dropped)


def test_dropping_frames_is_never_free() -> None:
    # Mode A drops 90 % of its frames and answers the rest instantly; mode B answers every frame on time.
    n = 100
    a = synthetic_run("m", n, {i: 0.1 for i in range(0, n, 10)}, {i: DROP_SHED for i in range(n) if i % 10})
    b = synthetic_run("m", n, {i: 90.0 for i in range(n)}, {})
    sa = ModelSummary.of(a, deadline_ms=100.0, duration_sec=10.0, accuracy=None)
    sb = ModelSummary.of(b, deadline_ms=100.0, duration_sec=10.0, accuracy=None)
    assert sa.on_time_rate == pytest.approx(0.1) and sb.on_time_rate == pytest.approx(1.0)
    assert sa.on_time_rate < sb.on_time_rate
    assert sa.p99_ms == pytest.approx(0.1), "completed-only p99 flatters the dropping mode ..."
    assert sa.p99_offered_ms is None, "... p99 over offered frames is infinite"
    assert sb.p99_offered_ms == pytest.approx(90.0)
    assert sa.coverage == pytest.approx(0.1) and sa.dropped_by_cause["shed"] == 90
    assert sa.goodput_hz == pytest.approx(1.0) and sb.goodput_hz == pytest.approx(10.0)


def test_late_frames_count_as_misses_and_joint_needs_every_model() -> None:
    det = synthetic_run("det", 4, {0: 50.0, 1: 150.0, 2: 50.0}, {3: DROP_QUEUE})
    cls = synthetic_run("cls", 4, {0: 10.0, 1: 10.0, 2: 99.0, 3: 10.0}, {})
    mode = summarize({"det": det, "cls": cls}, {"det": 100.0, "cls": 50.0}, 1.0, {}, shared_camera=True)
    assert mode.models["det"].frames_on_time == 2 and mode.models["det"].frames_late == 1
    assert mode.models["cls"].frames_on_time == 3
    assert mode.total_on_time == 5 and mode.on_time_rate == pytest.approx(5 / 8)
    assert mode.joint_on_time_rate == pytest.approx(1 / 4), "only frame 0 is on time for both"
    assert summarize({"det": det}, {"det": 100.0}, 1.0, {}, shared_camera=False).joint_on_time_rate is None


def test_a_runner_that_loses_a_frame_is_caught() -> None:
    run = synthetic_run("m", 3, {0: 1.0}, {1: DROP_QUEUE})
    with pytest.raises(RuntimeError, match="no outcome"):
        ModelSummary.of(run, 100.0, 1.0, None)


def test_percentile_over_offered_frames() -> None:
    assert percentile_offered([10.0] * 200, 0, 99.0) == pytest.approx(10.0)
    assert percentile_offered([10.0] * 199, 1, 99.0) == pytest.approx(10.0)  # 0.5 % lost: below the p99
    assert percentile_offered([10.0] * 198, 2, 99.0) is None  # 1 % lost: the p99 reaches a lost frame
    assert percentile_offered([], 5, 50.0) is None


def _mode(on_time: dict[str, int], offered: int = 100, joint: int | None = None) -> dict:
    models = {}
    for name, k in on_time.items():
        models[name] = {"on_time_rate": k / offered, "frames_on_time": k, "frames_offered": offered,
                        "accuracy_answered": 0.9}
    total = sum(on_time.values())
    return {"models": models, "on_time_rate": total / (offered * len(on_time)), "total_on_time": total,
            "joint_on_time_rate": (joint if joint is not None else min(on_time.values())) / offered,
            "decisions_timed": 0}


def test_ratios_and_decomposition_on_hand_made_numbers() -> None:
    modes = {
        "multiprocess": aggregate([_mode({"a": 40, "b": 40})]),
        "threads": aggregate([_mode({"a": 50, "b": 60}), _mode({"a": 70, "b": 60}), _mode({"a": 60, "b": 60})]),
        "sequential": aggregate([_mode({"a": 40, "b": 80})]),
        "sequential+variants": aggregate([_mode({"a": 80, "b": 80})]),
        "threads+variants": aggregate([_mode({"a": 50, "b": 50})]),
        "blocks": aggregate([_mode({"a": 90, "b": 30})]),
        "blocks+swap": aggregate([_mode({"a": 100, "b": 100})]),
    }
    assert modes["threads"]["models"]["a"]["on_time_rate"]["median"] == pytest.approx(0.6)
    assert modes["threads"]["models"]["a"]["on_time_rate"]["min"] == pytest.approx(0.5)
    ratios = compute_ratios(modes)
    blocks = ratios["blocks_vs_best_static"]
    assert blocks["a"]["ratio"] == pytest.approx(0.9 / 0.6) and blocks["a"]["best_mode"] == "threads"
    assert blocks["b"]["ratio"] == pytest.approx(0.3 / 0.8) and blocks["b"]["best_mode"] == "sequential"
    assert blocks["total"]["ratio"] == pytest.approx(0.6 / 0.6)
    d = ratios["decomposition"]["sequential"]["total"]
    assert d["compression"] == pytest.approx(0.8 / 0.6)
    assert d["scheduling"] == pytest.approx(1.0 / 0.8)
    assert d["total"] == pytest.approx(d["compression"] * d["scheduling"])
    assert ratios["swap_vs_best_static_variants"]["total"]["best_mode"] == "sequential+variants"
    lines = format_ratios(ratios)
    assert any("decomposition vs sequential: blocks+swap / sequential = 1.67 = compression" in ln and
               "1.33" in ln and "1.25" in ln for ln in lines)
    verdict = "\n".join(verdict_lines(ratios))
    assert "`blocks` LOSES to the best tuned static mode (`sequential`) for b" in verdict
    assert "`blocks` beats the best tuned static mode (`threads`) for a" in verdict


def test_calibration_picks_the_best_probe() -> None:
    assert candidate_counts(2) == [1, 2] and candidate_counts(16) == [1, 2, 4, 8, 16]
    # A fake probe that likes 1 thread for "a" and 2 for "b".
    calls = []

    def probe(threads: dict[str, int]) -> float:
        calls.append(threads)
        return (0.5 if threads["a"] == 1 else 0.2) + (0.4 if threads["b"] == 2 else 0.1)

    result = calibrate_threads(probe, ["a", "b"], cores=2)
    assert result.threads == {"a": 1, "b": 2}
    assert result.score == pytest.approx(0.9)
    # two uniform, a->1 (kept), b->1 = {1, 1} already probed: each configuration is probed once
    assert len(calls) == len(result.probes) == 3


def test_bisection_finds_a_known_threshold() -> None:
    result = find_sustainable_rate(lambda r: 1.0 if r <= 23.2 else 0.5)
    assert result.sustainable_rate_hz is not None and 22.5 <= result.sustainable_rate_hz <= 23.2
    assert find_sustainable_rate(lambda r: 0.0).sustainable_rate_hz is None
    top = find_sustainable_rate(lambda r: 1.0)
    assert top.sustainable_rate_hz == 60.0 and top.at_upper_bound


def test_sweep_finds_the_capacity_of_a_fake_device() -> None:
    # Two models of 20 + 30 ms per frame served by one thread: the device fits 20 camera frames per second.
    names = ["a", "b"]
    ctx = BenchContext(loads={n: ModelLoad(n, deadline_ms=400.0) for n in names},
                       models={"a": SleepModel(0.020), "b": SleepModel(0.030)},
                       tasks={n: tiny_task(n) for n in names}, executor_settings=ExecutorSettings(), cores=1)
    sweep = run_sweep(ctx, ["sequential"], {"a": 10.0, "b": 10.0}, 10.0, lo_hz=2.0, hi_hz=60.0,
                      resolution_hz=0.5, warmup_sec=0.3, window_sec=(1.5, 1.5))
    found = sweep["modes"]["sequential"]["sustainable_rate_hz"]
    # 20 Hz fits exactly; the bisection may stop a probe or two short when the machine is busy (1.5 s windows)
    assert found is not None and 16.0 <= found <= 22.0, sweep["modes"]["sequential"]
    assert sweep["physical_limit_hz_fp32"] == pytest.approx(20.0, rel=0.05)
    if sys.platform.startswith("linux"):
        assert sweep["background_cores"]["runs"] == len(sweep["modes"]["sequential"]["probes"])


def test_static_mode_with_fixed_plan_runs_each_model() -> None:
    names = ["a", "b"]
    ctx = BenchContext(loads={n: ModelLoad(n, deadline_ms=200.0) for n in names},
                       models={n: SleepModel(0.002) for n in names}, tasks={n: tiny_task(n) for n in names},
                       executor_settings=ExecutorSettings(), cores=2)
    plan = RunPlan.uniform(names, {"a": 20.0, "b": 20.0}, 0.2, 0.5)
    for mode in ("sequential", "sequential-fifo", "threads", "threads-naive"):
        result = run_mode(ctx, mode, plan)
        assert all(len(r.latency_ms) == 10 for r in result.runs.values()), mode
    assert run_mode(ctx, "threads-naive", plan).extra["threads_per_model"] == {"a": 2, "b": 2}
    assert run_mode(ctx, "sequential-fifo", plan).extra["order"] == "fifo"


# ---------------------------------------------------------------------------------------------- the CLI


def test_bad_input_fails_before_any_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    def no_models(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a model was built before the input was validated")

    monkeypatch.setattr(cli, "build_model", no_models)
    with pytest.raises(SystemExit):
        cli.main(["--repeats", "0"])
    assert "--repeats must be >= 1" in capsys.readouterr().err

    workload = tmp_path / "w.yaml"
    workload.write_text(DEFAULT_WORKLOAD.read_text() + "\nmodes: [blocks, fastest]\n")
    assert cli.main(["--workload", str(workload)]) == 2
    assert "unknown mode(s) ['fastest']" in capsys.readouterr().err

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"version": MANIFEST_VERSION, "models": {}, "variants": []}))
    rc = cli.main(["--workload", str(DEFAULT_WORKLOAD), "--modes", "sequential+variants", "--variants",
                   str(manifest), "--assignment", "detector/layer3=int8"])
    err = capsys.readouterr().err
    assert rc == 2 and "detector/layer3=int8" in err and str(manifest) in err

    rc = cli.main(["--workload", str(DEFAULT_WORKLOAD), "--modes", "blocks+swap", "--variants",
                   str(tmp_path / "missing.json")])
    assert rc == 2 and "missing.json does not exist" in capsys.readouterr().err


def test_cli_end_to_end_repeats_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    rc = cli.main(["--workload", str(DEFAULT_WORKLOAD), "--modes", "sequential,blocks", "--repeats", "2",
                   "--duration", "1", "--warmup", "0.5", "--random-init", "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["schema"] == 2 and result["settings"]["orders"] == [["sequential", "blocks"],
                                                                      ["blocks", "sequential"]]
    assert len(result["runs"]) == 4
    from multidnn_sched.runtime.device import partitioned_cpu_pool, usable_cores
    workers, threads = partitioned_cpu_pool(usable_cores(), 3)  # the default workload has no executor keys
    pools = [r["pool"] for r in result["runs"] if r["mode"] == "blocks"]
    sequential = usable_cores() if usable_cores() != threads else None  # a sequential block: every core
    assert pools == [{"workers": workers, "worker_threads": threads, "frames_in_flight": 1,
                      "sequential_threads": sequential}] * 2
    for r in result["runs"]:
        if r["mode"] == "blocks":  # every model, a count (0 unless a stale prediction sealed it)
            assert set(r["shed_probes"]) == {"detector", "embedder", "classifier"}
            assert all(isinstance(n, int) and n >= 0 for n in r["shed_probes"].values())
    prov = result["provenance"]
    assert prov["torch"] == torch.__version__ and len(prov["workload_sha256"]) == 64
    for mode in ("sequential", "blocks"):
        entry = result["modes"][mode]
        assert len(entry["on_time_rate"]["values"]) == 2
        for summary in entry["models"].values():
            assert summary["frames_offered"]["median"] == 15
    assert out.with_suffix(".png").is_file()
    assert "on-time rate" in printed and "| **blocks** | **all** |" in printed
    fp32 = result["bounds"]["fp32"]  # what any scheduler could do with this plan, next to every mode
    assert set(fp32["solo_ms"]) == set(result["workload"]["deadlines_ms"])
    assert 0.0 <= fp32["ideal_edf"]["on_time_rate"] <= 1.0 and 0.0 <= fp32["capacity_bound"]["on_time_rate"] <= 1.0
    assert "capacity bound" in printed
    assert cli.main(["--markdown", str(out)]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("### `default`") and format_table(result) in markdown
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- BEGIN multidnn-bench:headline -->\nold figures\n<!-- END multidnn-bench:headline -->\n")
    assert cli.main(["--markdown", str(out), "--markdown-into", str(doc)]) == 0
    text = doc.read_text()
    assert "old figures" not in text and "| blocks |" in text and text.startswith("intro\n")
    assert math.isfinite(result["modes"]["sequential"]["on_time_rate"]["median"])
    # every run says how quiet the machine was, and the report says it too
    assert all(rec["background_cores"] is None or rec["background_cores"] >= 0.0 for rec in result["runs"])
    if sys.platform.startswith("linux"):
        assert result["background_cores"]["runs"] == 4
        assert "machine quiet" in printed or "machine NOT quiet" in printed
    # ... and whether it kept its speed: a reference kernel timed before every run
    assert all(rec["speed_probe_ms"] > 0.0 for rec in result["runs"])
    assert result["machine_speed"]["probes"] == 4
    assert "machine speed steady" in printed or "machine speed NOT steady" in printed


@pytest.mark.parametrize(("settings", "expected"), [
    (ExecutorSettings(), None),  # no executor keys: the partitioned pool, as in the ROS container
    (ExecutorSettings(num_workers=1), (1, None)),  # the elastic pool, the bench's default before 2026-12-07
])
def test_blocks_executor_default_is_the_partitioned_pool(settings: ExecutorSettings,
                                                         expected: tuple[int, int | None] | None) -> None:
    from multidnn_sched.bench.block_modes import build_executor
    from multidnn_sched.runtime.device import partitioned_cpu_pool, usable_cores

    names = ["a", "b", "c"]
    executor = build_executor({n: nn.Sequential(nn.Identity()) for n in names}, {n: tiny_task(n) for n in names},
                              {n: ModelLoad(n, 100.0) for n in names}, {n: 10.0 for n in names}, settings,
                              variants=None)
    try:
        want = partitioned_cpu_pool(usable_cores(), len(names)) if expected is None else expected
        assert (executor.num_workers, executor.worker_threads) == want
    finally:
        executor.shutdown()
