"""The replay report's per-stage latency breakdown, image accounting and CPU use (JSON and Markdown).

Per node and frame, on the shared monotonic clock, from the stage's input being available (``t_in``: the image
published by the player for the detector, the detections / tracks received by the recorder for the tracker /
classifier) to the node's output received by the recorder (``t_out``), consecutive intervals:

* ``transport``: ``t_in`` -> the node has everything the frame needs (detector: the container's image
  callback; tracker / classifier: the detections / tracks delivered and paired with the image);
* ``decode``, ``queue``, ``model``, ``postprocess``: the node's own timestamps
  (:mod:`multidnn_sched.ros.timing`);
* ``publish``: outputs built -> received by the recorder (the ``publish()`` call and delivery).

They add up to the stage latency ``t_out - t_in`` frame by frame, by construction (the report checks it:
``max_sum_error_ms``), and their means add up to the mean stage latency. ``overhead`` is the stage latency
minus the runtime's share (``queue + model``): what the ROS layer adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from multidnn_sched.evaluation.replay_records import STAGES, ModeRun
from multidnn_sched.ros.timing import BREAKDOWN_STAGES

BREAKDOWN_COLUMNS: tuple[str, ...] = (*BREAKDOWN_STAGES, "overhead", "stage")


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "mean_ms": None}
    array = np.asarray(values, np.float64)
    return {
        "p50_ms": float(np.percentile(array, 50)),
        "p99_ms": float(np.percentile(array, 99)),
        "mean_ms": float(array.mean()),
    }


def _first_receipts(run: ModeRun, topic: str) -> dict[int, float]:
    firsts: dict[int, float] = {}
    for output in run.outputs.get(topic, []):
        firsts.setdefault(output.stamp_ns, output.receive_sec)
    return firsts


def frame_breakdowns(run: ModeRun) -> dict[str, list[dict[str, float]]]:
    """Per node, per answered frame with a timing record: every :data:`BREAKDOWN_COLUMNS` value (ms)."""
    out: dict[str, list[dict[str, float]]] = {}
    input_times: dict[int, float] = dict(run.published)
    for node, _, topic in STAGES:
        outputs = _first_receipts(run, topic)
        timings = {}
        for timing in run.timings.get(node, []):
            timings.setdefault(timing.stamp_ns, timing)
        rows = []
        for stamp, t_out in outputs.items():
            timing = timings.get(stamp)
            t_in = input_times.get(stamp)
            if timing is None or t_in is None:
                continue
            stages = timing.stages_ms()
            row = {"transport": timing.received_ms - t_in * 1000.0}
            row.update({k: v for k, v in stages.items() if k != "publish"})
            row["publish"] = t_out * 1000.0 - timing.postprocessed_ms
            row["stage"] = (t_out - t_in) * 1000.0
            row["overhead"] = row["stage"] - row["queue"] - row["model"]
            rows.append(row)
        out[node] = rows
        input_times = outputs
    return out


def stage_breakdown(run: ModeRun) -> dict[str, dict[str, Any]]:
    """Per node: p50 / p99 / mean of every column, frames, and how well the stages add up."""
    report: dict[str, dict[str, Any]] = {}
    for node, rows in frame_breakdowns(run).items():
        entry: dict[str, Any] = {col: _stats([r[col] for r in rows]) for col in BREAKDOWN_COLUMNS}
        errors = [abs(sum(r[s] for s in BREAKDOWN_STAGES) - r["stage"]) for r in rows]
        means = [entry[s]["mean_ms"] for s in BREAKDOWN_STAGES]
        entry["frames"] = len(rows)
        entry["max_sum_error_ms"] = max(errors) if errors else None
        entry["sum_of_means_ms"] = float(sum(means)) if rows else None
        stage_mean = entry["stage"]["mean_ms"]
        entry["sum_of_means_vs_stage"] = (
            entry["sum_of_means_ms"] / stage_mean if rows and stage_mean else None
        )
        report[node] = entry
    return report


def image_accounting(run: ModeRun) -> dict[str, Any]:
    """Where every published image went: received by the container, lost in transport, bad, then per node
    processed / dropped by cause / unaccounted (in flight at the end, or a bug)."""
    published = len(run.published)
    received = run.image_input.get("received")
    out: dict[str, Any] = {
        "published": published,
        "received": received,
        "lost_in_transport": None if received is None else published - received,
        "bad": run.image_input.get("bad"),
        "decoded": run.image_input.get("decoded"),
        "nodes": {},
    }
    for node, counters in run.node_counters.items():
        kind = counters.get("input", "images" if node == "detector" else "")
        bad = sum(counters["bad_inputs"].values())
        counted_bad = bad if kind == "images" else 0  # a node whose input is detections / tracks: bad images
        out["nodes"][node] = {  # are counted on it, but are not among its received inputs
            "input": kind,
            "received": counters["received"],
            "processed": counters["processed"],
            "bad": bad,
            "dropped": counters["dropped"],
            "drop_causes": counters["drop_causes"],
            "unaccounted": counters["received"] - counters["processed"] - counters["dropped"] - counted_bad,
        }
    return out


def format_cell(value: Any, digits: int = 1) -> str:
    """A report table cell: ``n/a`` for missing, floats with ``digits`` decimals."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_fmt = format_cell


def breakdown_markdown(report: dict[str, Any]) -> list[str]:
    """Markdown tables: breakdown (p50 / p99 per stage), image accounting, CPU use, per mode."""
    lines = [
        "",
        "Per-stage breakdown, p50 / p99 ms (transport + decode + queue + model + postprocess + publish = stage, "
        "frame by frame; overhead = stage - queue - model):",
        "",
        "| mode | node | " + " | ".join(BREAKDOWN_COLUMNS) + " | frames | max sum error ms |",
        "|---|---|" + "---|" * (len(BREAKDOWN_COLUMNS) + 2),
    ]
    for mode, entry in report["modes"].items():
        for node, b in entry.get("breakdown", {}).items():
            cells = [f"{_fmt(b[c]['p50_ms'])} / {_fmt(b[c]['p99_ms'])}" for c in BREAKDOWN_COLUMNS]
            lines.append(
                f"| {mode} | {node} | " + " | ".join(cells) + f" | {b['frames']} | {_fmt(b['max_sum_error_ms'], 3)} |"
            )
    lines += [
        "",
        "| mode | player | published | received | lost in transport | bad | node | processed | dropped (by cause) "
        "| unaccounted |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, entry in report["modes"].items():
        acc = entry.get("accounting")
        if not acc:
            continue
        for node, n in acc["nodes"].items():
            causes = ", ".join(f"{k} {v}" for k, v in sorted(n["drop_causes"].items())) or "-"
            lines.append(
                f"| {mode} | {entry.get('player', '')} | {acc['published']} | {_fmt(acc['received'])} | "
                f"{_fmt(acc['lost_in_transport'])} | {_fmt(acc['bad'])} | {node} ({n['input']} {n['received']}) | "
                f"{n['processed']} | {n['dropped']} ({causes}) | {n['unaccounted']} |"
            )
    lines += ["", "| mode | container CPU % (of one core) | container CPU s | player CPU s |", "|---|---|---|---|"]
    for mode, entry in report["modes"].items():
        cpu = entry.get("cpu", {})
        lines.append(
            f"| {mode} | {_fmt(cpu.get('cpu_percent'))} | {_fmt(cpu.get('cpu_sec'), 2)} | "
            f"{_fmt(cpu.get('player_cpu_sec'), 2)} |"
        )
    return lines
