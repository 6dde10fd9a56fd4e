"""Small ``nn.Module`` wrappers the partitioner builds blocks from.

Every class here is a plain module: it holds only the sub-modules (and parameters) of its own block, never a
reference to the whole model, so a block's ``state_dict`` is self-contained and a compression tool can replace
or export it on its own.

Carry convention used by the wrappers (see docs/partitioning.md): between blocks, the carry is the tuple of
tensors that are still needed later, in creation order, with the running activation last. A carry of one
tensor is the tensor itself, not a 1-tuple.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multidnn_sched.runtime.block import Carry


def split_carry(carry: Carry) -> tuple[tuple[Tensor, ...], Tensor]:
    """Split a carry into (kept skip tensors, running activation).

    Args:
        carry: a ``Tensor`` (no skips) or a tuple whose last element is the running activation.

    Returns:
        ``(kept, x)``: the earlier tensors and the running activation.
    """
    if isinstance(carry, Tensor):
        return (), carry
    if isinstance(carry, (tuple, list)) and len(carry) > 0:
        return tuple(carry[:-1]), carry[-1]
    raise TypeError(f"expected a Tensor or a non-empty tuple of tensors as carry, got {type(carry).__name__}")


def pack_carry(values: tuple[Tensor, ...]) -> Carry:
    """Return the carry for ``values``: the tensor itself when there is one, else the tuple."""
    return values[0] if len(values) == 1 else values


def as_tuple(carry: Carry) -> tuple[Tensor, ...]:
    """Return the tensors of a carry as a tuple (a single ``Tensor`` becomes a 1-tuple)."""
    if isinstance(carry, Tensor):
        return (carry,)
    return tuple(carry)


class FeatureStage(nn.Module):
    """Run ``modules`` on the running activation while carrying multi-scale features (skip tensors).

    Args:
        modules: the stage's layers, run in order on the running activation.
        keep_input: the incoming running activation is a returned feature (a skip the neck needs later), so it
            is kept in the carry instead of being dropped.
        keep_each_output: keep the output of every module as a feature (SSD extra layers); otherwise only the
            stage's final output is carried (as the running activation).
    """

    def __init__(self, modules: list[nn.Module], keep_input: bool, keep_each_output: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(modules)
        self.keep_input = keep_input
        self.keep_each_output = keep_each_output

    def forward(self, carry: Carry) -> Carry:
        kept, x = split_carry(carry)
        out: list[Tensor] = list(kept)
        if self.keep_input:
            out.append(x)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.keep_each_output and i < len(self.layers) - 1:
                out.append(x)
        out.append(x)
        return pack_carry(tuple(out))


class L2NormFeature(nn.Module):
    """SSD-VGG's conv4_3 tap: keep ``scale_weight * L2-normalise(x)`` as a feature, continue with ``x``.

    Carry in: ``x``; carry out: ``(rescaled, x)``. ``scale_weight`` is the SSD extractor's own parameter
    (shared, not copied).
    """

    def __init__(self, scale_weight: nn.Parameter) -> None:
        super().__init__()
        self.scale_weight = scale_weight

    def forward(self, carry: Carry) -> Carry:
        kept, x = split_carry(carry)
        rescaled = self.scale_weight.view(1, -1, 1, 1) * F.normalize(x)
        return (*kept, rescaled, x)


class FpnBlock(nn.Module):
    """torchvision ``FeaturePyramidNetwork`` (with its extra blocks) as a block.

    Carry in: the backbone's returned features in order (tuple, or one tensor); carry out: the tuple of pyramid
    levels in the FPN's output order.

    Args:
        fpn: the model's FPN module (shared, not copied).
        names: the ``OrderedDict`` keys the FPN expects for the incoming features, in order.
    """

    def __init__(self, fpn: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.fpn = fpn
        self.names = list(names)

    def forward(self, carry: Carry) -> tuple[Tensor, ...]:
        features = as_tuple(carry)
        if len(features) != len(self.names):
            raise ValueError(f"FpnBlock expected {len(self.names)} features {self.names}, got {len(features)}")
        levels = self.fpn(OrderedDict(zip(self.names, features, strict=True)))
        return tuple(levels.values())


class ListHead(nn.Module):
    """A torchvision detection head (``head(list_of_features) -> dict``) as a block.

    Carry in: the feature levels (tuple, or one tensor); carry out: the head's ``dict[str, Tensor]`` unchanged,
    so torchvision's own anchor generation and ``postprocess_detections`` can consume it.
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, carry: Carry) -> dict[str, Tensor]:
        return self.head(list(as_tuple(carry)))


class InceptionInputTransform(nn.Module):
    """Inception v3's ``transform_input``: re-normalise ImageNet-normalised input to the [-1, 1] convention.

    Channel c becomes ``x_c * std_c / 0.5 + (mean_c - 0.5) / 0.5`` with the ImageNet mean / std.
    """

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def forward(self, x: Tensor) -> Tensor:
        channels = [torch.unsqueeze(x[:, c], 1) * (self.std[c] / 0.5) + (self.mean[c] - 0.5) / 0.5 for c in range(3)]
        return torch.cat(channels, 1)


def downsamples(module: nn.Module) -> bool:
    """True when ``module`` contains a convolution or pooling with a stride above 1 (it halves the map)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            stride = m.stride if isinstance(m.stride, tuple) else (m.stride,)
            if any(int(s) > 1 for s in stride):
                return True
    return False


def group_by_stride(modules: list[nn.Module]) -> list[list[nn.Module]]:
    """Group consecutive layers by output stride: a new group starts at each downsampling layer.

    The first group always starts at ``modules[0]`` (the stem) and also holds the stride-1 layers after it.
    """
    groups: list[list[nn.Module]] = []
    for i, m in enumerate(modules):
        if i == 0 or downsamples(m):
            groups.append([m])
        else:
            groups[-1].append(m)
    return groups
