"""Cut a model into functional blocks (stem, stages, neck, head) the executor can schedule one by one.

``partition_model(model)`` recognises torchvision classification families (ResNet / ResNeXt / Wide-ResNet,
VGG, MobileNetV2 / V3, RegNet, EfficientNet v1 / v2, Inception v3), torchvision detection tensor cores
(RetinaNet, FCOS, SSD, SSDlite, Faster R-CNN), models composed of a chain of children (``backbone -> neck ->
head``, e.g. the project's detector) and falls back to a torch.fx cut for anything else. Running the blocks in order
equals running the model (for torchvision detectors: its tensor core, see :func:`reference_module`);
:func:`check_equivalence` measures it.

Blocks share their modules and parameters with the source model (nothing is copied): ``copy.deepcopy`` the
model first for an independent copy. Block boundaries and the carry convention: docs/partitioning.md.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from multidnn_sched.exceptions import PartitionError
from multidnn_sched.runtime.block import Carry, PartitionedModel
from multidnn_sched.runtime.partition_composed import partition_composed
from multidnn_sched.runtime.partition_detection import (
    DETECTION_FAMILIES,
    detection_core,
    is_torchvision_detector,
)
from multidnn_sched.runtime.partition_families import FAMILIES, known_family, partition_known
from multidnn_sched.runtime.partition_fx import DEFAULT_FX_NUM_BLOCKS, partition_fx

__all__ = [
    "FAMILIES",
    "check_equivalence",
    "known_family",
    "partition_model",
    "reference_module",
]


MIN_COMPOSED_BLOCKS: int = 3
"""An unrecognised model is cut as "composed" (between its children) when that gives at least this many blocks;
otherwise the FX fallback cuts it by cost."""

_OTHER_FAMILIES: tuple[str, ...] = (*DETECTION_FAMILIES, "composed", "fx")


def partition_model(
    model: nn.Module,
    name: str | None = None,
    *,
    family: str | None = None,
    num_blocks: int | None = None,
) -> PartitionedModel:
    """Cut ``model`` into functional blocks.

    Args:
        model: the model (eval mode is what the blocks reproduce: Inception v3 without aux logits).
        name: model name for the record and error messages; default: the class name in lower case.
        family: force a family: one of :data:`FAMILIES`, ``"retinanet"``, ``"fcos"``, ``"ssd"``,
            ``"ssdlite"``, ``"composed"``, ``"fx"``. Default: recognised by class, then "composed" (forward is
            a chain of children), then the torch.fx fallback.
        num_blocks: segments for the FX fallback (default :data:`DEFAULT_FX_NUM_BLOCKS`); ignored otherwise.

    Returns:
        The ``PartitionedModel``; ``family`` records which rule cut it.

    Raises:
        PartitionError: unknown ``family``, a model lacking what its family needs, or a model FX cannot
            trace (the message names the model and the construct FX rejected).
    """
    model_name = name if name is not None else type(model).__name__.lower()
    known = [*FAMILIES, *_OTHER_FAMILIES]
    if family is not None and family not in known:
        raise PartitionError(f"cannot partition model {model_name!r}: unknown family {family!r}; known: {known}")
    chosen = family if family is not None else known_family(model)
    if chosen is None:
        try:
            blocks = partition_composed(model, model_name)
            chosen = "composed" if len(blocks) >= MIN_COMPOSED_BLOCKS else "fx"
        except PartitionError:
            chosen = "fx"
    if chosen == "fx":
        blocks = partition_fx(model, model_name, num_blocks or DEFAULT_FX_NUM_BLOCKS)
    elif family == "composed":
        blocks = partition_composed(model, model_name)
    elif chosen != "composed":
        blocks = partition_known(model, model_name, chosen)
    own = {id(m) for m in model.modules()}
    for block in blocks:  # wrappers made here (Sequential, FeatureStage...) follow the model's mode
        for m in block.module.modules():
            if id(m) not in own:
                m.training = model.training
    return PartitionedModel(name=model_name, blocks=blocks, family=chosen)


def reference_module(model: nn.Module) -> nn.Module:
    """The module whose forward the blocks reproduce: the model itself, or for torchvision detectors their
    tensor core (``TorchvisionDetectionCore``: batch tensor -> head outputs)."""
    if is_torchvision_detector(model):
        return detection_core(model)
    return model


def _tensors(value: Carry, where: str) -> list[tuple[str, Tensor]]:
    """Flatten a nested output into ``(path, tensor)`` pairs (dict keys in insertion order)."""
    if isinstance(value, Tensor):
        return [(where, value)]
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in _tensors(v, f"{where}[{k!r}]")]
    if isinstance(value, (tuple, list)):
        return [pair for i, v in enumerate(value) for pair in _tensors(v, f"{where}[{i}]")]
    raise TypeError(f"expected tensors, tuples, lists or dicts in the output at {where}, got {type(value).__name__}")


def check_equivalence(
    model: nn.Module,
    partitioned: PartitionedModel,
    example_input: Carry,
    atol: float | None = 1e-5,
) -> float:
    """Run the model (see :func:`reference_module`) and its blocks on ``example_input`` and compare outputs.

    Both run in eval mode under ``torch.inference_mode``; the training flags are restored afterwards.

    Args:
        model: the source model.
        partitioned: its blocks from :func:`partition_model`.
        example_input: the model input (for torchvision detectors: the transformed batch tensor).
        atol: raise when the max abs difference exceeds it; ``None``: only measure.

    Returns:
        The maximum absolute difference over all output tensors.

    Raises:
        PartitionError: the outputs differ in structure or shape, or by more than ``atol``.
    """
    reference = reference_module(model)
    modules = [*reference.modules(), *(m for b in partitioned.blocks for m in b.module.modules())]
    training = {id(m): (m, m.training) for m in modules}
    try:
        for m, _ in training.values():
            m.training = False  # per module, not recursive: restoring must not clobber children's flags
        with torch.inference_mode():
            expected = _tensors(reference(example_input), "output")
            got = _tensors(partitioned(example_input), "output")
    finally:
        for m, flag in training.values():
            m.training = flag
    if [p for p, _ in expected] != [p for p, _ in got]:
        raise PartitionError(
            f"blocks of {partitioned.name!r} return {[p for p, _ in got]}, expected {[p for p, _ in expected]}"
        )
    max_diff = 0.0
    for (path, e), (_, g) in zip(expected, got, strict=True):
        if e.shape != g.shape:
            raise PartitionError(
                f"blocks of {partitioned.name!r}: {path} has shape {list(g.shape)}, expected {list(e.shape)}"
            )
        if e.numel():
            max_diff = max(max_diff, float((e.double() - g.double()).abs().max()))
    if atol is not None and not max_diff <= atol:
        raise PartitionError(
            f"blocks of {partitioned.name!r} differ from the whole model by {max_diff:.3g} (max abs), "
            f"expected <= {atol:g}"
        )
    return max_diff
