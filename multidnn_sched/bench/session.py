"""One bench invocation: calibration, interleaved repeats, the sustainable-rate sweep, provenance.

Order of work (every step outside any timed window of another):

1. **Variant assignment** (when a ``+variants`` mode runs and none was given): ``blocks+swap`` serves the
   workload's warm-up once; the variant set active when its first timed frame arrives is the assignment.
2. **Calibration** of the intra-op threads per model of ``threads`` / ``threads+variants`` / ``multiprocess``
   (:mod:`multidnn_sched.bench.calibrate`), on short probes at the workload's rate.
3. **Repeats**: round robin over the modes, the order rotated by one each repeat; every run gets the same plan
   (warm-up at the real rate, then the timed window).
4. **Sweep** (optional): per mode, the sustainable camera rate by bisection, next to the physical limit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multidnn_sched.bench.aggregate import aggregate, compute_ratios
from multidnn_sched.bench.bound import capacity_bound, device_cost_ms, simulate_ideal_edf
from multidnn_sched.bench.calibrate import calibrate_threads
from multidnn_sched.bench.metrics import ModeSummary, summarize
from multidnn_sched.bench.modes import CALIBRATED, BenchContext, ModeRun, run_mode
from multidnn_sched.bench.quiet import background_cores, quiet_summary
from multidnn_sched.bench.quiet import snapshot as cpu_snapshot
from multidnn_sched.bench.runs import ModelRun, RunPlan
from multidnn_sched.bench.speed import speed_probe_ms, speed_summary
from multidnn_sched.bench.sweep import find_sustainable_rate
from multidnn_sched.bench.tasks import task_accuracy

log = logging.getLogger("multidnn_sched.bench")

PROBE_WARMUP_SEC = 2.0
PROBE_DURATION_SEC = 4.0
"""Calibration probes: 2 s untimed + 4 s timed at the workload's rate (60 frames per model at 15 Hz)."""
SWEEP_WARMUP_SEC = 2.0
SWEEP_MIN_WINDOW_SEC = 4.0
SWEEP_MAX_WINDOW_SEC = 8.0
SWEEP_WINDOW_FRAMES = 100
"""A sweep probe's timed window holds ~100 frames (so 0.99 allows one miss), clamped to 4-8 s."""
SOLO_REPEATS = 20


@dataclass
class Progress:
    """One line per run on stderr, with the elapsed time and an estimate of what is left."""

    total: int
    done: int = 0
    started: float = 0.0

    def step(self, label: str) -> None:
        if self.done == 0:
            self.started = time.monotonic()
        elapsed = time.monotonic() - self.started
        left = (elapsed / self.done * (self.total - self.done)) if self.done else float("nan")
        eta = f", ~{left / 60:.1f} min left" if self.done else ""
        print(f"multidnn-bench: [{self.done + 1}/{self.total}] {label} (elapsed {elapsed / 60:.1f} min{eta})",
              file=sys.stderr, flush=True)
        self.done += 1


def score_run(ctx: BenchContext, mode_run: ModeRun, plan: RunPlan, duration_sec: float) -> ModeSummary:
    accuracies = {name: task_accuracy(ctx.tasks[name], run.outputs) for name, run in mode_run.runs.items()}
    summary = summarize(mode_run.runs, ctx.deadlines_ms, duration_sec, accuracies,
                        shared_camera=plan.shared_camera, decisions_timed=len(mode_run.decisions_timed))
    summary.extra = dict(mode_run.extra)
    if mode_run.decisions_timed:
        summary.extra["decisions_timed_log"] = mode_run.decisions_timed
    return summary


def sweep_score(summary: ModeSummary) -> float:
    """What a sweep probe must keep >= 0.99: the joint on-time rate, or (models on different cameras) the
    worst model's on-time rate."""
    if summary.joint_on_time_rate is not None:
        return summary.joint_on_time_rate
    return min(s.on_time_rate for s in summary.models.values())


def find_assignment(ctx: BenchContext, rates_hz: Mapping[str, float], warmup_sec: float) -> dict[str, Any]:
    """Run blocks+swap's warm-up once; the variant set it holds at the first timed frame."""
    plan = RunPlan.uniform(list(ctx.loads), dict(rates_hz), warmup_sec, 1.0)
    result = run_mode(ctx, "blocks+swap", plan)
    return result.extra["assignment_at_timed_start"]


def calibrate(ctx: BenchContext, modes: Sequence[str], rates_hz: Mapping[str, float],
              probe_sec: float = PROBE_DURATION_SEC, progress: Progress | None = None) -> dict[str, Any]:
    """Calibrate the threads of every requested mode in ``CALIBRATED``; stores them in ``ctx.threads``.

    ``probe_sec``: the timed window of a probe (its warm-up is half of it, at most ``PROBE_WARMUP_SEC``)."""
    out: dict[str, Any] = {}
    plan = RunPlan.uniform(list(ctx.loads), dict(rates_hz), min(PROBE_WARMUP_SEC, probe_sec / 2), probe_sec)
    for mode in (m for m in modes if m in CALIBRATED):
        def probe(threads: dict[str, int], mode: str = mode) -> float:
            if progress is not None:
                progress.step(f"calibrating {mode}: threads {threads}")
            run = run_mode(ctx, mode, plan, threads=threads)
            return score_run(ctx, run, plan, probe_sec).on_time_rate

        calibration = calibrate_threads(probe, list(ctx.loads), ctx.cores)
        ctx.threads[mode] = calibration.threads
        out[mode] = calibration.as_dict()
        print(f"multidnn-bench: {mode}: intra-op threads per model {calibration.threads} "
              f"(probe on-time rate {calibration.score:.3f})", file=sys.stderr, flush=True)
    return out


def run_repeats(
    ctx: BenchContext,
    modes: Sequence[str],
    repeats: int,
    plan: RunPlan,
    duration_sec: float,
    progress: Progress | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, ModelRun]]], list[list[str]]]:
    """Round robin, order rotated each repeat. Returns per-run records, raw runs per mode, the orders."""
    records: list[dict[str, Any]] = []
    raw: dict[str, list[dict[str, ModelRun]]] = {m: [] for m in modes}
    orders: list[list[str]] = []
    for r in range(repeats):
        order = list(modes[r % len(modes):]) + list(modes[:r % len(modes)])
        orders.append(order)
        for mode in order:
            if progress is not None:
                progress.step(f"repeat {r + 1}/{repeats}: {mode}")
            probe_ms = speed_probe_ms(ctx.cores)
            before = cpu_snapshot()
            mode_run = run_mode(ctx, mode, plan)
            background = background_cores(before, cpu_snapshot())
            summary = score_run(ctx, mode_run, plan, duration_sec)
            records.append({"repeat": r, "mode": mode, **summary.as_dict(), "background_cores": background,
                            "speed_probe_ms": probe_ms})
            raw[mode].append(mode_run.runs)
    return records, raw, orders


def aggregate_modes(records: Sequence[Mapping[str, Any]], modes: Sequence[str]) -> dict[str, Any]:
    """Per mode: statistics over its repeats of every figure (logs and settings dropped)."""
    out: dict[str, Any] = {}
    for mode in modes:
        rows = [{k: v for k, v in rec.items() if k in ("models", "total_on_time", "total_offered", "on_time_rate",
                                                         "joint_on_time_rate", "decisions_timed")}
                for rec in records if rec["mode"] == mode]
        if rows:
            out[mode] = aggregate(rows)
    return out


def summary_tables(records: Sequence[Mapping[str, Any]], modes: Sequence[str]) -> dict[str, Any]:
    per_mode = aggregate_modes(records, modes)
    return {"modes": per_mode, "ratios": compute_ratios(per_mode),
            "background_cores": quiet_summary([rec.get("background_cores") for rec in records]),
            "machine_speed": speed_summary([rec.get("speed_probe_ms") for rec in records])}


def solo_latency_ms(models: Mapping[str, torch.nn.Module], tasks: Mapping[str, Any], cores: int) -> dict[str, float]:
    """Median whole-model latency per frame, alone, with ``cores`` intra-op threads (fp32 or whatever ``models``
    holds)."""
    out: dict[str, float] = {}

    def measure() -> None:
        torch.set_num_threads(cores)
        with torch.inference_mode():
            for name, model in models.items():
                inputs = tasks[name].inputs
                for x in inputs[:3]:
                    model(x)
                times = []
                for i in range(SOLO_REPEATS):
                    x = inputs[i % len(inputs)]
                    t = time.perf_counter()
                    model(x)
                    times.append((time.perf_counter() - t) * 1e3)
                out[name] = statistics.median(times)

    worker = threading.Thread(target=measure, name="bench-solo")
    worker.start()
    worker.join()
    return out


def physical_limit_hz(solo_ms: Mapping[str, float], rate_share: Mapping[str, float]) -> float:
    """Camera rate at which the models' work fills the device: 1 / Σ (frames per camera frame × solo s)."""
    work_sec = sum(rate_share[name] * solo_ms[name] / 1e3 for name in solo_ms)
    return 1.0 / work_sec if work_sec > 0 else float("inf")


def run_sweep(
    ctx: BenchContext,
    modes: Sequence[str],
    rates_hz: Mapping[str, float],
    camera_rate_hz: float,
    *,
    lo_hz: float,
    hi_hz: float,
    resolution_hz: float,
    warmup_sec: float = SWEEP_WARMUP_SEC,
    window_sec: tuple[float, float] = (SWEEP_MIN_WINDOW_SEC, SWEEP_MAX_WINDOW_SEC),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Sustainable camera rate per mode (model rates scaled with the camera's), plus the physical limits.

    ``window_sec``: (min, max) of a probe's timed window, which holds ``SWEEP_WINDOW_FRAMES`` frames."""
    share = {name: rate / camera_rate_hz for name, rate in rates_hz.items()}
    out: dict[str, Any] = {"modes": {}, "lo_hz": lo_hz, "hi_hz": hi_hz, "resolution_hz": resolution_hz}
    background: list[float | None] = []
    probes: list[float | None] = []
    for mode in modes:
        def probe(rate: float, mode: str = mode) -> float:
            window = min(window_sec[1], max(window_sec[0], SWEEP_WINDOW_FRAMES / rate))
            plan = RunPlan.uniform(list(ctx.loads), {n: rate * share[n] for n in ctx.loads}, warmup_sec, window)
            if progress is not None:
                progress(f"sweep {mode}: {rate:.1f} Hz")
            probes.append(speed_probe_ms(ctx.cores))
            before = cpu_snapshot()
            mode_run = run_mode(ctx, mode, plan)
            background.append(background_cores(before, cpu_snapshot()))
            score = sweep_score(score_run(ctx, mode_run, plan, window))
            print(f"multidnn-bench: sweep {mode} at {rate:.1f} Hz: joint on-time rate {score:.3f}",
                  file=sys.stderr, flush=True)
            return score

        result = find_sustainable_rate(probe, lo_hz=lo_hz, hi_hz=hi_hz, resolution_hz=resolution_hz)
        out["modes"][mode] = result.as_dict()
    out["background_cores"] = quiet_summary(background)
    out["machine_speed"] = speed_summary(probes)
    solo = solo_latency_ms(ctx.models, ctx.tasks, ctx.cores)
    out["solo_ms_fp32"] = solo
    out["physical_limit_hz_fp32"] = physical_limit_hz(solo, share)
    if ctx.assignment is not None and ctx.variants is not None:
        solo_v = solo_latency_ms(ctx.variant_models(), ctx.tasks, ctx.cores)
        out["solo_ms_variants"] = solo_v
        out["physical_limit_hz_variants"] = physical_limit_hz(solo_v, share)
    return out


def workload_bounds(ctx: BenchContext, plan: RunPlan) -> dict[str, Any]:
    """The capacity bound and the ideal-EDF reference (:mod:`multidnn_sched.bench.bound`) of the repeats' plan,
    from solo service times measured now: fp32, and the fixed variant set when there is one."""
    queue = {name: load.queue_depth for name, load in ctx.loads.items()}
    out: dict[str, Any] = {}
    sets = {"fp32": ctx.models}
    if ctx.assignment is not None and ctx.variants is not None:
        sets["variants"] = ctx.variant_models()
    for label, models in sets.items():
        solo = solo_latency_ms(models, ctx.tasks, ctx.cores)
        by_threads = {ctx.cores: solo}
        if ctx.cores > 1:
            by_threads[1] = solo_latency_ms(models, ctx.tasks, 1)
        cost = device_cost_ms(by_threads, ctx.cores)
        out[label] = {
            "solo_ms": solo,
            "solo_ms_1_thread": by_threads.get(1, solo),
            "device_cost_ms": cost,
            "capacity_bound": capacity_bound(plan, solo, ctx.deadlines_ms, device_cost_ms=cost).as_dict(),
            "ideal_edf": simulate_ideal_edf(plan, solo, ctx.deadlines_ms, queue).as_dict(),
        }
    return out


def _sha256(path: Path | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def provenance(workload_path: str, manifest_path: Path | None, argv: Sequence[str]) -> dict[str, Any]:
    """Where a result came from: commit, library versions, machine, input hashes, date, command."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    try:
        import onnxruntime

        ort_version: str | None = onnxruntime.__version__
    except ImportError:
        ort_version = None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "workload_path": workload_path,
        "workload_sha256": _sha256(Path(workload_path)),
        "variant_manifest": str(manifest_path) if manifest_path is not None else None,
        "variant_manifest_sha256": _sha256(manifest_path),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": ["multidnn-bench", *argv],
    }
