"""Build ``diagnostic_msgs/DiagnosticArray`` from node snapshots and the runtime status, and read it back.

Status names (``DiagnosticStatus.name``):

* ``multidnn_sched/node/<node>``: ``model``, ``rate_hz``, ``latency_p50_ms``, ``latency_p99_ms``,
  ``received``, ``processed``, ``dropped``, ``dropped.<cause>``, ``bad_inputs``, ``bad_inputs.<cause>``;
  ``stage.<stage>.p50_ms`` / ``.p99_ms`` / ``.mean_ms`` for ``transport``, ``decode``, ``queue``, ``model``,
  ``postprocess``, ``publish`` and ``latency`` (the breakdown, :mod:`multidnn_sched.ros.timing`: the node
  stages' means add up to the latency's mean);
  level WARN when p99 exceeds the model's deadline or inputs were malformed / dropped.
* ``multidnn_sched/process``: ``cpu_percent`` (the container process, all threads, percent of one core,
  since the previous message), ``images_received``, ``images_decoded``, ``images_bad`` (the shared input).
* ``multidnn_sched/model/<model>``: per block ``<block>.lag_ms``, ``<block>.mode``, ``<block>.variant`` and
  ``runtime_dropped``.
* ``multidnn_sched/decisions``: the last decisions, ``key`` = ``"<time_sec> <model>/<block>"``,
  ``value`` = ``"<action>: <reason>"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from multidnn_sched.ros.runtime import RuntimeStatus
from multidnn_sched.ros.stats import NodeSnapshot

PREFIX = "multidnn_sched"
DECISIONS_SHOWN = 10
"""Decisions listed per /diagnostics message."""


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.3f}"


def node_status(snapshot: NodeSnapshot, deadline_ms: float | None, hardware_id: str) -> DiagnosticStatus:
    """One node's status: rate, latency percentiles, counters, drop and bad-input causes."""
    values = [
        KeyValue(key="model", value=snapshot.model),
        KeyValue(key="rate_hz", value=_fmt(snapshot.rate_hz)),
        KeyValue(key="latency_p50_ms", value=_fmt(snapshot.latency_p50_ms)),
        KeyValue(key="latency_p99_ms", value=_fmt(snapshot.latency_p99_ms)),
        KeyValue(key="received", value=str(snapshot.received)),
        KeyValue(key="processed", value=str(snapshot.processed)),
        KeyValue(key="dropped", value=str(snapshot.dropped)),
        KeyValue(key="bad_inputs", value=str(snapshot.bad_input_total)),
    ]
    values += [
        KeyValue(key=f"dropped.{cause}", value=str(n)) for cause, n in sorted(snapshot.drop_causes.items())
    ]
    values += [
        KeyValue(key=f"bad_inputs.{cause}", value=str(n)) for cause, n in sorted(snapshot.bad_inputs.items())
    ]
    for stage, summary in snapshot.breakdown.items():
        values += [
            KeyValue(key=f"stage.{stage}.p50_ms", value=_fmt(summary.p50_ms)),
            KeyValue(key=f"stage.{stage}.p99_ms", value=_fmt(summary.p99_ms)),
            KeyValue(key=f"stage.{stage}.mean_ms", value=_fmt(summary.mean_ms)),
        ]
    problems = []
    if (
        deadline_ms is not None
        and snapshot.latency_p99_ms is not None
        and snapshot.latency_p99_ms > deadline_ms
    ):
        problems.append(f"p99 {snapshot.latency_p99_ms:.1f} ms > deadline {deadline_ms:.1f} ms")
    if snapshot.bad_input_total:
        problems.append(f"{snapshot.bad_input_total} malformed inputs dropped")
    level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
    return DiagnosticStatus(
        level=level,
        name=f"{PREFIX}/node/{snapshot.node}",
        hardware_id=hardware_id,
        message="; ".join(problems) or "ok",
        values=values,
    )


def model_statuses(status: RuntimeStatus, hardware_id: str) -> list[DiagnosticStatus]:
    """One status per model: per-block LAG (EMA), mode, active variant."""
    by_model: dict[str, list[KeyValue]] = {}
    for block in status.blocks:
        values = by_model.setdefault(block.model, [])
        values += [
            KeyValue(key=f"{block.block}.lag_ms", value=_fmt(block.lag_ms)),
            KeyValue(key=f"{block.block}.mode", value=block.mode),
            KeyValue(key=f"{block.block}.variant", value=block.variant),
        ]
    out = []
    for model, values in by_model.items():
        values.append(KeyValue(key="runtime_dropped", value=str(status.dropped.get(model, 0))))
        swapped = [
            v.key.rsplit(".", 1)[0] for v in values if v.key.endswith(".variant") and v.value != "original"
        ]
        message = f"swapped: {', '.join(swapped)}" if swapped else "ok"
        out.append(
            DiagnosticStatus(
                level=DiagnosticStatus.OK,
                name=f"{PREFIX}/model/{model}",
                hardware_id=hardware_id,
                message=message,
                values=values,
            )
        )
    return out


def decisions_status(status: RuntimeStatus, hardware_id: str) -> DiagnosticStatus:
    """The last :data:`DECISIONS_SHOWN` decisions with their reasons."""
    recent = status.decisions[-DECISIONS_SHOWN:]
    values = [
        KeyValue(key=f"{d.time_sec:.3f} {d.model}/{d.block}", value=f"{d.action}: {d.reason}") for d in recent
    ]
    return DiagnosticStatus(
        level=DiagnosticStatus.OK,
        name=f"{PREFIX}/decisions",
        hardware_id=hardware_id,
        message=f"{len(status.decisions)} recent decisions",
        values=values,
    )


def build_diagnostic_array(
    snapshots: Sequence[NodeSnapshot],
    runtime_status: RuntimeStatus,
    stamp: Time,
    deadlines_ms: Mapping[str, float] | None = None,
    hardware_id: str = "perception_container",
    process: Mapping[str, float] | None = None,
) -> DiagnosticArray:
    """Everything the container reports once a period, in one ``DiagnosticArray``. ``process``: the
    container process's figures (``cpu_percent``, image input counts), one ``multidnn_sched/process`` status."""
    deadlines_ms = deadlines_ms or {}
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [node_status(s, deadlines_ms.get(s.model), hardware_id) for s in snapshots]
    array.status += model_statuses(runtime_status, hardware_id)
    array.status.append(decisions_status(runtime_status, hardware_id))
    if process is not None:
        process = {**process, "runtime_workers": runtime_status.workers,
                   "runtime_worker_threads": runtime_status.worker_threads,
                   "runtime_frames_in_flight": runtime_status.frames_in_flight,
                   "runtime_sequential_threads": runtime_status.sequential_threads}
        array.status.append(
            DiagnosticStatus(
                level=DiagnosticStatus.OK,
                name=f"{PREFIX}/process",
                hardware_id=hardware_id,
                message="ok",
                values=[
                    KeyValue(key=k, value=_fmt(v) if isinstance(v, float) else str(v)) for k, v in process.items()
                ],
            )
        )
    return array


def diagnostics_to_dict(array: DiagnosticArray) -> dict[str, dict[str, str]]:
    """``{status name: {key: value}}`` plus ``"_message"`` and ``"_level"`` (tests, replay tool)."""
    out: dict[str, dict[str, str]] = {}
    for status in array.status:
        entry = {kv.key: kv.value for kv in status.values}
        entry["_message"] = status.message
        entry["_level"] = str(
            int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level)
        )
        out[status.name] = entry
    return out
