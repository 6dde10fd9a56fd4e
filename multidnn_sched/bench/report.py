"""Printed tables, Markdown for the docs, and plots — all rendered from the bench JSON.

JSON (``schema: 2``)::

    {"schema": 2, "provenance": {...}, "workload": {...}, "settings": {...},
     "calibration": {MODE: {"threads_per_model", "probes"}, "variant_assignment": {...}},
     "runs": [{"repeat", "mode", "models": {NAME: ModelSummary}, "total_on_time", "on_time_rate",
               "joint_on_time_rate", "decisions_timed", ...}, ...],
     "modes": {MODE: the same figures as {"median", "min", "max", "values"}},
     "ratios": {"blocks_vs_best_static", "swap_vs_best_static_variants", "decomposition", ...},
     "sweep": {"modes": {MODE: {"sustainable_rate_hz", "probes"}}, "physical_limit_hz_fp32", ...}}

The headline is the on-time rate over offered frames and the joint on-time rate; latency percentiles of
completed frames are labelled "completed only"; p99 over offered frames prints ∞ when more frames were lost
than the percentile allows. No figure in ``docs/results.md`` is typed by hand: ``multidnn-bench --markdown``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from multidnn_sched.bench.aggregate import median
from multidnn_sched.bench.quiet import format_quiet
from multidnn_sched.bench.runs import DROP_CAUSES, ModelRun
from multidnn_sched.bench.speed import format_speed


def _num(value: float | None, spec: str, none: str = "—") -> str:
    return none if value is None else format(value, spec)


def _range(node: Any, spec: str, none: str = "—") -> str:
    """``median (min–max)`` of an aggregated leaf; just the median when all repeats agree or there is one.
    ``none``: how a missing value reads (``"∞"`` for a latency percentile made infinite by lost frames)."""
    if not isinstance(node, Mapping):
        return _num(node, spec, none)
    mid = node.get("median")
    if mid is None:
        return none if node.get("n_none") else "—"
    lo, hi = node.get("min"), node.get("max")
    text = format(mid, spec)
    if lo is not None and hi is not None and (format(lo, spec) != text or format(hi, spec) != text):
        text += f" ({format(lo, spec)}–{format(hi, spec)})"
    if node.get("n_none"):
        text += f" [{node['n_none']}×{none}]"
    return text


def format_table(result: Mapping[str, Any]) -> str:
    """Medians over repeats (min–max in parentheses), one row per (mode, model) and one per mode."""
    lines = [
        "| mode | model | on-time rate | on time / offered | late | dropped q/s/a | failed | "
        "p50 ms (completed only) | p99 ms (completed only) | p99 ms over offered | coverage | accuracy (answered) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, entry in result["modes"].items():
        for name, s in entry["models"].items():
            causes = "/".join(_num(median(s, "dropped_by_cause", c), ".0f", "0") for c in DROP_CAUSES)
            lines.append(
                f"| {mode} | {name} | {_range(s['on_time_rate'], '.3f')} | "
                f"{_num(median(s, 'frames_on_time'), '.0f')} / {_num(median(s, 'frames_offered'), '.0f')} | "
                f"{_num(median(s, 'frames_late'), '.0f')} | {causes} | {_num(median(s, 'frames_failed'), '.0f')} | "
                f"{_range(s['p50_ms'], '.1f')} | {_range(s['p99_ms'], '.1f')} | "
                f"{_range(s['p99_offered_ms'], '.1f', '∞')} | "
                f"{_range(s['coverage'], '.3f')} | {_range(s['accuracy_answered'], '.3f')} |"
            )
        lines.append(
            f"| **{mode}** | **all** | **{_range(entry['on_time_rate'], '.3f')}** | "
            f"{_num(median(entry, 'total_on_time'), '.0f')} / {_num(median(entry, 'total_offered'), '.0f')} | "
            f"joint: **{_range(entry['joint_on_time_rate'], '.3f')}** | | | | | | "
            f"decisions in window: {_range(entry.get('decisions_timed'), '.0f')} | |"
        )
    return "\n".join(lines)


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_ratios(ratios: Mapping[str, Any]) -> list[str]:
    """The ratio and decomposition lines (ratios of median on-time rates)."""
    lines: list[str] = []
    for key, label in (("blocks_vs_best_static", "blocks vs best tuned static (fp32)"),
                       ("swap_vs_best_static_variants", "blocks+swap vs best static with the same variants")):
        block = ratios.get(key)
        if not block:
            continue
        parts = [f"{name} {_fmt_ratio(r['ratio'])} (vs {r['best_mode']})" for name, r in block.items()]
        lines.append(f"- {label}, on-time rate ratio: " + ", ".join(parts))
    for base, table in ratios.get("decomposition", {}).items():
        total = table.get("total", {})
        joint = table.get("joint", {})
        lines.append(
            f"- decomposition vs {base}: blocks+swap / {base} = {_fmt_ratio(total.get('total'))} "
            f"= compression ({base}+variants / {base}) {_fmt_ratio(total.get('compression'))} "
            f"× scheduling (blocks+swap / {base}+variants) {_fmt_ratio(total.get('scheduling'))}; "
            f"joint: {_fmt_ratio(joint.get('total'))} = {_fmt_ratio(joint.get('compression'))} "
            f"× {_fmt_ratio(joint.get('scheduling'))}"
        )
    acc = ratios.get("swap_accuracy_vs_fp32")
    if acc:
        lines.append("- accuracy on answered frames, blocks+swap / sequential (fp32): "
                     + ", ".join(f"{n} {_fmt_ratio(v)}" for n, v in acc.items()))
    return lines


def verdict_lines(ratios: Mapping[str, Any]) -> list[str]:
    """Plain sentences, generated from the ratios, on where our modes lose or win."""
    lines: list[str] = []
    for key, mine, what in (("blocks_vs_best_static", "blocks", "the best tuned static mode"),
                            ("swap_vs_best_static_variants", "blocks+swap",
                             "the best static mode with the same variants")):
        for name, r in ratios.get(key, {}).items():
            if r["ratio"] is None or r["mine"] is None:
                continue
            scope = {"total": "over all frames", "joint": "jointly (every model of a frame)"}.get(name,
                                                                                               f"for {name}")
            verb = "LOSES to" if r["ratio"] < 0.98 else ("beats" if r["ratio"] > 1.02 else "ties with")
            lines.append(f"- `{mine}` {verb} {what} (`{r['best_mode']}`) {scope}: on-time rate "
                         f"{r['mine']:.3f} vs {r['best']:.3f} ({r['ratio']:.2f}×).")
    return lines


def format_sweep(sweep: Mapping[str, Any], deadlines_ms: Mapping[str, float] | None = None) -> str:
    lines = ["| mode | sustainable camera rate (joint on-time ≥ 0.99) | probes (Hz: joint on-time rate) |",
             "|---|---:|---|"]
    for mode, entry in sweep["modes"].items():
        rate = entry["sustainable_rate_hz"]
        text = f"< {sweep['lo_hz']:.1f} Hz" if rate is None else (
            f"≥ {rate:.1f} Hz" if entry["at_upper_bound"] else f"{rate:.1f} Hz")
        probes = ", ".join(f"{p['rate_hz']:.1f}: {p['joint_on_time_rate']:.2f}" for p in entry["probes"])
        lines.append(f"| {mode} | {text} | {probes} |")
    limit = sweep.get("physical_limit_hz_fp32")
    solo = sweep.get("solo_ms_fp32", {})
    lines.append("")
    lines.append(f"- physical limit, fp32: {_num(limit, '.1f')} Hz = 1 / Σ solo per-frame latency on all cores "
                 f"({', '.join(f'{n} {v:.1f} ms' for n, v in solo.items())})")
    if deadlines_ms and solo:
        lines.append(f"- one camera frame's work, one model after another on all cores: Σ solo "
                     f"{sum(solo.values()):.1f} ms fp32 against the largest deadline {max(deadlines_ms.values()):g} ms "
                     f"(a bound on the joint on-time rate at ANY rate for a mode that serves the models of a "
                     f"frame back to back)")
    if "physical_limit_hz_variants" in sweep:
        solo_v = sweep.get("solo_ms_variants", {})
        lines.append(f"- physical limit, blocks+swap's variant set: {sweep['physical_limit_hz_variants']:.1f} Hz "
                     f"({', '.join(f'{n} {v:.1f} ms' for n, v in solo_v.items())})")
    return "\n".join(lines)


def format_calibration(result: Mapping[str, Any]) -> list[str]:
    lines = []
    for mode, entry in result.get("calibration", {}).items():
        if mode == "variant_assignment":
            continue
        lines.append(f"- {mode}: intra-op threads per model {entry['threads_per_model']} "
                     f"(best of {len(entry['probes'])} probes, probe on-time rate {entry['probe_on_time_rate']:.3f})")
    assignment = result.get("calibration", {}).get("variant_assignment")
    if assignment is not None:
        items = [f"{m}/{b}={v}" for m, blocks in assignment.items() for b, v in blocks.items()]
        lines.append(f"- variant set of the +variants modes (blocks+swap at the end of its warm-up): "
                     f"{', '.join(items) or 'none (all original)'}")
    return lines


def format_bounds(bounds: Mapping[str, Any] | None) -> list[str]:
    """What any scheduler could reach on this plan (bench.bound): upper bound and ideal-EDF reference."""
    if not bounds:
        return []
    lines = ["| service times | capacity bound (no scheduler can exceed) | "
             "ideal preemptive EDF, zero overhead, one frame at a time on every core | "
             "per model (bound / ideal) |", "|---|---:|---:|---|"]
    for label, entry in bounds.items():
        cap, ideal = entry["capacity_bound"], entry["ideal_edf"]
        per = ", ".join(f"{n} {cap['models'][n]['on_time_rate']:.3f} / {ideal['models'][n]['on_time_rate']:.3f}"
                        for n in cap["models"])
        solo = ", ".join(f"{n} {v:.1f}" for n, v in entry["solo_ms"].items())
        if entry.get("device_cost_ms"):
            solo += "; device ms per frame at the best thread count: " + ", ".join(
                f"{n} {v:.1f}" for n, v in entry["device_cost_ms"].items())
        lines.append(f"| {label} (solo ms: {solo}) | {cap['on_time_rate']:.3f} | {ideal['on_time_rate']:.3f} | "
                     f"{per} |")
    return lines


def format_report(result: Mapping[str, Any]) -> str:
    """Everything printed after a run (also the body of ``--markdown``)."""
    parts: list[str] = []
    if result.get("modes"):
        parts.append(format_table(result))
        ratio_lines = format_ratios(result.get("ratios", {}))
        if ratio_lines:
            parts.append("\n".join(ratio_lines))
        verdict = verdict_lines(result.get("ratios", {}))
        if verdict:
            parts.append("\n".join(verdict))
    quiet = format_quiet(result.get("background_cores"), "timed runs")
    if quiet:
        parts.append(quiet)
    speed = format_speed(result.get("machine_speed"), "timed runs")
    if speed:
        parts.append(speed)
    bounds = format_bounds(result.get("bounds"))
    if bounds:
        parts.append("\n".join(bounds))
    calibration = format_calibration(result)
    if calibration:
        parts.append("\n".join(calibration))
    if result.get("sweep"):
        parts.append(format_sweep(result["sweep"], result.get("workload", {}).get("deadlines_ms")))
        quiet = format_quiet(result["sweep"].get("background_cores"), "sweep probes")
        if quiet:
            parts.append(quiet)
        speed = format_speed(result["sweep"].get("machine_speed"), "sweep probes")
        if speed:
            parts.append(speed)
    return "\n\n".join(parts)


def render_markdown(paths: Sequence[Path]) -> str:
    """``multidnn-bench --markdown A.json B.json``: one section per JSON, with its provenance."""
    sections = []
    for path in paths:
        result = json.loads(Path(path).read_text())
        if result.get("schema") != 2:
            raise ValueError(f"{path}: expected a multidnn-bench JSON with schema 2, got {result.get('schema')!r}")
        prov, workload, settings = result["provenance"], result["workload"], result["settings"]
        head = (f"### `{workload['name']}` — {', '.join(settings['modes'])}\n\n"
                f"{workload['summary']}; {settings['repeats']} repeat(s) of {settings['duration_sec']:.0f} s timed "
                f"+ {settings['warmup_sec']:.0f} s warm-up per mode, interleaved (order rotated each repeat); "
                f"medians with min–max. Commit `{(prov['git_commit'] or 'unknown')[:10]}`"
                f"{' (dirty)' if prov.get('git_dirty') else ''}, torch {prov['torch']}, onnxruntime "
                f"{prov['onnxruntime']}, {prov['usable_cores']} cores, {prov['date_utc']}; workload sha256 "
                f"`{(prov['workload_sha256'] or '')[:12]}`, manifest sha256 "
                f"`{(prov['variant_manifest_sha256'] or 'none')[:12]}`. Source: `{path}`.")
        sections.append(head + "\n\n" + format_report(result))
    return "\n\n".join(sections) + "\n"


def render_headline(paths: Sequence[Path]) -> str:
    """The README's short version: per workload, on-time and joint on-time rate per mode (medians), the
    sustainable rates, and the generated verdict lines."""
    bench = [json.loads(Path(p).read_text()) for p in paths]
    lines: list[str] = []
    for path, result in zip(paths, bench, strict=True):
        name = result["workload"]["name"]
        if result.get("modes"):
            lines += [f"`{name}` ({result['settings']['repeats']} interleaved repeats, medians; `{path}`):", "",
                      "| mode | on-time rate (all frames) | joint on-time rate |", "|---|---:|---:|"]
            for mode, entry in result["modes"].items():
                lines.append(f"| {mode} | {_range(entry['on_time_rate'], '.3f')} | "
                             f"{_range(entry['joint_on_time_rate'], '.3f')} |")
            lines += [""] + [ln for ln in verdict_lines(result.get("ratios", {}))
                             if "over all frames" in ln or "jointly" in ln]
            quiet = format_quiet(result.get("background_cores"), "timed runs")
            speed = format_speed(result.get("machine_speed"), "timed runs")
            lines += ([quiet] if quiet else []) + ([speed] if speed else []) + [""]
        if result.get("sweep"):
            sweep = result["sweep"]
            rates = []
            for mode, entry in sweep["modes"].items():
                rate = entry["sustainable_rate_hz"]
                rates.append(f"{mode} " + (f"< {sweep['lo_hz']:.1f}" if rate is None else f"{rate:.1f}") + " Hz")
            lines += [f"Sustainable camera rate on `{name}` (joint on-time ≥ 0.99): " + ", ".join(rates)
                      + f"; physical limit fp32 {sweep['physical_limit_hz_fp32']:.1f} Hz.", ""]
    return "\n".join(lines).rstrip() + "\n"


def replace_marked_block(text: str, marker: str, body: str) -> str:
    """Replace what lies between ``<!-- BEGIN marker -->`` and ``<!-- END marker -->`` by ``body``."""
    begin, end = f"<!-- BEGIN {marker} -->", f"<!-- END {marker} -->"
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"expected the markers {begin!r} ... {end!r} in the file")
    return text[:start + len(begin)] + "\n" + body.rstrip() + "\n" + text[stop:]


def plot_results(result: Mapping[str, Any], raw: Mapping[str, Sequence[Mapping[str, ModelRun]]], path: Path) -> Path:
    """Left: on-time rate per model and mode (median bars, min–max whiskers). Right panels: latency CDFs over
    *offered* frames of every repeat pooled (a dropped frame is at +∞, so a curve ends at its on-time share)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(result["modes"])
    names = sorted({n for entry in result["modes"].values() for n in entry["models"]})
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(5 * (1 + len(names)), 4.2), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / max(1, len(modes))
    for k, mode in enumerate(modes):
        mids, errs = [], [[], []]
        for name in names:
            node = result["modes"][mode]["models"].get(name, {}).get("on_time_rate", {})
            mid = node.get("median") or 0.0
            mids.append(mid)
            errs[0].append(mid - (node.get("min") if node.get("min") is not None else mid))
            errs[1].append((node.get("max") if node.get("max") is not None else mid) - mid)
        ax.bar(np.arange(len(names)) + k * width, mids, width, yerr=errs, capsize=2, label=mode)
    ax.set_xticks(np.arange(len(names)) + width * (len(modes) - 1) / 2, names)
    ax.set_ylabel("on-time rate (of offered frames)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    deadlines = result["workload"]["deadlines_ms"]
    for ax, name in zip(axes[0][1:], names, strict=True):
        for mode in modes:
            latencies: list[float] = []
            offered = 0
            for runs in raw.get(mode, []):
                if name in runs:
                    latencies.extend(runs[name].latencies_ms)
                    offered += runs[name].offered
            if offered:
                lat = np.sort(np.asarray(latencies))
                ax.step(lat, np.arange(1, lat.size + 1) / offered, where="post", label=mode)
        ax.axvline(deadlines[name], color="k", linestyle="--", linewidth=1, label="deadline")
        ax.set_title(f"{name}: latency CDF over offered frames")
        ax.set_xlabel("arrival → result, ms (drops at +∞)")
        ax.set_ylabel("fraction of offered frames")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
