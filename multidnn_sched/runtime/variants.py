"""Hot-swap: the active implementation of every block, switched by reference at block boundaries.

Variants are registered per block and pre-loaded (their modules live in memory), so a swap is one reference
assignment: the executor reads ``active(key)`` once when a block starts and runs that module for the whole
block, so a frame never runs a torn mix of two versions of one block and a swap never drops a frame.

Output checks: the original block's output signature (structure, shapes, dtypes of the carry) is recorded per
input signature (at profiling, and whenever the original runs). A variant whose output signature differs for
an input signature already seen, or that raises, is disabled (``BlockVariant.usable = False``), the block
falls back to the original, and an error is logged; the executor then re-runs the frame's block on the
original, so no frame is lost. For an input signature never seen with the original, the output cannot be
checked and is accepted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from typing import Any

import torch

from multidnn_sched.exceptions import VariantError
from multidnn_sched.runtime.block import Block, BlockVariant, Carry
from multidnn_sched.runtime.policy import ORIGINAL

BlockKey = tuple[str, str]

_log = logging.getLogger("multidnn_sched.executor")


def carry_signature(carry: Carry) -> Hashable:
    """Structure, shapes and dtypes of a carry, hashable: ``("T", (1, 64, 56, 56), "torch.float32")``..."""
    if isinstance(carry, torch.Tensor):
        return ("T", tuple(carry.shape), str(carry.dtype))
    if isinstance(carry, (tuple, list)):
        return (type(carry).__name__, tuple(carry_signature(c) for c in carry))
    if isinstance(carry, dict):
        return ("dict", tuple((k, carry_signature(v)) for k, v in sorted(carry.items(), key=lambda kv: str(kv[0]))))
    return ("obj", type(carry).__name__)


class VariantRegistry:
    """Per-block active implementation, variant validation and disabling. Thread-safe."""

    def __init__(self) -> None:
        self._blocks: dict[BlockKey, Block] = {}
        self._active: dict[BlockKey, tuple[str, Any]] = {}
        self._expected: dict[BlockKey, dict[Hashable, Hashable]] = {}
        self._lock = threading.Lock()
        self.version = 0
        """Bumped by every change of a block's variants or active implementation (add, register, activate,
        disable): the executor's per-frame work predictions are snapshots that stay valid while it holds."""

    def add_block(self, model: str, block: Block) -> None:
        """Track a block; its original is active."""
        key = (model, block.name)
        with self._lock:
            self._blocks[key] = block
            self._active[key] = (ORIGINAL, block.module)
            self._expected[key] = {}
            self.version += 1
        for variant in block.variants.values():
            self._check_variant(key, variant)

    def _check_variant(self, key: BlockKey, variant: BlockVariant) -> None:
        if variant.name == ORIGINAL:
            raise VariantError(f"block {key[0]}/{key[1]}: variant name {ORIGINAL!r} is reserved for the original")
        if not callable(variant.module):
            raise VariantError(
                f"block {key[0]}/{key[1]}: variant {variant.name!r} module must be callable, "
                f"got {type(variant.module).__name__}"
            )

    def block(self, key: BlockKey) -> Block:
        try:
            return self._blocks[key]
        except KeyError:
            raise VariantError(f"unknown block {key[0]}/{key[1]}; known: {sorted(self._blocks)}") from None

    def register(self, key: BlockKey, variant: BlockVariant) -> None:
        """Add a pre-loaded variant to a block (not activated)."""
        block = self.block(key)
        self._check_variant(key, variant)
        with self._lock:
            block.variants[variant.name] = variant
            self.version += 1

    def active(self, key: BlockKey) -> tuple[str, Any]:
        """``(variant name, module)`` to run now; one atomic read."""
        return self._active[key]

    def activate(self, key: BlockKey, name: str) -> float:
        """Switch the block to ``name`` (``"original"`` or a usable variant); return the switch time in ms."""
        t0 = time.perf_counter()
        block = self.block(key)
        if name == ORIGINAL:
            module = block.module
        else:
            variant = block.variants.get(name)
            if variant is None:
                raise VariantError(
                    f"block {key[0]}/{key[1]} has no variant {name!r}; known: {sorted(block.variants)}"
                )
            if not variant.usable:
                raise VariantError(f"block {key[0]}/{key[1]}: variant {name!r} is disabled (usable=False)")
            module = variant.module
        with self._lock:
            self._active[key] = (name, module)
            self.version += 1
        return (time.perf_counter() - t0) * 1000.0

    def disable(self, key: BlockKey, name: str, reason: str) -> None:
        """Mark a variant unusable, fall back to the original if it was active, and log an error."""
        block = self.block(key)
        variant = block.variants.get(name)
        if variant is None:
            return
        with self._lock:
            variant.usable = False
            if self._active[key][0] == name:
                self._active[key] = (ORIGINAL, block.module)
            self.version += 1
        _log.error("variant %s of block %s/%s disabled, original used: %s", name, key[0], key[1], reason)

    def record_original(self, key: BlockKey, in_signature: Hashable, out_signature: Hashable) -> None:
        """Remember the original block's output signature for an input signature."""
        expected = self._expected[key]
        if in_signature not in expected:
            with self._lock:
                expected[in_signature] = out_signature

    def expected_output(self, key: BlockKey, in_signature: Hashable) -> Hashable | None:
        """The original's output signature for that input, ``None`` if never seen."""
        return self._expected[key].get(in_signature)

    def check_output(self, key: BlockKey, in_signature: Hashable, output: Carry) -> str | None:
        """``None`` when a variant's output matches the original's; else a message saying what differs."""
        expected = self._expected[key].get(in_signature)
        if expected is None:
            return None
        got = carry_signature(output)
        if got == expected:
            return None
        return f"output signature {got!r}, expected the original's {expected!r}"

    def usable_variants(self, key: BlockKey) -> list[BlockVariant]:
        """The block's variants that are still usable."""
        return [v for v in self.block(key).variants.values() if v.usable]
