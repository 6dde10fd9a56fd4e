"""Compression report: one table of every variant (pruned, int8, Tucker, TensorRT...), Markdown + JSON + PNG.

Per block, each variant is compared with the block's ``original`` record: speed-up (original solo latency /
variant solo latency, same device key), size ratio (original fp32 bytes / variant file bytes), accuracy
change (whole model with only this block swapped), and whether it lies on the block's accuracy-vs-latency
Pareto front (no other variant is both faster and at least as accurate).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

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
                     accuracy_delta=delta, pareto=pareto, usable=record.usable)


def _fmt(value: float | int | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def markdown_table(rows: list[ReportRow], metric: str = "accuracy") -> str:
    """Render rows as a Markdown table."""
    header = (f"| model | block | variant | format | params | GMACs | MB | latency ms | speed-up | smaller | "
              f"{metric} | Δ | Pareto | usable |\n|" + "---|" * 14 + "\n")
    lines = []
    for r in rows:
        gmacs = r.macs / 1e9 if r.macs is not None else None
        lines.append(f"| {r.model} | {r.block} | {r.variant} | {r.format} | {_fmt(r.params, ',')} | "
                     f"{_fmt(gmacs, '.3f')} | {r.size_mb:.2f} | {_fmt(r.latency_ms, '.2f')} | "
                     f"{_fmt(r.speedup, '.2f')}× | "
                     f"{_fmt(r.size_ratio, '.2f')}× | {_fmt(r.accuracy, '.2f')} | {_fmt(r.accuracy_delta, '+.2f')} | "
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


def write_report(manifest: Manifest, out_dir: Path, device_key: str = "cpu") -> ReportPaths:
    """Write ``report.md``, ``report.json`` and ``pareto.png`` to ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = report_rows(manifest, device_key)
    metrics = sorted({r.accuracy_metric for r in manifest.variants if r.accuracy_metric})
    metric = "/".join(metrics) or "accuracy"
    paths = ReportPaths(out_dir / "report.md", out_dir / "report.json", out_dir / "pareto.png")
    baselines = "".join(f"- {name}: {b.accuracy_metric} {b.accuracy} on {b.eval_frames} frames\n"
                        for name, b in manifest.models.items() if b.accuracy is not None)
    paths.markdown.write_text(
        f"# Compression report\n\nDevice key: `{device_key}`; latency = solo latency of the block (20th "
        f"percentile of timed runs); "
        f"speed-up and size against the original block (PyTorch fp32 eager); accuracy floor: baseline − "
        f"{manifest.max_accuracy_drop} points.\n\n{baselines}\n{markdown_table(rows, metric)}\n![Pareto]"
        f"({paths.png.name})\n", encoding="utf-8")
    paths.json.write_text(json.dumps({"device_key": device_key, "metric": metric,
                                      "rows": [asdict(r) for r in rows]}, indent=1), encoding="utf-8")
    plot_pareto(rows, paths.png, device_key)
    return paths
