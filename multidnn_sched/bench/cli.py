"""``multidnn-bench``: the same workload under every scheduling mode, side by side, in one run.

    multidnn-bench --workload config/workloads/default.yaml \\
        --modes multiprocess,threads,sequential,blocks,blocks+swap --duration 30 --json runs/bench.json

Prints a Markdown table with per-model p50/p99, deadline-miss rate, processed/dropped frames, accuracy, and the
ratios between modes; writes the JSON and a PNG of latency CDFs next to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from multidnn_sched.bench.report import ModelSummary, compute_ratios, format_table, mode_entry, plot_latency_cdfs
from multidnn_sched.bench.static_modes import ModelRun, run_multiprocess, run_single_thread, run_threads
from multidnn_sched.bench.tasks import (
    TaskInputs,
    build_model,
    build_task_inputs,
    render_truth_and_frames,
    task_accuracy,
)
from multidnn_sched.bench.workload import Workload, load_workload
from multidnn_sched.exceptions import MultiDnnError

ALL_MODES: tuple[str, ...] = ("multiprocess", "threads", "sequential", "blocks", "blocks+swap")
DEFAULT_THREADS = torch.get_num_threads()
"""torch's default intra-op threads (= cores), what every baseline thread uses, as users' nodes do."""
BACKEND = "PyTorch eager fp32 on CPU (original blocks in every mode; variants only in blocks+swap)"

log = logging.getLogger("multidnn_sched.bench")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="multidnn-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="config/workloads/default.yaml", help="workload YAML")
    parser.add_argument("--modes", default=",".join(ALL_MODES), help=f"comma-separated subset of {ALL_MODES}")
    parser.add_argument("--duration", type=float, default=None, help="seconds per mode (default: the workload's)")
    parser.add_argument("--json", default="runs/bench/bench.json", help="output JSON (PNG written beside it)")
    parser.add_argument("--variants", default=None,
                        help="variant manifest for blocks+swap (default: runs/variants/manifest.json, "
                        "built by `multidnn-compress build-defaults`)")
    parser.add_argument("--random-init", action="store_true",
                        help="use randomly initialised models (no shipped weights needed; accuracy meaningless)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log scheduling decisions")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in ALL_MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; expected a subset of {list(ALL_MODES)}")
    return args


def run_mode(
    mode: str,
    workload: Workload,
    workload_path: str,
    models: dict[str, torch.nn.Module],
    tasks: dict[str, TaskInputs],
    args: argparse.Namespace,
) -> tuple[dict[str, ModelRun], int, list[dict[str, Any]]]:
    """Run one mode; returns per-model runs, the number of scheduling decisions and the decision log."""
    names = [m.name for m in workload.models]
    depths = {m.name: m.queue_depth for m in workload.models}
    if mode == "multiprocess":
        runs = run_multiprocess(workload_path, workload.duration_sec, names, random_init=args.random_init)
        return runs, 0, []
    t0 = time.monotonic() + 0.5
    arrivals = workload.arrivals_sec(t0)
    if mode == "threads":
        return run_threads(models, tasks, depths, arrivals, global_lock=False, threads=DEFAULT_THREADS), 0, []
    if mode == "sequential":
        return run_single_thread(models, tasks, depths, arrivals, threads=DEFAULT_THREADS), 0, []
    from multidnn_sched.bench.block_modes import run_blocks

    return run_blocks(models, tasks, workload, swap=(mode == "blocks+swap"), variants_manifest=args.variants)


def _warm_up(models: dict[str, torch.nn.Module], tasks: dict[str, TaskInputs]) -> None:
    torch.set_num_threads(DEFAULT_THREADS)
    with torch.inference_mode():
        for name, model in models.items():
            for x in tasks[name].inputs:
                model(x)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # this thread only prepares inputs; see the warm-up note below
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        workload = load_workload(args.workload, duration_sec=args.duration)
        print(f"multidnn-bench: workload {workload.name!r}: {[m.name for m in workload.models]} at "
              f"{workload.rate_hz} Hz, {workload.duration_sec:.0f} s per mode, modes {args.modes}", file=sys.stderr)
        images, truth = render_truth_and_frames(workload.scene, workload.rate_hz)
        tasks = {m.name: build_task_inputs(m.name, images, truth) for m in workload.models}
        models = {m.name: build_model(m.name, random_init=args.random_init) for m in workload.models}
        # The main thread never runs multi-threaded torch work (it would keep an OpenMP team alive for the whole
        # run, see executor.ONE_OPENMP_TEAM_NOTE); the warm-up (oneDNN primitives per input shape) runs in a
        # short-lived thread.
        warm = threading.Thread(target=_warm_up, args=(models, tasks), name="bench-warmup")
        warm.start()
        warm.join()
        deadlines = {m.name: m.deadline_ms for m in workload.models}
        modes: dict[str, Any] = {}
        all_runs: dict[str, dict[str, ModelRun]] = {}
        decision_logs: dict[str, list[dict[str, Any]]] = {}
        for mode in args.modes:
            print(f"multidnn-bench: running {mode} ...", file=sys.stderr)
            runs, n_decisions, decisions = run_mode(mode, workload, args.workload, models, tasks, args)
            all_runs[mode] = runs
            decision_logs[mode] = decisions
            summaries = {
                name: ModelSummary.of(run, workload.n_frames, deadlines[name], task_accuracy(tasks[name], run.outputs))
                for name, run in runs.items()
            }
            modes[mode] = mode_entry(summaries, n_decisions)
    except MultiDnnError as exc:
        print(f"multidnn-bench: error: {exc}", file=sys.stderr)
        return 2
    result: dict[str, Any] = {
        "workload": {"name": workload.name, "path": args.workload, "rate_hz": workload.rate_hz,
                     "duration_sec": workload.duration_sec, "frames_per_model": workload.n_frames,
                     "deadlines_ms": deadlines},
        "backend": BACKEND,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available()},
        "modes": modes,
    }
    result["ratios"] = compute_ratios(modes)
    result["decisions_log"] = decision_logs
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    png = plot_latency_cdfs(all_runs, out.with_suffix(".png"), deadlines)
    print(format_table(result))
    print(f"\nJSON: {out}\nCDF plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
