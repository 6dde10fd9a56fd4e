"""The container's parameter values -> runtime settings (policy, LAG EMA, per-model deadlines / priorities)."""

from __future__ import annotations

from collections.abc import Mapping

from multidnn_sched.ros.params import MODEL_NAMES, ParamValue
from multidnn_sched.ros.runtime import RuntimeSettings
from multidnn_sched.runtime.policy import PolicyConfig


def settings_from_values(values: Mapping[str, ParamValue]) -> RuntimeSettings:
    """The container's parameter values -> :class:`RuntimeSettings`."""
    policy = PolicyConfig(
        lag_serialize_ms=float(values["policy.lag_serialize_ms"]),
        lag_serialize_ratio=float(values["policy.lag_serialize_ratio"]),
        hysteresis=float(values["policy.hysteresis"]),
        min_dwell_sec=float(values["policy.min_dwell_sec"]),
        settle_sec=float(values["policy.settle_sec"]),
        accuracy_floor=float(values["policy.accuracy_floor"]),
        swap_enabled=bool(values["policy.swap_enabled"]),
        serialize_enabled=bool(values["policy.serialize_enabled"]),
        swap_utilization=float(values["policy.swap_utilization"]),
        admission_enabled=bool(values["policy.admission_enabled"]),
        admission_utilization=float(values["policy.admission_utilization"]),
    )
    return RuntimeSettings(
        policy=policy,
        ema_alpha=float(values["lag.ema_alpha"]),
        deadlines_ms={m: float(values[f"models.{m}.deadline_ms"]) for m in MODEL_NAMES},
        priorities={m: int(values[f"models.{m}.priority"]) for m in MODEL_NAMES},
    )
