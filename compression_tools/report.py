"""Compression report: one table of every variant (pruned, int8, Tucker, TensorRT...), Markdown + JSON + PNG.

Per block, each variant is compared with the block's ``original`` record: speed-up (original solo latency /
variant solo latency, same device key), size ratio (original fp32 bytes / variant file bytes), accuracy
change (whole model with only this block swapped, on the held-out frames, with their count), and whether it
lies on the block's accuracy-vs-latency Pareto front (no other variant is both faster and at least as accurate).

A second table applies the runtime policy's accuracy floor (:func:`floor_verdicts`): for each variant, the
relative accuracy the policy computes from the manifest (:func:`~multidnn_sched.runtime.policy.relative_accuracy`)
and whether a swap to it from the original model passes the floor
(:func:`~multidnn_sched.runtime.policy.within_accuracy_floor`), the same functions the executor and the policy use.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from multidnn_sched.runtime.policy import PolicyConfig, relative_accuracy, within_accuracy_floor

from .manifest import Manifest, VariantRecord


@dataclass
class ReportRow:
    """One table row.

    Attributes:
        model: model name.
        block: block name.
        variant: variant name.
        kind: variant kind.
        format: file format.
        params: parameter count (``None``: unknown).
        macs: MACs (``None``: not countable, e.g. ONNX).
        size_mb: file size (original: fp32 payload) in MB.
        latency_ms: solo latency on the report's device key (``None``: not measured there).
        speedup: original latency / latency.
        size_ratio: original bytes / bytes.
        accuracy: model metric with only this block swapped.
        accuracy_delta: accuracy minus the original's.
        metric: what ``accuracy`` measures.
        eval_frames: held-out frames it was measured on (0: unknown).
        pareto: on the block's accuracy-vs-latency Pareto front.
        usable: manifest's usable flag.
    """

    model: str
    block: str
    variant: str
    kind: str
    format: str
    params: int | None
    macs: int | None
    size_mb: float
    latency_ms: float | None
    speedup: float | None
    size_ratio: float | None
    accuracy: float | None
    accuracy_delta: float | None
    pareto: bool
    usable: bool
    metric: str = ""
    eval_frames: int = 0


@dataclass
class ReportPaths:
    """Files written by :func:`write_report`."""

    markdown: Path
    json: Path
    png: Path


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of ``(latency, accuracy)`` points no other point beats (faster-or-equal and more-or-equally
    accurate, strictly better in one)."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for j, (l2, a2) in enumerate(points)
                        if j != i)
        if not dominated:
            front.append(i)
    return front


def report_rows(manifest: Manifest, device_key: str = "cpu") -> list[ReportRow]:
    """Build the table rows, grouped by model and block, original first."""
    rows: list[ReportRow] = []
    keys = list(dict.fromkeys((r.model, r.block) for r in manifest.variants))
    for model, block in keys:
        records = manifest.for_block(model, block)
        base = manifest.original(model, block)
        points = {i: (r.solo_latency_ms[device_key], r.accuracy) for i, r in enumerate(records)
                  if device_key in r.solo_latency_ms and r.accuracy is not None}
        front = {list(points)[k] for k in pareto_front(list(points.values()))}
        for i, record in enumerate(records):
            rows.append(_row(record, base, device_key, i in front))
    return rows


def _row(record: VariantRecord, base: VariantRecord | None, device_key: str, pareto: bool) -> ReportRow:
    latency = record.solo_latency_ms.get(device_key)
    base_latency = base.solo_latency_ms.get(device_key) if base else None
    speedup = base_latency / latency if latency and base_latency else None
    size_ratio = base.bytes / record.bytes if base and base.bytes and record.bytes else None
    delta = (record.accuracy - base.accuracy if base and base.accuracy is not None and record.accuracy is not None
             else None)
    return ReportRow(model=record.model, block=record.block, variant=record.name, kind=record.kind,
                     format=record.format, params=record.params, macs=record.macs, size_mb=record.bytes / 1e6,
                     latency_ms=latency, speedup=speedup, size_ratio=size_ratio, accuracy=record.accuracy,
                     accuracy_delta=delta, pareto=pareto, usable=record.usable, metric=record.accuracy_metric,
                     eval_frames=record.eval_frames)


def _fmt(value: float | int | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def markdown_table(rows: list[ReportRow], metric: str = "accuracy") -> str:
    """Render rows as a Markdown table."""
    header = (f"| model | block | variant | format | params | GMACs | MB | latency ms | speed-up | smaller | "
              f"metric | {metric} | Δ | n frames | Pareto | usable |\n|" + "---|" * 16 + "\n")
    lines = []
    for r in rows:
        gmacs = r.macs / 1e9 if r.macs is not None else None
        lines.append(f"| {r.model} | {r.block} | {r.variant} | {r.format} | {_fmt(r.params, ',')} | "
                     f"{_fmt(gmacs, '.3f')} | {r.size_mb:.2f} | {_fmt(r.latency_ms, '.2f')} | "
                     f"{_fmt(r.speedup, '.2f')}× | "
                     f"{_fmt(r.size_ratio, '.2f')}× | {r.metric or '–'} | {_fmt(r.accuracy, '.2f')} | "
                     f"{_fmt(r.accuracy_delta, '+.2f')} | {r.eval_frames or '–'} | "
                     f"{'★' if r.pareto else ''} | {'yes' if r.usable else 'no'} |")
    return header + "\n".join(lines) + "\n"


def plot_pareto(rows: list[ReportRow], path: Path, device_key: str = "cpu") -> Path:
    """Accuracy vs latency per block (one panel each), Pareto front drawn as a step line; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = list(dict.fromkeys((r.model, r.block) for r in rows))
    cols = min(3, max(1, len(blocks)))
    nrows = math.ceil(len(blocks) / cols) if blocks else 1
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 4 * nrows), squeeze=False)
    for ax, (model, block) in zip(axes.flat, blocks, strict=False):
        items = [r for r in rows if (r.model, r.block) == (model, block) and r.latency_ms is not None
                 and r.accuracy is not None]
        for r in items:
            marker = "s" if r.kind == "original" else ("o" if r.usable else "x")
            ax.scatter(r.latency_ms, r.accuracy, marker=marker, s=40)
            ax.annotate(r.variant, (r.latency_ms, r.accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = sorted((r.latency_ms, r.accuracy) for r in items if r.pareto)
        if front:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:red", lw=1,
                    label="Pareto front")
            ax.legend(fontsize=7)
        ax.set_title(f"{model} / {block}", fontsize=9)
        ax.set_xlabel(f"solo latency ms ({device_key})")
        ax.set_ylabel("model metric, only this block swapped")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(blocks):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


ACCEPTED = "accepted"
REFUSED_FLOOR = "refused: below floor"
NOT_LOADED = "not loaded"
UNKNOWN = "unknown accuracy"


def default_accuracy_floor() -> float:
    """The accuracy floor of the default workload: ``PolicyConfig.accuracy_floor``'s default, which
    ``multidnn-bench`` (``config/workloads/default.yaml`` sets no other) and ``config/perception.yaml`` use."""
    return PolicyConfig().accuracy_floor


@dataclass
class FloorVerdict:
    """What the policy's accuracy floor makes of one variant, swapped in alone (every other block original).

    Attributes:
        model: model name.
        block: block name.
        variant: variant name.
        metric: the held-out metric.
        eval_frames: held-out frames behind the figures.
        original: the original model's metric (manifest baseline, what the runtime divides by).
        accuracy: the model's metric with only this block swapped.
        drop: ``original - accuracy`` in metric points.
        relative: ``accuracy / original`` (policy's relative accuracy; ``None``: unknown).
        gain_ms: original solo latency minus the variant's (``None``: not measured on the device key).
        verdict: :data:`ACCEPTED`, :data:`REFUSED_FLOOR`, :data:`NOT_LOADED` (manifest marks it unusable; the
            runtime never loads it) or :data:`UNKNOWN`.
        reason: the figures behind the verdict.
    """

    model: str
    block: str
    variant: str
    metric: str
    eval_frames: int
    original: float | None
    accuracy: float | None
    drop: float | None
    relative: float | None
    gain_ms: float | None
    verdict: str
    reason: str


def floor_verdicts(manifest: Manifest, accuracy_floor: float, device_key: str = "cpu") -> list[FloorVerdict]:
    """Judge every non-original variant against ``accuracy_floor`` as the policy would for a first swap.

    The estimate of a model with one swapped block is that variant's relative accuracy (the policy's
    multiplicative model with every other block original), computed from the manifest's held-out figures.
    """
    verdicts: list[FloorVerdict] = []
    for record in manifest.variants:
        if record.kind == "original":
            continue
        baseline = manifest.models.get(record.model)
        original = baseline.accuracy if baseline is not None else None
        rel = relative_accuracy(record.accuracy, original)
        base = manifest.original(record.model, record.block)
        base_ms = base.solo_latency_ms.get(device_key) if base is not None else None
        ms = record.solo_latency_ms.get(device_key)
        gain = base_ms - ms if base_ms is not None and ms is not None else None
        drop = original - record.accuracy if original is not None and record.accuracy is not None else None
        if not record.usable:
            verdict, reason = NOT_LOADED, record.reason or "marked unusable in the manifest"
        elif rel is None:
            verdict, reason = UNKNOWN, "no held-out accuracy: the policy never chooses it"
        elif within_accuracy_floor(rel, accuracy_floor):
            verdict, reason = ACCEPTED, f"estimate {rel:.4f} >= floor {accuracy_floor:.3f}"
        else:
            verdict, reason = REFUSED_FLOOR, f"estimate {rel:.4f} < floor {accuracy_floor:.3f}"
        verdicts.append(FloorVerdict(record.model, record.block, record.name, record.accuracy_metric,
                                     record.eval_frames, original, record.accuracy, drop, rel, gain, verdict, reason))
    return verdicts


def stacked_estimates(verdicts: list[FloorVerdict]) -> dict[str, float]:
    """Per model: the policy's estimate with every block on its fastest accepted variant at once (the product
    of their relative accuracies) — whether the floor also binds for combinations of accepted variants."""
    best: dict[tuple[str, str], FloorVerdict] = {}
    for v in verdicts:
        if v.verdict != ACCEPTED or v.relative is None or v.gain_ms is None or v.gain_ms <= 0:
            continue
        key = (v.model, v.block)
        if key not in best or v.gain_ms > best[key].gain_ms:  # type: ignore[operator]
            best[key] = v
    out: dict[str, float] = {}
    for (model, _), v in best.items():
        out[model] = out.get(model, 1.0) * float(v.relative)  # type: ignore[arg-type]
    return out


def floor_table(verdicts: list[FloorVerdict]) -> str:
    """Render floor verdicts as a Markdown table."""
    header = ("| model | block | variant | metric | n frames | original | variant | drop (points) | relative | "
              "gain ms | policy |\n|" + "---|" * 11 + "\n")
    lines = [f"| {v.model} | {v.block} | {v.variant} | {v.metric or '–'} | {v.eval_frames or '–'} | "
             f"{_fmt(v.original, '.2f')} | {_fmt(v.accuracy, '.2f')} | {_fmt(v.drop, '.2f')} | "
             f"{_fmt(v.relative, '.4f')} | {_fmt(v.gain_ms, '.2f')} | {v.verdict} |" for v in verdicts]
    return header + "\n".join(lines) + "\n"


def _baseline_lines(manifest: Manifest) -> str:
    lines = []
    for name, b in manifest.models.items():
        if b.accuracy is None:
            continue
        seeds = ""
        if b.heldout_seeds:
            training = f"{min(b.training_seeds)}-{max(b.training_seeds)}" if b.training_seeds else "unknown"
            seeds = (f"; held-out seeds {b.heldout_seeds} ({b.scene_profile or '?'} profile), disjoint from "
                     f"calibration seeds {b.calibration_seeds}, fine-tune seeds {b.finetune_seeds} and training "
                     f"seeds {training}")
        samples = f" ({b.eval_samples} scored)" if b.eval_samples else ""
        lines.append(f"- {name}: {b.accuracy_metric} {b.accuracy:.2f} on {b.eval_frames} frames{samples}{seeds}\n")
    return "".join(lines)


def write_report(manifest: Manifest, out_dir: Path, device_key: str = "cpu",
                 accuracy_floor: float | None = None) -> ReportPaths:
    """Write ``report.md``, ``report.json`` and ``pareto.png`` to ``out_dir``; returns their paths.

    Args:
        manifest: the variant manifest.
        out_dir: output directory.
        device_key: which solo latency to report.
        accuracy_floor: policy floor of the verdict table (default: :func:`default_accuracy_floor`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    floor = default_accuracy_floor() if accuracy_floor is None else accuracy_floor
    rows = report_rows(manifest, device_key)
    verdicts = floor_verdicts(manifest, floor, device_key)
    stacked = stacked_estimates(verdicts)
    metrics = sorted({r.accuracy_metric for r in manifest.variants if r.accuracy_metric})
    metric = "/".join(metrics) or "accuracy"
    paths = ReportPaths(out_dir / "report.md", out_dir / "report.json", out_dir / "pareto.png")
    counts = {k: sum(v.verdict == k for v in verdicts) for k in (ACCEPTED, REFUSED_FLOOR, NOT_LOADED, UNKNOWN)}
    stack_lines = "".join(f"- {m}: every block on its fastest accepted variant at once: estimate {e:.4f} "
                          f"({'passes' if within_accuracy_floor(e, floor) else 'below'} the floor)\n"
                          for m, e in stacked.items())
    paths.markdown.write_text(
        f"# Compression report\n\nDevice key: `{device_key}`; latency = solo latency of the block (20th "
        f"percentile of timed runs); "
        f"speed-up and size against the original block (PyTorch fp32 eager); accuracy = the model's metric with "
        f"only this block swapped, on held-out frames (n frames); manifest gate: variants more than "
        f"{manifest.max_accuracy_drop} points below the original are marked unusable and never loaded.\n\n"
        f"{_baseline_lines(manifest)}\n{markdown_table(rows, metric)}\n"
        f"## Policy accuracy floor\n\nFloor {floor:.3f} (relative to the original model; the default "
        f"workload's `PolicyConfig.accuracy_floor`). The policy estimates a model's accuracy as the product of "
        f"its active variants' relative accuracies (held-out metric with only that block swapped / original); "
        f"each variant below is judged as a first swap (every other block original): "
        f"{counts[ACCEPTED]} accepted, {counts[REFUSED_FLOOR]} refused by the floor, {counts[NOT_LOADED]} not "
        f"loaded (manifest gate), {counts[UNKNOWN]} without accuracy.\n\n{floor_table(verdicts)}\n"
        f"{stack_lines}\n![Pareto]({paths.png.name})\n", encoding="utf-8")
    paths.json.write_text(json.dumps({"device_key": device_key, "metric": metric,
                                      "rows": [asdict(r) for r in rows],
                                      "models": {name: asdict(b) for name, b in manifest.models.items()},
                                      "accuracy_floor": floor,
                                      "floor_verdicts": [asdict(v) for v in verdicts],
                                      "stacked_estimates": stacked}, indent=1), encoding="utf-8")
    plot_pareto(rows, paths.png, device_key)
    return paths
