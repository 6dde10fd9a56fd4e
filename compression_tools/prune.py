"""Pruning of one block: structured (channels removed, physically smaller) and unstructured (zeros only).

Structured pruning uses Torch-Pruning's dependency graph, so coupled layers (residual adds, concatenations,
depthwise convolutions, batch norms) lose the same channels. A pruned block must stay a drop-in replacement
between its neighbours, so its input and output channel counts never change: every layer whose output
channels reach the block's outputs (through batch norms, activations, adds, concatenations...) is ignored,
which leaves the whole coupled group untouched; the input tensor is never pruned by Torch-Pruning. The result
is checked: every output tensor keeps its shape, or :class:`VariantError` is raised.

Unstructured magnitude pruning only zeroes weights. Dense kernels run a zeroed weight as fast as any other,
so it saves no time and no bytes (until a sparse format / kernel is used); it is here to report that honestly.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from multidnn_sched.exceptions import ConfigError, VariantError
from multidnn_sched.runtime.block import Carry

LOGGER = logging.getLogger(__name__)

IMPORTANCES: tuple[str, ...] = ("l1", "l2", "taylor")
"""Channel importance criteria: group L1 / L2 weight magnitude, or first-order Taylor (weight x gradient)."""

@dataclass
class PruneStats:
    """What a pruning step did to a block.

    Attributes:
        params_before: parameter count of the original block.
        params_after: parameter count after pruning (structured) or non-zero parameters (unstructured).
        ignored_layers: qualified names of layers that were left unpruned (block outputs, unsupported).
        skipped_unsupported: qualified names of layers skipped because no pruner supports their type.
    """

    params_before: int
    params_after: int
    ignored_layers: list[str]
    skipped_unsupported: list[str]

def count_params(module: nn.Module) -> int:
    """Return the number of parameter elements of ``module``."""
    return sum(p.numel() for p in module.parameters())

def count_nonzero_params(module: nn.Module) -> int:
    """Return the number of non-zero parameter elements of ``module``."""
    return int(sum(int(torch.count_nonzero(p.detach())) for p in module.parameters()))

def carry_tensors(carry: Carry) -> list[torch.Tensor]:
    """Flatten a carry (Tensor, or nested tuple / list / dict of tensors) into its tensors, in order."""
    if isinstance(carry, torch.Tensor):
        return [carry]
    if isinstance(carry, dict):
        return [t for key in carry for t in carry_tensors(carry[key])]
    if isinstance(carry, (tuple, list)):
        return [t for item in carry for t in carry_tensors(item)]
    raise VariantError(f"expected a carry of tensors (Tensor, tuple, list or dict), got {type(carry).__name__}")

def carry_shapes(carry: Carry) -> list[tuple[int, ...]]:
    """Return the shapes of the tensors in ``carry`` (see :func:`carry_tensors`)."""
    return [tuple(t.shape) for t in carry_tensors(carry)]

def _importance(name: str) -> Any:
    import torch_pruning as tp

    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise ConfigError(f"expected pruning importance one of {IMPORTANCES}, got {name!r}")

def _forward(module: nn.Module, carry: Carry) -> Carry:
    return module(carry)

def _unsupported_layers(block: nn.Module) -> dict[str, nn.Module]:
    """Leaf modules holding parameters whose type Torch-Pruning has no pruner for, by qualified name."""
    import torch_pruning as tp

    known = tuple(tp.pruner.function.PrunerBox.keys()) if hasattr(tp.pruner.function, "PrunerBox") else ()
    supported: tuple[type, ...] = (
        nn.modules.conv._ConvNd,
        nn.Linear,
        nn.modules.batchnorm._BatchNorm,
        nn.LayerNorm,
        nn.GroupNorm,
        nn.PReLU,
        nn.Embedding,
        nn.MultiheadAttention,
        nn.LSTM,
        nn.modules.instancenorm._InstanceNorm,
    )
    found: dict[str, nn.Module] = {}
    for name, module in block.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if isinstance(module, supported):
            continue
        if known and tp.ops.module2type(module) in known and tp.ops.module2type(module) != tp.ops.OPTYPE.CUSTOMIZED:
            continue
        found[name] = module
    return found

def _output_producers(graph: Any) -> list[nn.Module]:
    """Layers whose output channels reach the block outputs (walking back through channel-preserving ops)."""
    import torch_pruning as tp

    roots = (tp.ops.OPTYPE.CONV, tp.ops.OPTYPE.LINEAR, tp.ops.OPTYPE.DEPTHWISE_CONV, tp.ops.OPTYPE.PARAMETER,
             tp.ops.OPTYPE.EMBED, tp.ops.OPTYPE.MHA, tp.ops.OPTYPE.LSTM, tp.ops.OPTYPE.CUSTOMIZED)
    finals = [node for node in graph.module2node.values() if len(node.outputs) == 0]
    producers: list[nn.Module] = []
    seen: set[int] = set()
    stack = list(finals)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.module, nn.Module) and node.type in roots:
            producers.append(node.module)
            continue
        if isinstance(node.module, nn.Module) and any(True for _ in node.module.parameters(recurse=False)):
            producers.append(node.module)  # BN / LN / GN on the way: keep it, continue to its source
        stack.extend(node.inputs)
    return producers

def _groups_touching(graph: Any, modules: Sequence[nn.Module]) -> list[nn.Module]:
    """Layers whose out-channel pruning would also cut into ``modules`` (or their parameters): keep them."""
    protected = {id(m) for m in modules} | {id(p) for m in modules for p in m.parameters()}
    if not protected:
        return []
    keep: list[nn.Module] = []
    roots = (nn.modules.conv._ConvNd, nn.Linear)
    for group in graph.get_all_groups(root_module_types=roots):
        targets = [dep.target.module for dep, _ in group]
        if any(id(t) in protected for t in targets):
            keep.extend(t for (dep, _), t in zip(group, targets, strict=True)
                        if isinstance(t, roots) and graph.is_out_channel_pruning_fn(dep.handler))
    return keep


def prune_block(
    block: nn.Module,
    example_carry: Carry,
    ratio: float,
    importance: str = "l2",
    ignored_layers: Sequence[nn.Module] = (),
    round_to: int | None = 8,
) -> nn.Module:
    """Return a structurally pruned copy of ``block`` (channels removed; ``block`` itself is untouched).

    Args:
        block: the original block, ``carry -> carry``.
        example_carry: an input carry for tracing (batch of 1 is enough).
        ratio: fraction of channels to remove from every prunable group, in [0, 1).
        importance: ``"l1"``, ``"l2"`` (group weight magnitude) or ``"taylor"`` (weight x gradient of the
            squared output norm on ``example_carry``: a label-free proxy).
        ignored_layers: further layers (of ``block``) to leave unpruned.
        round_to: keep channel counts multiples of this (SIMD / tensor-core friendly); ``None`` to disable.

    Returns:
        The pruned copy in eval mode; same input / output shapes as ``block``.

    Raises:
        ConfigError: ``ratio`` or ``importance`` out of range.
        VariantError: the pruned block changes an output shape or fails to run.
    """
    import torch_pruning as tp

    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"expected pruning ratio in [0, 1), got {ratio}")
    original = block
    block = copy.deepcopy(block).eval()
    index = {id(m): name for name, m in original.named_modules()}
    mapped = dict(zip([id(m) for m in original.modules()], block.modules(), strict=True))
    ignored: list[nn.Module] = [mapped[id(m)] for m in ignored_layers if id(m) in mapped]
    unsupported = _unsupported_layers(block)
    for name, module in unsupported.items():
        warnings.warn(f"pruning: skipping unsupported layer {name!r} ({type(module).__name__}): left unpruned",
                      stacklevel=2)
        ignored.append(module)
    with torch.no_grad():
        expected = carry_shapes(block(example_carry))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        graph = tp.DependencyGraph().build_dependency(block, example_carry, forward_fn=_forward)
    ignored.extend(_output_producers(graph))
    ignored.extend(_groups_touching(graph, list(unsupported.values())))
    if ratio == 0.0:
        return block
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        pruner = tp.pruner.MetaPruner(
            block,
            example_carry,
            importance=_importance(importance),
            pruning_ratio=ratio,
            ignored_layers=ignored,
            forward_fn=_forward,
            round_to=round_to,
        )
    if importance == "taylor":
        block.zero_grad()
        loss = sum(t.float().pow(2).mean() for t in carry_tensors(block(example_carry)))
        loss.backward()  # type: ignore[union-attr]
    pruner.step()
    block.zero_grad(set_to_none=True)
    block.eval()
    try:
        with torch.no_grad():
            got = carry_shapes(block(example_carry))
    except RuntimeError as exc:
        raise VariantError(f"pruned block fails to run on the example carry: {exc}") from exc
    if got != expected:
        raise VariantError(f"pruning changed the block's output shapes: expected {expected}, got {got}")
    kept = [index.get(id(m), "?") for m in ignored_layers]
    LOGGER.info("pruned %d -> %d params (ratio %.2f, %s); explicitly ignored %s",
                count_params(original), count_params(block), ratio, importance, kept)
    return block

def prune_unstructured(block: nn.Module, ratio: float) -> nn.Module:
    """Return a copy of ``block`` with the smallest-magnitude ``ratio`` of each conv / linear weight zeroed.

    Note: shapes are unchanged, so a dense runtime runs it exactly as fast as the original; only a sparse
    kernel or a compressed file format would profit. Report it as such.

    Raises:
        ConfigError: ``ratio`` outside [0, 1).
    """
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"expected pruning ratio in [0, 1), got {ratio}")
    block = copy.deepcopy(block).eval()
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                weight = module.weight
                k = int(ratio * weight.numel())
                if k == 0:
                    continue
                threshold = weight.abs().flatten().kthvalue(k).values
                weight.masked_fill_(weight.abs() <= threshold, 0.0)
    return block

def prune_stats(original: nn.Module, pruned: nn.Module, structured: bool = True) -> PruneStats:
    """Summarise a pruning step (params before / after; non-zero count for unstructured)."""
    after = count_params(pruned) if structured else count_nonzero_params(pruned)
    return PruneStats(params_before=count_params(original), params_after=after, ignored_layers=[],
                      skipped_unsupported=list(_unsupported_layers(original)))
