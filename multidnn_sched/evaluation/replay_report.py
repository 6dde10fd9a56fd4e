"""Report of a ``multidnn-replay`` run: latency, accuracy, drops, memory per mode; JSON, Markdown, PNG.

JSON shape (``report.json``)::

    {"bag": ..., "frames": N, "rate_hz": R,
     "modes": {MODE: {"models": {NAME: {"model", "p50_ms", "p99_ms", "e2e_p50_ms", "e2e_p99_ms",
                                        "accuracy_answered", "coverage", "accuracy_held", "late_answers",
                                        "accuracy_metric", "answered", "missing", ...}},
                      "wall_sec", "loops", "published", "rss", "messages", "decisions", "node_counters",
                      "player", "breakdown", "accounting", "cpu"}},  # breakdown etc.: replay_breakdown
     "comparison": {MODE: {NAME: {"p99_ratio", "quality_ratio", "held_ratio", "coverage_ratio"}}},  # vs baseline

Accuracy never mixes quality and coverage: ``accuracy_answered`` scores the frames a node answered,
``coverage`` says how many it answered, ``accuracy_held`` scores every frame with the newest answer available at
its deadline (what a robot acting on its perception sees), ``late_answers`` counts answers after that deadline.
     "plots": [file names]}

``NAME`` is the node (``detector``, ``tracker``, ``classifier``); ``model`` the network it runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from multidnn_sched.evaluation.replay_breakdown import (
    breakdown_markdown,
    image_accounting,
    stage_breakdown,
)
from multidnn_sched.evaluation.replay_breakdown import (
    format_cell as _fmt,
)
from multidnn_sched.evaluation.replay_records import STAGES, BagData, ModeRun, Output, ReplayOptions
from multidnn_sched.runtime.executor import percentile

VISIBLE_IGNORE_BELOW = 0.5
"""GT objects less visible than this are ignored by every metric (the metrics module's convention)."""


def _percentile(values: Sequence[float], q: float) -> float | None:
    return percentile(list(values), q)


def stage_latencies(run: ModeRun) -> dict[str, dict[str, Any]]:
    """Per node: stage and end-to-end latencies (ms) of answered frames, answered / missing counts."""
    out: dict[str, dict[str, Any]] = {}
    input_times: dict[int, float] = dict(run.published)
    for node, model, topic in STAGES:
        outputs = run.outputs.get(topic, [])
        firsts: dict[int, float] = {}
        for o in outputs:
            firsts.setdefault(o.stamp_ns, o.receive_sec)
        stage = [(t - input_times[s]) * 1000.0 for s, t in firsts.items() if s in input_times]
        e2e = [(t - run.published[s]) * 1000.0 for s, t in firsts.items() if s in run.published]
        out[node] = {
            "model": model,
            "p50_ms": _percentile(stage, 50.0),
            "p99_ms": _percentile(stage, 99.0),
            "mean_ms": float(np.mean(stage)) if stage else None,
            "e2e_p50_ms": _percentile(e2e, 50.0),
            "e2e_p99_ms": _percentile(e2e, 99.0),
            "answered": len(firsts),
            "missing": max(len(run.published) - len(firsts), 0),
            "stage_latencies_ms": stage,
        }
        input_times = firsts
    return out


# ------------------------------------------------------------------------------------------------ accuracy


def _by_stamp(outputs: list[Output]) -> dict[int, Output]:
    table: dict[int, Output] = {}
    for o in outputs:
        table.setdefault(o.stamp_ns, o)
    return table


def _labels(names: Sequence[str], vocabulary: Sequence[str]) -> np.ndarray:
    index = {n: i for i, n in enumerate(vocabulary)}
    return np.array([index.get(n, -1) for n in names], np.int64)


def _reference_from_gt(bag: BagData, index: int) -> dict[str, np.ndarray]:
    from multidnn_sched.scenes.generator import ATTRIBUTES

    del ATTRIBUTES
    objects = bag.ground_truth[index] if bag.ground_truth is not None else []
    return {
        "boxes": np.array([o.box_xyxy for o in objects], np.float32).reshape(-1, 4),
        "labels": np.array([o.class_id for o in objects], np.int64),
        "ids": np.array([o.track_id for o in objects], np.int64),
        "attributes": np.array([o.attribute_id for o in objects], np.int64),
        "ignore": np.array([o.visible_fraction < VISIBLE_IGNORE_BELOW for o in objects], bool),
    }


def _reference_from_run(reference: ModeRun, stamp: int) -> dict[str, np.ndarray]:
    from multidnn_sched.scenes.generator import ATTRIBUTES, CLASSES

    det = _by_stamp(reference.outputs.get("detections", [])).get(stamp)
    trk = _by_stamp(reference.outputs.get("tracks", [])).get(stamp)
    cls = _by_stamp(reference.outputs.get("classified", [])).get(stamp)
    empty = np.zeros((0, 4), np.float32)
    return {
        "boxes": det.boxes_xyxy if det is not None else empty,
        "labels": _labels(det.class_ids, CLASSES) if det is not None else np.zeros(0, np.int64),
        "track_boxes": trk.boxes_xyxy if trk is not None else empty,
        "ids": np.array([int(i) for i in trk.ids], np.int64) if trk is not None else np.zeros(0, np.int64),
        "cls_boxes": cls.boxes_xyxy if cls is not None else empty,
        "attributes": _labels(cls.attributes, ATTRIBUTES) if cls is not None else np.zeros(0, np.int64),
    }


def node_deadlines_ms(options: ReplayOptions | None) -> dict[str, float]:
    """Per node: its deadline measured from the image's publication — the sum of the ``deadline_ms`` of its
    model and of every model upstream of it (detector; + embedder for the tracker; + classifier), taken from the
    container's parameters (``config/perception.yaml`` defaults, ``options.container_params`` overrides)."""
    from multidnn_sched.ros.params import CONTAINER_PARAMS, specs_by_name

    specs = specs_by_name(CONTAINER_PARAMS)
    overrides = options.container_params if options is not None else {}
    total, out = 0.0, {}
    for node, model, _topic in STAGES:
        key = f"models.{model}.deadline_ms"
        total += float(overrides.get(key, specs[key].default if key in specs else 0.0))
        out[node] = total
    return out


def _held_picker(run: ModeRun, topic: str, deadline_ms: float) -> dict[int, Output | None]:
    """stamp -> the newest output of ``topic`` received by that image's publication + ``deadline_ms`` (any
    stamp: what a robot acting at that instant would use; a stale answer scores badly)."""
    outputs = sorted(run.outputs.get(topic, []), key=lambda o: o.receive_sec)
    picks: dict[int, Output | None] = {}
    j, latest = 0, None
    for stamp, published in sorted(run.published.items(), key=lambda item: item[1]):
        limit = published + deadline_ms / 1000.0
        while j < len(outputs) and outputs[j].receive_sec <= limit:
            latest = outputs[j]
            j += 1
        picks[stamp] = latest
    return picks


def _score_node(
    node: str,
    frames: Sequence[tuple[int, int]],
    pick: Mapping[int, Output | None],
    reference_for: Any,
) -> dict[str, Any]:
    """The node's task metric over ``frames`` ((frame number, stamp) pairs) with ``pick[stamp]`` as its
    prediction for that frame (``None``: an empty prediction)."""
    from multidnn_sched.evaluation.metrics import (
        ClassifiedFrame,
        FrameGroundTruth,
        FramePredictions,
        TrackingFrame,
        classification_accuracy,
        detection_map,
        tracking_metrics,
    )
    from multidnn_sched.scenes.generator import ATTRIBUTES, CLASSES

    if not frames:
        return {"value": None}
    empty_boxes, empty_ids = np.zeros((0, 4)), np.zeros(0, np.int64)
    if node == "detector":
        preds, gts = [], []
        for frame, stamp in frames:
            ref, d = reference_for(stamp), pick.get(stamp)
            preds.append(FramePredictions(frame, d.boxes_xyxy if d else empty_boxes, d.scores if d else np.zeros(0),
                                          _labels(d.class_ids, CLASSES) if d else empty_ids))
            gts.append(FrameGroundTruth(frame, ref["boxes"], ref["labels"], ref.get("ignore")))
        det_map = detection_map(preds, gts)
        return {"value": float(det_map["map50"]), "map": float(det_map["map"])}
    if node == "tracker":
        tracking = []
        for frame, stamp in frames:
            ref, t = reference_for(stamp), pick.get(stamp)
            tracking.append(TrackingFrame(frame, ref["ids"], ref.get("track_boxes", ref["boxes"]),
                                          np.array([int(i) for i in t.ids], np.int64) if t else empty_ids,
                                          t.boxes_xyxy if t else empty_boxes, ref.get("ignore")))
        mot = tracking_metrics(tracking)
        idf1 = float(mot["idf1"])
        return {"value": None if math.isnan(idf1) else idf1, "mota": _finite(mot["mota"]),
                "id_switches": int(mot["num_switches"])}
    classified = []
    for frame, stamp in frames:
        ref, c = reference_for(stamp), pick.get(stamp)
        classified.append(ClassifiedFrame(frame, c.boxes_xyxy if c else empty_boxes,
                                          _labels(c.attributes, ATTRIBUTES) if c else empty_ids,
                                          ref.get("cls_boxes", ref["boxes"]), ref["attributes"], ref.get("ignore")))
    top1 = classification_accuracy(classified)
    return {"value": float(top1["top1"]), "object_coverage": float(top1["coverage"])}


METRIC_NAMES = {"detector": "mAP@0.5", "tracker": "IDF1", "classifier": "attribute top-1"}


def accuracy(
    run: ModeRun, bag: BagData, reference: ModeRun | None, deadlines_ms: Mapping[str, float] | None = None
) -> dict[str, dict[str, Any]]:
    """Per node, against ground truth (else agreement with ``reference``, the baseline run):

    * ``accuracy_answered`` — the task metric on the frames the node answered (quality; coverage apart);
    * ``coverage`` — answered / published frames;
    * ``accuracy_held`` — every published frame scored against the newest output available at that frame's
      deadline (``deadlines_ms``, from publication; what a robot acting on its perception sees — stale or
      missing answers score badly);
    * ``late_answers`` — answers received after that deadline (counted apart; they still count as answered).

    ``accuracy`` repeats ``accuracy_answered``. Detector: mAP@0.5; tracker: IDF1 (MOTA too); classifier:
    attribute top-1. Computed over the first pass through the bag (a soak's later loops add only latency and
    memory figures).
    """
    use_gt = bag.ground_truth is not None
    if not use_gt and (reference is None or reference is run):
        return {
            node: {"accuracy": None, "accuracy_answered": None, "accuracy_held": None,
                   "accuracy_metric": "none (no ground truth, no baseline)"}
            for node, _, _ in STAGES
        }
    deadlines = dict(deadlines_ms) if deadlines_ms is not None else node_deadlines_ms(None)
    stamps = sorted(run.published)[: len(bag.images)]  # first loop only (soak: cost)
    frames = list(enumerate(stamps))
    cache: dict[int, dict[str, np.ndarray]] = {}

    def reference_for(stamp: int) -> dict[str, np.ndarray]:
        if stamp not in cache:
            cache[stamp] = (_reference_from_gt(bag, run.frame_of_stamp[stamp]) if use_gt
                            else _reference_from_run(reference, stamp))
        return cache[stamp]

    suffix = "" if use_gt else " (agreement with baseline)"
    out: dict[str, dict[str, Any]] = {}
    for node, _model, topic in STAGES:
        answered = _by_stamp(run.outputs.get(topic, []))
        answered_frames = [(f, s) for f, s in frames if s in answered]
        quality = _score_node(node, answered_frames, answered, reference_for)
        held = _score_node(node, frames, _held_picker(run, topic, deadlines[node]), reference_for)
        late = sum(1 for _f, s in answered_frames
                   if (answered[s].receive_sec - run.published[s]) * 1000.0 > deadlines[node])
        entry = {
            "accuracy": quality["value"],
            "accuracy_answered": quality["value"],
            "accuracy_held": held["value"],
            "coverage": len(answered_frames) / len(frames) if frames else 0.0,
            "late_answers": late,
            "deadline_from_publish_ms": deadlines[node],
            "accuracy_metric": METRIC_NAMES[node] + suffix,
        }
        entry.update({k: v for k, v in quality.items() if k != "value"})
        out[node] = entry
    return out


def _finite(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


# ------------------------------------------------------------------------------------------------- memory


def memory_and_messages(run: ModeRun) -> tuple[dict[str, Any], dict[str, Any]]:
    """RSS figures (growth measured from the end of the first loop) and message accounting."""
    rss = [s.rss_mb for s in run.samples]
    loop_sec = run.wall_sec / max(run.loops, 1)
    after_first = [s.rss_mb for s in run.samples if s.time_sec >= loop_sec] or rss
    base = after_first[0] if after_first else None
    final = rss[-1] if rss else None
    growth = (final - base) / base * 100.0 if base and final else None
    step = max(1, len(run.samples) // 200)
    memory = {
        "samples_sec_mb": [(round(x.time_sec, 1), round(x.rss_mb, 1)) for x in run.samples[::step]],
        "start_mb": rss[0] if rss else None,
        "after_first_loop_mb": base,
        "end_mb": final,
        "peak_mb": max(rss) if rss else None,
        "growth_after_first_loop_pct": growth,
    }
    published = len(run.published)
    messages: dict[str, Any] = {"published_images": published}
    for node, counters in run.node_counters.items():
        messages[node] = counters
    det = run.node_counters.get("detector")
    if det is not None:
        accounted = det["processed"] + det["dropped"] + sum(det["bad_inputs"].values())
        messages["detector_lost_in_transport"] = published - det["received"]
        messages["detector_unaccounted"] = det["received"] - accounted
    return memory, messages


# -------------------------------------------------------------------------------------------------- report


def summarize(runs: Sequence[ModeRun], bag: BagData, options: ReplayOptions) -> dict[str, Any]:
    """The report's JSON content (without plots)."""
    reference = next((r for r in runs if r.mode == "baseline"), None)
    rate = options.rate_hz or 1e9 / bag.period_ns
    report: dict[str, Any] = {
        "bag": str(options.bag),
        "frames": len(bag.images),
        "rate_hz": rate,
        "ground_truth": bag.ground_truth is not None,
        "dds_profile": options.dds_transport or "rmw default",
        "modes": {},
        "comparison": {},
    }
    deadlines = node_deadlines_ms(options)
    report["deadlines_from_publish_ms"] = deadlines
    for run in runs:
        latencies = stage_latencies(run)
        scores = accuracy(run, bag, reference, deadlines)
        memory, messages = memory_and_messages(run)
        models = {}
        for node, _, _ in STAGES:
            entry = {k: v for k, v in latencies[node].items() if k != "stage_latencies_ms"}
            entry.update(scores.get(node, {}))
            models[node] = entry
        report["modes"][run.mode] = {
            "models": models,
            "wall_sec": run.wall_sec,
            "loops": run.loops,
            "published": len(run.published),
            "rss": memory,
            "messages": messages,
            "runtime_dropped": run.runtime_dropped,
            "player": run.player,
            "breakdown": stage_breakdown(run),
            "accounting": image_accounting(run),
            "cpu": {k: v for k, v in run.cpu.items() if not k.startswith("_")},
            "decisions": [
                {"time_sec": t, "model": m, "block": b, "action": a, "reason": r}
                for t, m, b, a, r in run.decisions
            ],
        }
    if reference is not None:
        base = report["modes"]["baseline"]["models"]
        for mode, entry in report["modes"].items():
            if mode == "baseline":
                continue
            report["comparison"][mode] = {
                node: {
                    "p99_ratio": _ratio(m["p99_ms"], base[node]["p99_ms"]),
                    "e2e_p99_ratio": _ratio(m["e2e_p99_ms"], base[node]["e2e_p99_ms"]),
                    "quality_ratio": _ratio(m.get("accuracy_answered"), base[node].get("accuracy_answered")),
                    "held_ratio": _ratio(m.get("accuracy_held"), base[node].get("accuracy_held")),
                    "coverage_ratio": _ratio(m.get("coverage"), base[node].get("coverage")),
                }
                for node, m in entry["models"].items()
            }
    return report


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def markdown(report: dict[str, Any]) -> str:
    """The Markdown summary: one table per mode, then the ratios to the baseline."""
    lines = [
        f"# Replay report: {report['bag']}",
        "",
        f"{report['frames']} frames at {report['rate_hz']:.1f} Hz; ground truth: "
        f"{'yes' if report['ground_truth'] else 'no (agreement with baseline)'}",
        "",
    ]
    lines += [
        "| mode | model | p50 ms | p99 ms | e2e p99 ms | answered | missing | late | coverage | "
        "accuracy (answered) | accuracy (held at deadline) | metric |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, entry in report["modes"].items():
        for node, m in entry["models"].items():
            lines.append(
                f"| {mode} | {node} | {_fmt(m['p50_ms'])} | {_fmt(m['p99_ms'])} | "
                f"{_fmt(m['e2e_p99_ms'])} | {m['answered']} | {m['missing']} | {m.get('late_answers', 'n/a')} | "
                f"{_fmt(m.get('coverage'), 3)} | {_fmt(m.get('accuracy_answered'), 3)} | "
                f"{_fmt(m.get('accuracy_held'), 3)} | {m.get('accuracy_metric', '')} |"
            )
    if report["comparison"]:
        lines += [
            "",
            "| mode | model | p99 / baseline | e2e p99 / baseline | quality (answered) / baseline | "
            "held / baseline | coverage / baseline |",
            "|---|---|---|---|---|---|---|",
        ]
        for mode, table in report["comparison"].items():
            for node, r in table.items():
                lines.append(
                    f"| {mode} | {node} | {_fmt(r['p99_ratio'], 2)} | {_fmt(r['e2e_p99_ratio'], 2)} | "
                    f"{_fmt(r['quality_ratio'], 3)} | {_fmt(r['held_ratio'], 3)} | {_fmt(r['coverage_ratio'], 3)} |"
                )
    lines += [
        "",
        "| mode | wall s | loops | RSS end MB | RSS growth after loop 1 % | decisions |",
        "|---|---|---|---|---|---|",
    ]
    for mode, entry in report["modes"].items():
        lines.append(
            f"| {mode} | {_fmt(entry['wall_sec'])} | {entry['loops']} | {_fmt(entry['rss']['end_mb'])} | "
            f"{_fmt(entry['rss']['growth_after_first_loop_pct'], 2)} | {len(entry['decisions'])} |"
        )
    lines += breakdown_markdown(report)
    if report.get("plots"):
        lines += [""] + [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def plot(runs: Sequence[ModeRun], out_dir: Path) -> list[str]:
    """Latency CDF per model and mode, per-block LAG over time, decision timeline; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, axes = plt.subplots(1, len(STAGES), figsize=(5 * len(STAGES), 4), squeeze=False)
    for ax, (node, _, _) in zip(axes[0], STAGES, strict=True):
        for run in runs:
            values = np.sort(np.asarray(stage_latencies(run)[node]["stage_latencies_ms"]))
            if values.size:
                ax.plot(values, np.arange(1, values.size + 1) / values.size, label=run.mode)
        ax.set(title=f"{node}: stage latency CDF", xlabel="latency (ms)", ylabel="fraction of frames")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "latency_cdf.png", dpi=90)
    plt.close(fig)
    files.append("latency_cdf.png")

    shared = [r for r in runs if r.mode != "baseline" and r.samples]
    if shared:
        fig, axes = plt.subplots(len(shared), 1, figsize=(10, 3.5 * len(shared)), squeeze=False)
        for ax, run in zip(axes[:, 0], shared, strict=True):
            keys = sorted({k for s in run.samples for k in s.blocks})
            for key in keys:
                xs = [s.time_sec for s in run.samples if s.blocks.get(key, (None,))[0] is not None]
                ys = [s.blocks[key][0] for s in run.samples if s.blocks.get(key, (None,))[0] is not None]
                if xs:
                    ax.plot(xs, ys, label=key, linewidth=1)
            ax.set(title=f"{run.mode}: predicted LAG per block", xlabel="time (s)", ylabel="LAG EMA (ms)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6, ncol=3)
        fig.tight_layout()
        fig.savefig(out_dir / "lag_over_time.png", dpi=90)
        plt.close(fig)
        files.append("lag_over_time.png")

        fig, ax = plt.subplots(figsize=(10, 4))
        rows: dict[str, int] = {}
        for run in shared:
            for t, model, block, action, _ in run.decisions:
                row = rows.setdefault(f"{run.mode}: {model}/{block}", len(rows))
                colour = (
                    "tab:red" if "sequential" in action else "tab:blue" if "variant" in action else "tab:gray"
                )
                ax.scatter([t], [row], c=colour, s=18)
                ax.annotate(
                    action.split("=")[-1], (t, row), fontsize=6, xytext=(2, 3), textcoords="offset points"
                )
        ax.set_yticks(range(len(rows)), list(rows), fontsize=6)
        ax.set(title="decisions: red = serialize, blue = variant swap, grey = other", xlabel="time (s)")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "decisions_timeline.png", dpi=90)
        plt.close(fig)
        files.append("decisions_timeline.png")
    return files


def accuracy_plot(report: dict[str, Any], out_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(report["modes"])
    nodes = [node for node, _, _ in STAGES]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(modes), 1)
    for i, mode in enumerate(modes):
        values = [report["modes"][mode]["models"][n].get("accuracy_answered") or 0.0 for n in nodes]
        ax.bar(np.arange(len(nodes)) + i * width, values, width, label=mode)
    ax.set_xticks(np.arange(len(nodes)) + width * (len(modes) - 1) / 2, nodes)
    ax.set(title="task accuracy per model and mode", ylabel="metric (see report)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy.png", dpi=90)
    plt.close(fig)
    return "accuracy.png"


def write_report(runs: Sequence[ModeRun], bag: BagData, options: ReplayOptions) -> Path:
    """Write ``report.json``, ``report.md`` and PNG plots into ``options.report_dir``; returns the JSON."""
    out_dir = Path(options.report_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = summarize(runs, bag, options)
    report["plots"] = [*plot(runs, out_dir), accuracy_plot(report, out_dir)]
    path = out_dir / "report.json"
    path.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    (out_dir / "report.md").write_text(markdown(report))
    return path.resolve()


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"report.json: cannot serialize {type(value).__name__}")


def comparison_table(report: dict[str, Any]) -> str:
    """A short plain-text table for the terminal: latency, coverage, accuracy on answered frames and held at the
    deadline, and the ratios to the baseline (quality = answered accuracy, held = system accuracy)."""
    header = (
        f"{'mode':<12} {'model':<11} {'p50 ms':>8} {'p99 ms':>8} {'coverage':>9} {'acc ans':>8} {'acc held':>9} "
        f"{'p99/base':>9} {'qual/base':>10} {'held/base':>10}"
    )
    lines = [header, "-" * len(header)]
    for mode, entry in report["modes"].items():
        ratios = report.get("comparison", {}).get(mode, {})
        for node, m in entry["models"].items():
            r = ratios.get(node, {})
            lines.append(
                f"{mode:<12} {node:<11} {_fmt(m['p50_ms']):>8} {_fmt(m['p99_ms']):>8} "
                f"{_fmt(m.get('coverage'), 3):>9} {_fmt(m.get('accuracy_answered'), 3):>8} "
                f"{_fmt(m.get('accuracy_held'), 3):>9} {_fmt(r.get('p99_ratio'), 2):>9} "
                f"{_fmt(r.get('quality_ratio'), 3):>10} {_fmt(r.get('held_ratio'), 3):>10}"
            )
    return "\n".join(lines)
