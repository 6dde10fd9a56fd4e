"""``multidnn-bench``: the same workload under every scheduling mode, scored on on-time frames over offered frames.

    multidnn-bench --workload config/workloads/default.yaml --repeats 3 --json runs/bench/bench.json
    multidnn-bench --workload config/workloads/default.yaml --sweep --json runs/bench/sweep.json
    multidnn-bench --markdown runs/bench/bench.json runs/bench/sweep.json > docs/results_bench.md

Tuned baselines (calibrated threads, deadline order, stale frames skipped), compression separated from
scheduling (``+variants`` modes run blocks+swap's variant set), the same warm-up for every mode, interleaved
repeats with medians. See ``docs/results.md`` and ``../shared/BENCHMARKING.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

import torch

from multidnn_sched.bench.fixed_variants import VariantCache, check_assignment, parse_assignment
from multidnn_sched.bench.modes import DEFAULT_MODES, MODES, BenchContext, check_modes
from multidnn_sched.bench.report import (
    format_report,
    plot_results,
    render_headline,
    render_markdown,
    replace_marked_block,
)
from multidnn_sched.bench.runs import RunPlan
from multidnn_sched.bench.session import (
    PROBE_DURATION_SEC,
    Progress,
    calibrate,
    find_assignment,
    provenance,
    run_repeats,
    run_sweep,
    summary_tables,
    workload_bounds,
)
from multidnn_sched.bench.tasks import (
    TaskInputs,
    build_model,
    build_task_inputs,
    on_device,
    render_truth_and_frames,
)
from multidnn_sched.bench.workload import Workload, load_workload
from multidnn_sched.exceptions import ConfigError, MultiDnnError

DEFAULT_VARIANTS_MANIFEST = Path("runs/variants/manifest.json")
"""Where ``multidnn-compress build-defaults`` writes the default variants (also what ``make demo`` uses)."""

log = logging.getLogger("multidnn_sched.bench")


def _rate_pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected LO,HI in Hz, got {text!r}") from exc
    if not 0 < lo < hi:
        raise argparse.ArgumentTypeError(f"expected 0 < LO < HI, got {text!r}")
    return lo, hi


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="multidnn-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="config/workloads/default.yaml", help="workload YAML")
    parser.add_argument("--modes", default=None,
                        help=f"comma-separated modes (default: the workload's `modes:`, else "
                             f"{','.join(DEFAULT_MODES)}); all: {','.join(MODES)}")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per mode (default 3)")
    parser.add_argument("--duration", type=float, default=None, help="timed seconds per run (default: workload's)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="untimed seconds at the real rate before every run (default: workload's)")
    parser.add_argument("--sweep", action="store_true",
                        help="instead of the repeats: sustainable camera rate per mode (bisection)")
    parser.add_argument("--sweep-range", type=_rate_pair, default=(2.0, 60.0), metavar="LO,HI",
                        help="camera rates the sweep searches, Hz (default 2,60)")
    parser.add_argument("--sweep-resolution", type=float, default=0.5, help="sweep resolution, Hz (default 0.5)")
    parser.add_argument("--probe-sec", type=float, default=PROBE_DURATION_SEC,
                        help=f"timed seconds of a thread-calibration probe (default {PROBE_DURATION_SEC:g})")
    parser.add_argument("--json", default="runs/bench/bench.json", help="output JSON (PNG written beside it)")
    parser.add_argument("--variants", default=None,
                        help=f"variant manifest of blocks+swap and the +variants modes (default: "
                             f"{DEFAULT_VARIANTS_MANIFEST}, built by `multidnn-compress build-defaults`)")
    parser.add_argument("--assignment", default=None,
                        help="fixed variant set of the +variants modes, MODEL/BLOCK=VARIANT,... (default: what "
                             "blocks+swap holds at the end of its warm-up)")
    parser.add_argument("--random-init", action="store_true",
                        help="randomly initialised models (no shipped weights needed; accuracy meaningless)")
    parser.add_argument("--native-pointwise", action="store_true",
                        help="leave 1x1 convolutions to PyTorch's kernel heuristic, which runs them natively at one "
                             "intra-op thread (default: oneDNN there, for every mode; multidnn_sched.runtime.kernels)")
    parser.add_argument("--markdown", nargs="+", metavar="JSON", default=None,
                        help="render the tables of bench JSON files as Markdown to stdout and exit")
    parser.add_argument("--markdown-into", default=None, metavar="FILE",
                        help="with --markdown: replace the generated block of FILE (between <!-- BEGIN "
                             "multidnn-bench[:headline] --> and <!-- END ... --> markers) instead of printing")
    parser.add_argument("-v", "--verbose", action="store_true", help="log scheduling decisions")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.probe_sec <= 0:
        parser.error(f"--probe-sec must be > 0, got {args.probe_sec}")
    if args.sweep_resolution <= 0:
        parser.error(f"--sweep-resolution must be > 0, got {args.sweep_resolution}")
    return args


def _validate(args: argparse.Namespace) -> tuple[Workload, list[str], Path | None, dict[str, Any] | None]:
    """Everything that can be wrong with the input, checked before any model is built or run."""
    workload = load_workload(args.workload, duration_sec=args.duration)
    if args.warmup is not None:
        if args.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")
        workload.warmup_sec = args.warmup
    if args.modes is not None:
        modes = check_modes([m.strip() for m in args.modes.split(",") if m.strip()], "--modes")
    elif workload.modes is not None:
        modes = check_modes(list(workload.modes), f"{args.workload}: modes")
    else:
        modes = list(DEFAULT_MODES)
    needs_variants = any(MODES[m].variants for m in modes)
    manifest = Path(args.variants) if args.variants else DEFAULT_VARIANTS_MANIFEST
    assignment = None
    if needs_variants:
        if not manifest.is_file():
            raise ConfigError(f"modes {[m for m in modes if MODES[m].variants]} need a variant manifest: {manifest} "
                              f"does not exist (build it with `multidnn-compress build-defaults` or pass --variants)")
        if args.assignment:
            assignment = parse_assignment(args.assignment)
            unknown = set(assignment) - {m.name for m in workload.models}
            if unknown:
                raise ConfigError(f"--assignment names models {sorted(unknown)} that the workload does not run")
            check_assignment(assignment, manifest)
    elif args.assignment:
        raise ConfigError("--assignment given but no mode uses variants")
    return workload, modes, manifest if needs_variants else None, assignment


def _warm_up(models: dict[str, torch.nn.Module], tasks: dict[str, TaskInputs]) -> None:
    with torch.inference_mode():
        for name, model in models.items():
            for x in tasks[name].inputs[:8]:
                model(x)


def workload_rates(workload: Workload) -> dict[str, float]:
    """Per-model frame rates (a model without its own ``rate_hz`` follows the camera's)."""
    return {m.name: float(getattr(m, "rate_hz", None) or workload.rate_hz) for m in workload.models}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.markdown:
        try:
            paths = [Path(p) for p in args.markdown]
            if args.markdown_into:
                target = Path(args.markdown_into)
                text = target.read_text(encoding="utf-8")
                if "<!-- BEGIN multidnn-bench:headline -->" in text:
                    text = replace_marked_block(text, "multidnn-bench:headline", render_headline(paths))
                else:
                    text = replace_marked_block(text, "multidnn-bench", render_markdown(paths))
                target.write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(render_markdown(paths))
        except (OSError, ValueError, KeyError) as exc:
            print(f"multidnn-bench: error: --markdown: {exc}", file=sys.stderr)
            return 2
        return 0
    torch.set_num_threads(1)  # this thread only prepares inputs (see executor.ONE_OPENMP_TEAM_NOTE)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ctx: BenchContext | None = None
    try:
        workload, modes, manifest, assignment = _validate(args)
        rates = workload_rates(workload)
        names = [m.name for m in workload.models]
        print(f"multidnn-bench: workload {workload.name!r}: {names} at {rates} Hz, "
              f"{workload.warmup_sec:.0f} s warm-up + {workload.duration_sec:.0f} s timed per run, modes {modes}, "
              f"{'sweep' if args.sweep else f'{args.repeats} repeat(s)'}", file=sys.stderr, flush=True)
        images, truth = render_truth_and_frames(workload.scene, workload.rate_hz)
        device = workload.executor.device
        tasks = {m.name: on_device(build_task_inputs(m, images, truth), device) for m in workload.models}
        models = {m.name: build_model(m, random_init=args.random_init,
                                          native_pointwise=args.native_pointwise).to(device) for m in workload.models}
        ctx = BenchContext(loads={m.name: m for m in workload.models}, models=models, tasks=tasks,
                           executor_settings=workload.executor, workload_path=args.workload,
                           random_init=args.random_init, native_pointwise=args.native_pointwise,
                           variants=VariantCache(manifest) if manifest is not None else None)
        # The main thread never runs multi-threaded torch work; the warm-up runs in a short-lived thread.
        warm = threading.Thread(target=_warm_up, args=(models, tasks), name="bench-warmup")
        warm.start()
        warm.join()
        calibration: dict[str, Any] = {}
        if any(MODES[m].variants and MODES[m].serving != "blocks" for m in modes):
            if assignment is None:
                print("multidnn-bench: finding blocks+swap's variant set (one warm-up) ...", file=sys.stderr)
                assignment = find_assignment(ctx, rates, workload.warmup_sec)
            ctx.assignment = assignment
            calibration["variant_assignment"] = assignment
        calibration.update(calibrate(ctx, modes, rates, args.probe_sec))
        result: dict[str, Any] = {
            "schema": 2,
            "provenance": provenance(args.workload, manifest, argv),
            "workload": {"name": workload.name, "path": args.workload, "rate_hz": workload.rate_hz,
                         "rates_hz": rates, "deadlines_ms": ctx.deadlines_ms,
                         "priorities": {m.name: m.priority for m in workload.models},
                         "queue_depths": {m.name: m.queue_depth for m in workload.models},
                         "summary": _summary(workload, rates)},
            "settings": {"modes": modes, "repeats": args.repeats, "duration_sec": workload.duration_sec,
                         "warmup_sec": workload.warmup_sec, "sweep": args.sweep,
                         "pointwise_kernels": "native" if args.native_pointwise else "onednn"},
            "calibration": calibration,
        }
        out = Path(args.json)
        if args.sweep:
            lo, hi = args.sweep_range
            result["sweep"] = run_sweep(ctx, modes, rates, workload.rate_hz, lo_hz=lo, hi_hz=hi,
                                        resolution_hz=args.sweep_resolution)
            png = None
        else:
            plan = RunPlan.uniform(names, rates, workload.warmup_sec, workload.duration_sec)
            records, raw, orders = run_repeats(ctx, modes, args.repeats, plan, workload.duration_sec,
                                               Progress(args.repeats * len(modes)))
            result["settings"]["orders"] = orders
            result["runs"] = records
            result.update(summary_tables(records, modes))
            result["bounds"] = workload_bounds(ctx, plan)
            png = plot_results(result, raw, out.with_suffix(".png"))
    except MultiDnnError as exc:
        print(f"multidnn-bench: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if ctx is not None:
            ctx.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(format_report(result))
    print(f"\nJSON: {out}" + (f"\nplot: {png}" if png else ""))
    return 0


def _summary(workload: Workload, rates: dict[str, float]) -> str:
    parts = [f"{m.name} {rates[m.name]:g} Hz / {m.deadline_ms:g} ms / prio {m.priority}" for m in workload.models]
    return f"{workload.scene.width}×{workload.scene.height} camera; " + ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
