"""Carry <-> flat list of tensors, for backends that take a fixed list of inputs (ONNX Runtime, TensorRT).

The carry structure (Tensor / tuple / list / dict, nested) becomes inputs ``in_0..`` and outputs ``out_0..``;
its layout is stored with the file (ONNX ``metadata_props`` key :data:`CARRY_METADATA_KEY`, or a TensorRT
engine's JSON sidecar) so the file alone is enough to rebuild the carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from multidnn_sched.exceptions import VariantError
from multidnn_sched.runtime.block import Carry

CARRY_METADATA_KEY = "multidnn_sched.carry"


def carry_layout(carry: Carry) -> Any:
    """Return a JSON-able layout of ``carry``: ``"T"`` for a tensor, ``{"tuple": [...]}``, ``{"list": [...]}``,
    ``{"dict": [[key, layout], ...]}``.

    Raises:
        VariantError: a carry element that is not a tensor / tuple / list / dict.
    """
    if isinstance(carry, torch.Tensor):
        return "T"
    if isinstance(carry, tuple):
        return {"tuple": [carry_layout(item) for item in carry]}
    if isinstance(carry, list):
        return {"list": [carry_layout(item) for item in carry]}
    if isinstance(carry, dict):
        return {"dict": [[str(key), carry_layout(value)] for key, value in carry.items()]}
    raise VariantError(f"expected a carry of tensors (Tensor, tuple, list or dict), got {type(carry).__name__}")


def flatten_carry(carry: Carry) -> list[torch.Tensor]:
    """Return the tensors of ``carry`` in layout order."""
    if isinstance(carry, torch.Tensor):
        return [carry]
    if isinstance(carry, dict):
        return [t for value in carry.values() for t in flatten_carry(value)]
    return [t for item in carry for t in flatten_carry(item)]


def unflatten_carry(layout: Any, tensors: Sequence[torch.Tensor]) -> Carry:
    """Inverse of :func:`flatten_carry` given a :func:`carry_layout`."""
    iterator = iter(tensors)

    def build(node: Any) -> Carry:
        if node == "T":
            return next(iterator)
        if "tuple" in node:
            return tuple(build(item) for item in node["tuple"])
        if "list" in node:
            return [build(item) for item in node["list"]]
        return {key: build(value) for key, value in node["dict"]}

    return build(layout)
