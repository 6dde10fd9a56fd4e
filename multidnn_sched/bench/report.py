"""Benchmark results: the JSON shape, the printed side-by-side table with ratios, the latency-CDF plot.

JSON::

    {"workload": ..., "backend": ..., "machine": ...,
     "modes": {MODE: {"models": {NAME: {"p50_ms", "p99_ms", "deadline_miss_rate", "frames_done",
                                        "frames_dropped", "frames_skipped", "frames_failed", "frames_offered",
                                        "accuracy", "deadline_ms"}},
                      "deadline_miss_rate": total over models, "decisions": N}},
     "ratios": {...}}

``deadline_miss_rate`` counts every offered frame that did not complete within its deadline — late, dropped
by the queue policy, or failed — so dropping frames is never free. ``frames_skipped`` is the part of
``frames_dropped`` that admission control dropped on arrival (an overloaded device, blocks modes only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from multidnn_sched.bench.static_modes import ModelRun
from multidnn_sched.runtime.executor import percentile

STATIC_MODES: tuple[str, ...] = ("multiprocess", "threads", "sequential")


@dataclass
class ModelSummary:
    p50_ms: float | None
    p99_ms: float | None
    deadline_miss_rate: float
    frames_done: int
    frames_dropped: int
    frames_skipped: int
    frames_failed: int
    frames_offered: int
    accuracy: float | None
    deadline_ms: float

    @staticmethod
    def of(run: ModelRun, offered: int, deadline_ms: float, accuracy: float | None) -> ModelSummary:
        on_time = sum(1 for lat in run.latencies_ms if lat <= deadline_ms)
        return ModelSummary(
            p50_ms=percentile(run.latencies_ms, 50.0),
            p99_ms=percentile(run.latencies_ms, 99.0),
            deadline_miss_rate=(offered - on_time) / offered if offered else 0.0,
            frames_done=len(run.completed),
            frames_dropped=len(run.dropped),
            frames_skipped=len(run.skipped),
            frames_failed=len(run.failed),
            frames_offered=offered,
            accuracy=accuracy,
            deadline_ms=deadline_ms,
        )


def mode_entry(summaries: dict[str, ModelSummary], decisions: int) -> dict[str, Any]:
    offered = sum(s.frames_offered for s in summaries.values())
    missed = sum(s.deadline_miss_rate * s.frames_offered for s in summaries.values())
    return {
        "models": {name: vars(s) for name, s in summaries.items()},
        "deadline_miss_rate": missed / offered if offered else 0.0,
        "decisions": decisions,
    }


def compute_ratios(modes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Acceptance ratios per model (only for modes present in the run).

    * ``blocks_vs_best_static``: p99(blocks) / min(p99(threads), p99(sequential)), and their geometric mean;
    * ``swap_vs_multiprocess``: p99(blocks+swap) / p99(multiprocess);
    * ``swap_vs_best_static``: p99(blocks+swap) / min(p99(threads), p99(sequential));
    * ``swap_accuracy_vs_sequential``: accuracy(blocks+swap) / accuracy(sequential).
    """
    out: dict[str, Any] = {}

    def p99(mode: str, model: str) -> float | None:
        return modes.get(mode, {}).get("models", {}).get(model, {}).get("p99_ms")

    def acc(mode: str, model: str) -> float | None:
        return modes.get(mode, {}).get("models", {}).get(model, {}).get("accuracy")

    names = sorted({m for entry in modes.values() for m in entry["models"]})
    for target, key in (("blocks", "blocks_vs_best_static"), ("blocks+swap", "swap_vs_best_static")):
        if target not in modes:
            continue
        ratios: dict[str, float] = {}
        for name in names:
            base = [v for v in (p99("threads", name), p99("sequential", name)) if v]
            mine = p99(target, name)
            if base and mine:
                ratios[name] = mine / min(base)
        if ratios:
            ratios["geomean"] = math.exp(sum(math.log(r) for r in ratios.values()) / len(ratios))
            out[key] = ratios
    if "blocks+swap" in modes and "multiprocess" in modes:
        out["swap_vs_multiprocess"] = {
            n: p99("blocks+swap", n) / p99("multiprocess", n)
            for n in names if p99("blocks+swap", n) and p99("multiprocess", n)
        }
    if "blocks+swap" in modes and "sequential" in modes:
        out["swap_accuracy_vs_sequential"] = {
            n: acc("blocks+swap", n) / acc("sequential", n)
            for n in names if acc("blocks+swap", n) and acc("sequential", n)
        }
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_table(result: dict[str, Any]) -> str:
    """Markdown table: one row per (mode, model), then the ratio lines."""
    lines = [
        "| mode | model | p50 ms | p99 ms | miss rate | done | dropped (skipped) | failed | accuracy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, entry in result["modes"].items():
        for name, s in entry["models"].items():
            lines.append(
                f"| {mode} | {name} | {_fmt(s['p50_ms'], '.1f')} | {_fmt(s['p99_ms'], '.1f')} | "
                f"{s['deadline_miss_rate']:.3f} | {s['frames_done']} | {s['frames_dropped']}"
                f"{' (' + str(s['frames_skipped']) + ')' if s.get('frames_skipped') else ''} | "
                f"{s['frames_failed']} | {_fmt(s['accuracy'], '.3f')} |"
            )
        lines.append(f"| {mode} | **total** | | | **{entry['deadline_miss_rate']:.3f}** | | | | "
                     f"decisions: {entry['decisions']} |")
    ratio_lines = []
    for key, ratios in result.get("ratios", {}).items():
        parts = ", ".join(f"{n}={v:.2f}" for n, v in ratios.items())
        ratio_lines.append(f"- {key}: {parts}")
    return "\n".join(lines + ([""] + ratio_lines if ratio_lines else []))


def plot_latency_cdfs(runs: dict[str, dict[str, ModelRun]], path: Path, deadlines_ms: dict[str, float]) -> Path:
    """One panel per model, one CDF curve per mode, the deadline as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({n for per_mode in runs.values() for n in per_mode})
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for mode, per_model in runs.items():
            lat = np.sort(np.asarray(per_model[name].latencies_ms)) if name in per_model else np.array([])
            if lat.size:
                ax.plot(lat, np.arange(1, lat.size + 1) / lat.size, label=mode)
        if name in deadlines_ms:
            ax.axvline(deadlines_ms[name], color="k", linestyle="--", linewidth=1, label="deadline")
        ax.set_title(name)
        ax.set_xlabel("latency (arrival → result), ms")
        ax.set_ylabel("fraction of completed frames")
        ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
