"""Blocks: the unit the executor schedules.

A model is cut into an ordered list of functional blocks (stem, stages, neck, head...). Each block is an
``nn.Module`` that maps one *carry* value to the next: the first block takes the model input, the last
returns the model output. A carry is a ``Tensor`` or a tuple / dict of tensors, which is how blocks pass
skip tensors across boundaries (e.g. feature maps a detection neck needs from earlier stages).

Running the blocks in order, ``x = block(x)`` for every block, equals running the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

Carry = Any
"""A ``Tensor``, or a tuple / dict of tensors, passed from one block to the next."""


@dataclass
class BlockVariant:
    """A lighter, pre-loaded replacement for one block (pruned, int8, Tucker, TensorRT...).

    Attributes:
        name: variant identifier unique within its block, e.g. ``"prune50+int8"``.
        module: callable with the same carry-in / carry-out contract as the original block.
        kind: ``"original"``, ``"prune"``, ``"int8"``, ``"tucker"``, ``"trt_fp16"``, combinations joined by ``+``.
        solo_latency_ms: profiled latency of the variant alone on the target device (``None``: unknown yet).
        accuracy: task metric of the whole model with only this block swapped (``None``: unknown).
        macs: multiply-accumulates per inference of this block.
        params: parameter count.
        usable: ``False`` once disabled (raised, wrong shape, or accuracy below the floor).
    """

    name: str
    module: Any
    kind: str = "original"
    solo_latency_ms: float | None = None
    accuracy: float | None = None
    macs: int | None = None
    params: int | None = None
    usable: bool = True


@dataclass
class Block:
    """One functional block of a model.

    Attributes:
        name: block name, unique within the model, e.g. ``"layer3"`` or ``"head"``.
        module: the original (uncompressed) block, ``carry -> carry``.
        variants: lighter replacements keyed by variant name (the original is not in here).
    """

    name: str
    module: nn.Module
    variants: dict[str, BlockVariant] = field(default_factory=dict)

    def __call__(self, carry: Carry) -> Carry:
        return self.module(carry)


@dataclass
class PartitionedModel:
    """A model as an ordered list of blocks.

    Attributes:
        name: model name, e.g. ``"detector"`` or ``"resnet50"``.
        blocks: blocks in execution order.
        family: the architecture family the partitioner recognised (``"resnet"``, ``"fx"``...).
    """

    name: str
    blocks: list[Block]
    family: str = "unknown"

    def __call__(self, carry: Carry) -> Carry:
        for block in self.blocks:
            carry = block(carry)
        return carry

    def block(self, name: str) -> Block:
        """Return the block called ``name``; raises ``KeyError`` naming the known blocks."""
        for block in self.blocks:
            if block.name == name:
                return block
        raise KeyError(f"model {self.name!r} has no block {name!r}; blocks: {[b.name for b in self.blocks]}")

    @property
    def block_names(self) -> list[str]:
        return [b.name for b in self.blocks]
