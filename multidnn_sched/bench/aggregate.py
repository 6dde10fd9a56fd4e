"""Repeats → medians with min–max, and the ratios between medians (always ratios of on-time rates).

``aggregate`` turns the per-repeat summaries of one mode into ``{"median", "min", "max", "values"}`` for every
number (drop causes included; ``None`` values — an infinite p99, an unscorable accuracy — are left out of the
statistics and counted in ``"n_none"``). ``compute_ratios`` compares modes:

* ``blocks_vs_best_static``: on-time rate of ``blocks`` / the best tuned static fp32 mode (multiprocess, threads,
  sequential), per model, in total and jointly, naming which mode was best;
* ``swap_vs_best_static_variants``: ``blocks+swap`` / the better of ``sequential+variants``,
  ``threads+variants`` (the same variants: scheduling alone);
* ``decomposition``: for each base B in (sequential, threads): blocks+swap / B = compression (B+variants / B)
  × scheduling (blocks+swap / B+variants);
* ``swap_accuracy_vs_fp32``: accuracy on answered frames of ``blocks+swap`` / ``sequential``.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

TUNED_STATIC_FP32: tuple[str, ...] = ("multiprocess", "threads", "sequential")
TUNED_STATIC_VARIANTS: tuple[str, ...] = ("sequential+variants", "threads+variants")


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    present = [float(v) for v in values if v is not None]
    out: dict[str, Any] = {"values": list(values), "n_none": len(values) - len(present)}
    if present:
        out.update(median=statistics.median(present), min=min(present), max=max(present))
    else:
        out.update(median=None, min=None, max=None)
    return out


def _merge(items: Sequence[Any]) -> Any:
    first = items[0]
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(i, dict) and k in i for i in items)]
        return {k: _merge([i[k] for i in items]) for k in keys}
    if isinstance(first, bool) or isinstance(first, str):
        return first
    if first is None or isinstance(first, int | float):
        if all(i is None or (isinstance(i, int | float) and not isinstance(i, bool)) for i in items):
            return _stats(items)
    return first


def aggregate(repeats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-repeat mode summaries (``ModeSummary.as_dict()``) -> the same shape with statistics at the leaves."""
    if not repeats:
        raise ValueError("expected at least one repeat")
    return _merge([dict(r) for r in repeats])


def median(entry: Mapping[str, Any] | None, *path: str) -> float | None:
    """The median at ``path`` of an aggregated mode entry (``None`` if absent)."""
    node: Any = entry
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    if isinstance(node, Mapping):
        return node.get("median")
    return node if isinstance(node, int | float) else None


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``; ``None`` when either is missing or the denominator is 0."""
    if num is None or den is None or den == 0:
        return None
    return num / den


def _figures(entry: Mapping[str, Any]) -> dict[str, float | None]:
    out = {"total": median(entry, "on_time_rate"), "joint": median(entry, "joint_on_time_rate")}
    for model in entry.get("models", {}):
        out[model] = median(entry, "models", model, "on_time_rate")
    return out


def _vs_best(modes: Mapping[str, Any], target: str, candidates: Sequence[str]) -> dict[str, Any] | None:
    if target not in modes:
        return None
    present = [m for m in candidates if m in modes]
    if not present:
        return None
    mine = _figures(modes[target])
    out: dict[str, Any] = {}
    for key, value in mine.items():
        bests = [(median_value, m) for m in present
                 if (median_value := _figures(modes[m]).get(key)) is not None]
        if not bests:
            continue
        best_value, best_mode = max(bests)
        out[key] = {"ratio": ratio(value, best_value), "mine": value, "best": best_value, "best_mode": best_mode}
    return out


def compute_ratios(modes: Mapping[str, Any]) -> dict[str, Any]:
    """Ratios between medians of aggregated mode entries (see the module docstring)."""
    out: dict[str, Any] = {}
    blocks = _vs_best(modes, "blocks", TUNED_STATIC_FP32)
    if blocks:
        out["blocks_vs_best_static"] = blocks
    swap = _vs_best(modes, "blocks+swap", TUNED_STATIC_VARIANTS)
    if swap:
        out["swap_vs_best_static_variants"] = swap
    decomposition: dict[str, Any] = {}
    for base in ("sequential", "threads"):
        with_variants = f"{base}+variants"
        if not all(m in modes for m in (base, with_variants, "blocks+swap")):
            continue
        b, v, s = (_figures(modes[m]) for m in (base, with_variants, "blocks+swap"))
        decomposition[base] = {
            key: {"total": ratio(s.get(key), b.get(key)), "compression": ratio(v.get(key), b.get(key)),
                  "scheduling": ratio(s.get(key), v.get(key))}
            for key in b
        }
    if decomposition:
        out["decomposition"] = decomposition
    if "blocks+swap" in modes and "sequential" in modes:
        acc = {}
        for model in modes["blocks+swap"].get("models", {}):
            acc[model] = ratio(median(modes["blocks+swap"], "models", model, "accuracy_answered"),
                               median(modes["sequential"], "models", model, "accuracy_answered"))
        out["swap_accuracy_vs_fp32"] = acc
    return out
