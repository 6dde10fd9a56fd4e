"""torch.fx machinery of the partitioner: trace a module, cut its graph, build one ``GraphModule`` per block.

Two uses:

* the generic fallback (:func:`partition_fx`): trace down to torch's standard layers, then cut the graph into
  ``num_blocks`` segments of roughly equal cost (parameters and node count), each cut placed where few values
  are live;
* stage cuts (partition_composed.py): trace with the module's direct children as leaves and cut between child
  calls (used for models such as the project's detector whose backbone returns multi-scale features).

Carry convention (same as the hand-written families): the values live across a cut, in creation order, as a
tuple; one live value is passed as itself. ``get_attr`` values (parameters, constants used by functional ops)
are never carried: each segment reads them again.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

from multidnn_sched.exceptions import PartitionError
from multidnn_sched.runtime.block import Block
from multidnn_sched.runtime.kernels import OneDnnPointwiseConv2d

DEFAULT_FX_NUM_BLOCKS: int = 4
"""Segments the FX fallback cuts a model into when the caller does not say."""

NON_TENSOR_PENALTY: float = 1000.0
"""Cut score added per live value that is probably not a tensor (a size, an int, a tuple): such carries break
ONNX export of a block, so a cut next to one is taken only when nothing else is near the target cost."""

_COMPUTE_OPS: frozenset[str] = frozenset({"call_module", "call_function", "call_method"})
_SHAPE_METHODS: frozenset[str] = frozenset({"size", "dim", "numel", "tolist", "item", "__len__"})
_TRACE_ERRORS: tuple[type[BaseException], ...] = (
    fx.proxy.TraceError,
    TypeError,
    RuntimeError,
    AttributeError,
    ValueError,
    NotImplementedError,
    AssertionError,
    KeyError,
    IndexError,
)


class _LeafTracer(fx.Tracer):
    """FX tracer that keeps the given module objects as leaves (called, not traced into), and the serving
    kernels' :class:`~multidnn_sched.runtime.kernels.OneDnnPointwiseConv2d` like the ``nn.Conv2d`` it is (its
    forward branches on the input, which a proxy cannot answer)."""

    def __init__(self, leaves: Sequence[nn.Module]) -> None:
        super().__init__()
        self._leaf_ids = {id(m) for m in leaves}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (id(m) in self._leaf_ids or isinstance(m, OneDnnPointwiseConv2d)
                or super().is_leaf_module(m, module_qualified_name))


def trace(model: nn.Module, name: str, leaves: Sequence[nn.Module] = ()) -> fx.GraphModule:
    """Symbolically trace ``model``; leaf modules are torch's standard layers plus ``leaves``.

    Raises:
        PartitionError: FX cannot trace the model; the message names the model and gives the FX error's gist.
    """
    tracer = _LeafTracer(leaves)
    try:
        graph = tracer.trace(model)
    except _TRACE_ERRORS as exc:
        gist = (str(exc).strip().splitlines() or [""])[0]
        raise PartitionError(
            f"cannot partition model {name!r} ({type(model).__name__}): not a known family and torch.fx cannot "
            f"trace it ({type(exc).__name__}: {gist}); expected a model without data-dependent Python control "
            f"flow, or pass family= for a supported architecture"
        ) from exc
    return fx.GraphModule(tracer.root, graph, class_name=type(model).__name__)


@dataclass
class Liveness:
    """Def / last-use positions of every carried value of a graph (positions index the compute nodes)."""

    compute: list[fx.Node]
    placeholders: list[fx.Node]
    values: list[fx.Node]
    def_pos: dict[fx.Node, int]
    last_use: dict[fx.Node, int]
    output: fx.Node

    def live_after(self, pos: int) -> list[fx.Node]:
        """Values alive across a cut after compute node ``pos`` (-1: before the first), creation order."""
        return [v for v in self.values if self.def_pos[v] <= pos < self.last_use[v]]


def liveness(graph: fx.Graph) -> Liveness:
    compute = [n for n in graph.nodes if n.op in _COMPUTE_OPS]
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    output = next(n for n in graph.nodes if n.op == "output")
    pos = {n: i for i, n in enumerate(compute)}
    end = len(compute)
    def_pos: dict[fx.Node, int] = {p: -1 for p in placeholders}
    def_pos.update(pos)
    last_use: dict[fx.Node, int] = {}
    for v in def_pos:
        uses = [end if u.op == "output" else pos.get(u, -1) for u in v.users]
        last_use[v] = max(uses, default=def_pos[v])
    return Liveness(compute, placeholders, list(def_pos), def_pos, last_use, output)


def probably_not_tensor(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose value is probably a Python value (size, int, tuple) rather than a tensor."""
    suspects: set[fx.Node] = set()
    for n in graph.nodes:
        if n.op == "call_method" and n.target in _SHAPE_METHODS:
            suspects.add(n)
        elif n.op == "call_function" and n.target in (getattr, len):
            suspects.add(n)
        elif n.op == "call_function" and getattr(n.target, "__module__", None) in ("_operator", "operator"):
            if any(a in suspects for a in n.all_input_nodes):
                suspects.add(n)
        if (
            n.op in _COMPUTE_OPS
            and n.users
            and all(u.op == "call_function" and u.target is operator.getitem for u in n.users)
        ):
            suspects.add(n)  # a tuple / list unpacked later: carrying it would nest containers
    return suspects


def split_graph(gm: fx.GraphModule, cuts: Sequence[int], names: Sequence[str]) -> list[Block]:
    """Cut ``gm`` after the given compute-node positions; one ``GraphModule`` block per segment.

    Args:
        gm: the traced model.
        cuts: strictly increasing positions in the compute-node list; a cut at ``p`` ends a segment after node
            ``p``. Each segment must hold at least one compute node.
        names: one block name per segment (``len(cuts) + 1``).

    Returns:
        Blocks in order; block ``k`` takes the values live at the cut before it (the model input for the
        first) and returns the values live at the cut after it (the model output for the last).
    """
    live = liveness(gm.graph)
    bounds = [-1, *cuts, len(live.compute) - 1]
    if len(names) != len(bounds) - 1:
        raise ValueError(f"expected {len(bounds) - 1} block names, got {len(names)}: {list(names)}")
    if any(b >= a_next for b, a_next in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f"cuts must be strictly increasing within 0..{len(live.compute) - 2}, got {list(cuts)}")
    blocks: list[Block] = []
    for k, block_name in enumerate(names):
        start, stop = bounds[k], bounds[k + 1]
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        if k == 0:
            inputs = live.placeholders
            if len(inputs) == 1:
                env[inputs[0]] = g.node_copy(inputs[0])
            else:
                carry = g.placeholder("carry")
                for i, p in enumerate(inputs):
                    env[p] = g.call_function(operator.getitem, (carry, i))
        else:
            inputs = live.live_after(start)
            carry = g.placeholder("carry")
            if len(inputs) == 1:
                env[inputs[0]] = carry
            else:
                for i, v in enumerate(inputs):
                    env[v] = g.call_function(operator.getitem, (carry, i))

        def lookup(n: fx.Node, env: dict[fx.Node, fx.Node] = env, g: fx.Graph = g) -> fx.Node:
            if n not in env:
                if n.op != "get_attr":
                    raise PartitionError(f"internal: value {n.name!r} used in a segment but not carried into it")
                env[n] = g.node_copy(n)
            return env[n]

        for node in live.compute[start + 1 : stop + 1]:
            for inp in node.all_input_nodes:
                lookup(inp)
            env[node] = g.node_copy(node, lookup)
        if k == len(names) - 1:
            g.output(fx.map_arg(live.output.args[0], lookup))
        else:
            outs = [lookup(v) for v in live.live_after(stop)]
            g.output(outs[0] if len(outs) == 1 else tuple(outs))
        g.lint()
        blocks.append(Block(block_name, fx.GraphModule(gm, g, class_name=f"Block_{block_name}")))
    return blocks


def _node_costs(gm: fx.GraphModule, compute: list[fx.Node]) -> list[float]:
    """Per compute node: 0.5 * its share of parameters + 0.5 * its share of nodes."""
    modules = dict(gm.named_modules())
    params: list[float] = []
    for node in compute:
        count = 0
        if node.op == "call_module":
            count += sum(p.numel() for p in modules[str(node.target)].parameters())
        for inp in node.all_input_nodes:
            if inp.op == "get_attr" and next(iter(inp.users)) is node:
                value = operator.attrgetter(str(inp.target))(gm)
                count += value.numel() if isinstance(value, torch.Tensor) else 0
        params.append(float(count))
    total_params = sum(params) or 1.0
    return [0.5 * p / total_params + 0.5 / len(compute) for p in params]


def choose_cuts(gm: fx.GraphModule, num_blocks: int) -> list[int]:
    """Pick ``num_blocks - 1`` cut positions: near equal cumulative cost, where few values are live.

    Each target ``j / num_blocks`` of the cumulative cost gets the cut with the lowest score (live values,
    plus :data:`NON_TENSOR_PENALTY` per probable non-tensor) within a window of ``0.35 / num_blocks`` around
    it (widened while empty); ties go to the position closest to the target.
    """
    live = liveness(gm.graph)
    n = len(live.compute)
    if n < 2:
        return []
    costs = _node_costs(gm, live.compute)
    cumulative: list[float] = []
    acc = 0.0
    for c in costs:
        acc += c
        cumulative.append(acc)
    suspects = probably_not_tensor(gm.graph)
    delta = [0.0] * (n + 1)
    for v in live.values:
        weight = 1.0 + (NON_TENSOR_PENALTY if v in suspects else 0.0)
        lo, hi = max(live.def_pos[v], 0), live.last_use[v]
        if lo < hi:
            delta[lo] += weight
            delta[hi] -= weight
    score: list[float] = []
    running = 0.0
    for p in range(n - 1):
        running += delta[p]
        score.append(running)
    window = 0.35 / num_blocks
    cuts: list[int] = []
    for j in range(1, num_blocks):
        target = j / num_blocks
        first = cuts[-1] + 1 if cuts else 0
        candidates: list[int] = []
        reach = window
        while not candidates and reach <= 1.0:  # widen around a single heavy node (e.g. a large fc)
            candidates = [p for p in range(first, n - 1) if abs(cumulative[p] - target) <= reach]
            reach *= 2.0
        if not candidates:
            continue
        best = min(candidates, key=lambda p: (score[p], abs(cumulative[p] - target)))
        cuts.append(best)
    return cuts


def partition_fx(model: nn.Module, name: str, num_blocks: int = DEFAULT_FX_NUM_BLOCKS) -> list[Block]:
    """Generic fallback: trace ``model`` and cut it into about ``num_blocks`` segments ``part1..partN``.

    Raises:
        PartitionError: FX cannot trace the model (message names the model and the FX error).
    """
    if num_blocks < 1:
        raise ValueError(f"expected num_blocks >= 1 for model {name!r}, got {num_blocks}")
    gm = trace(model, name)
    cuts = choose_cuts(gm, num_blocks)
    return split_graph(gm, cuts, [f"part{i + 1}" for i in range(len(cuts) + 1)])
