"""Composed models: cut between calls of the model's direct children (stage-level, not layer-level).

Used for models built from named parts, e.g. the project's ``Detector`` (``head(neck(backbone(x)))``), the
``Embedder`` (``stem -> layer1..3 -> projection -> normalise``) and the ``AttributeClassifier`` (RegNet parts).
The model is traced with torch.fx keeping its direct children as leaves; a cut goes after a child call when
every value live across it is a tensor (child outputs, the input). Glue operations between children (flatten,
normalise, ``torch.cat``...) join the segment of the child before them; a segment whose children hold no
parameters joins the next one. A segment that is exactly one child call is cut further when the child is a
known family, or (one level deep) when it is the heaviest child and has several children of its own — this is
how a detection backbone is split into its stages while the multi-scale features it returns travel as skip
tensors in the carry.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import fx, nn

from multidnn_sched.exceptions import PartitionError
from multidnn_sched.runtime.block import Block
from multidnn_sched.runtime.partition_blocks import downsamples
from multidnn_sched.runtime.partition_families import known_family, partition_known
from multidnn_sched.runtime.partition_fx import Liveness, liveness, probably_not_tensor, split_graph, trace

MAX_COMPOSED_BLOCKS: int = 8
"""When cutting at every child call would give more blocks than this, cut only before downsampling children
(group consecutive children by output stride)."""

MIN_CHILDREN_TO_EXPAND: int = 3
"""The heaviest child is cut further only when it has at least this many children of its own."""


ChildOf = Callable[[fx.Node], str | None]
"""Maps a graph node to the name of the direct child it calls, or ``None``."""


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _segment_name(called: list[str], parent: str, index: int) -> str:
    if not called:
        return f"part{index + 1}"
    if all(c.isdigit() for c in called):  # children of an nn.Sequential
        prefix = parent.rsplit(".", 1)[-1]
        return f"{prefix}{called[0]}" if len(called) == 1 else f"{prefix}{called[0]}-{called[-1]}"
    return "+".join(called) if len(called) <= 2 else f"{called[0]}-{called[-1]}"


def partition_composed(model: nn.Module, name: str, depth: int = 0) -> list[Block]:
    """Blocks of ``model`` cut between its children's calls (see the module docstring).

    Args:
        model: the model.
        name: model name (dotted path for a nested call) for block names and error messages.
        depth: 0 for the model itself; nested calls (the expanded heaviest child) use 1 and expand no further,
            except children of a known family.

    Raises:
        PartitionError: the model has no children, or FX cannot trace it with its children as leaves.
    """

    children = dict(model.named_children())
    if not children:
        raise PartitionError(f"cannot partition model {name!r} ({type(model).__name__}) as composed: no children")
    gm = trace(model, name, leaves=list(children.values()))
    live = liveness(gm.graph)
    suspects = probably_not_tensor(gm.graph)
    n = len(live.compute)

    def child_of(node: fx.Node) -> str | None:
        target = str(node.target)
        return target if node.op == "call_module" and target in children else None

    child_positions = [p for p in range(n) if child_of(live.compute[p]) is not None]
    cuts = [
        p
        for p in child_positions[:-1]  # glue after the last child call stays with it
        if child_of(live.compute[p]) is not None
        and live.live_after(p)
        and not any(v in suspects for v in live.live_after(p))
    ]
    if len(cuts) + 1 > MAX_COMPOSED_BLOCKS:
        cuts = [p for p in cuts if _next_child_downsamples(live.compute[p + 1 :], child_of, children)]
    cuts = _merge_parameter_free(cuts, live.compute, child_of, children)

    bounds = [-1, *cuts, n - 1]
    segments = [live.compute[bounds[k] + 1 : bounds[k + 1] + 1] for k in range(len(bounds) - 1)]
    called = [[c for c in (child_of(nd) for nd in seg) if c is not None] for seg in segments]
    names = [_segment_name(c, name, k) for k, c in enumerate(called)]
    blocks = split_graph(gm, cuts, names)

    heaviest = max(children, key=lambda c: _params(children[c]))
    expanded: list[Block] = []
    for k, (block, seg) in enumerate(zip(blocks, segments, strict=True)):
        child_name = _single_child_segment(seg, k, bounds, live, child_of)
        if child_name is None:
            expanded.append(block)
            continue
        child = children[child_name]
        family = known_family(child)
        if family is not None:
            expanded.extend(partition_known(child, f"{name}.{child_name}", family))
        elif depth == 0 and child_name == heaviest and len(list(child.children())) >= MIN_CHILDREN_TO_EXPAND:
            try:
                expanded.extend(partition_composed(child, f"{name}.{child_name}", depth=1))
            except PartitionError:
                expanded.append(Block(block.name, child))
        else:
            expanded.append(Block(block.name, child))
    return unique_names(expanded)


def _next_child_downsamples(rest: list[fx.Node], child_of: ChildOf, children: dict[str, nn.Module]) -> bool:
    for node in rest:
        child = child_of(node)
        if child is not None:
            return downsamples(children[child])
    return False


def _merge_parameter_free(
    cuts: list[int], compute: list[fx.Node], child_of: ChildOf, children: dict[str, nn.Module]
) -> list[int]:
    """Drop the cut after each segment whose child calls hold no parameters (it joins the next segment)."""
    kept: list[int] = []
    start = 0
    for p in cuts:
        called = [c for c in (child_of(nd) for nd in compute[start : p + 1]) if c is not None]
        if sum(_params(children[c]) for c in called) > 0:
            kept.append(p)
            start = p + 1
    return kept


def _single_child_segment(
    seg: list[fx.Node], k: int, bounds: list[int], live: Liveness, child_of: ChildOf
) -> str | None:
    """The child's name when segment ``k`` is exactly ``child(carry) -> carry``, else ``None``."""
    if len(seg) != 1:
        return None
    node = seg[0]
    child = child_of(node)
    if child is None or node.kwargs or len(node.args) != 1:
        return None
    inputs = live.placeholders if k == 0 else live.live_after(bounds[k])
    if inputs != [node.args[0]]:
        return None
    if k == len(bounds) - 2:
        return child if live.output.args == (node,) else None
    return child if live.live_after(bounds[k + 1]) == [node] else None


def unique_names(blocks: list[Block]) -> list[Block]:
    """Rename repeated block names ``name``, ``name_2``, ``name_3``... (first occurrence unchanged)."""
    seen: set[str] = set()
    renamed: list[Block] = []
    for b in blocks:
        block_name, suffix = b.name, 2
        while block_name in seen:
            block_name, suffix = f"{b.name}_{suffix}", suffix + 1
        seen.add(block_name)
        renamed.append(b if block_name == b.name else Block(block_name, b.module))
    return renamed
