"""Tests of compression_tools.prune: structured pruning keeps block boundaries, unstructured only zeroes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from compression_tools.prune import count_nonzero_params, count_params, prune_block, prune_unstructured
from multidnn_sched.exceptions import ConfigError


def _downsample(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))


def _residual_block() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(BasicBlock(16, 32, stride=2, downsample=_downsample(16, 32)), BasicBlock(32, 32)).eval()


class TupleBlock(nn.Module):
    """Carry (x, skip) -> (y, skip'): two tensors in, two out, like a neck's skip tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(8, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 16, 3))
        self.b = nn.Sequential(nn.Conv2d(4, 24, 1), nn.ReLU(), nn.Conv2d(24, 4, 1))

    def forward(self, carry: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, skip = carry
        return self.a(x), self.b(skip)


class Scale(nn.Module):
    """A layer type Torch-Pruning has no pruner for (holds a parameter)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor"])
def test_structured_prune_shrinks_and_keeps_boundary_shapes(importance: str) -> None:
    block = _residual_block()
    x = torch.randn(2, 16, 16, 16)
    pruned = prune_block(block, x[:1], 0.5, importance=importance, round_to=None)
    assert count_params(pruned) < 0.75 * count_params(block)
    assert pruned(x).shape == block(x).shape == (2, 32, 8, 8)
    assert pruned[0].conv1.out_channels == 16  # inner channels really removed
    assert pruned[0].conv1.in_channels == 16  # block input untouched
    assert count_params(block) == 16 * 32 * 9 + 32 * 32 * 9 * 3 + 16 * 32 + 32 * 2 * 5  # original untouched


def test_structured_prune_tuple_carry_keeps_every_tensor_shape() -> None:
    torch.manual_seed(0)
    block = TupleBlock().eval()
    carry = (torch.randn(1, 8, 10, 10), torch.randn(1, 4, 5, 5))
    pruned = prune_block(block, carry, 0.5, round_to=None)
    out, ref = pruned(carry), block(carry)
    assert [t.shape for t in out] == [t.shape for t in ref]
    assert pruned.a[0].out_channels == 16 and pruned.b[0].out_channels == 12


def test_unsupported_layer_is_skipped_with_a_warning_naming_it() -> None:
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 16, 3), Scale(16), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(),
                          nn.Conv2d(16, 8, 1)).eval()
    x = torch.randn(1, 3, 12, 12)
    with pytest.warns(UserWarning, match=r"unsupported layer '1' \(Scale\)"):
        pruned = prune_block(block, x, 0.5, round_to=None)
    assert pruned(x).shape == block(x).shape
    assert pruned[1].gain.shape == (1, 16, 1, 1)  # the unsupported layer and its producer stay intact
    assert pruned[3].out_channels == 8  # other layers still pruned


def test_unstructured_prune_zeroes_but_keeps_shapes() -> None:
    block = _residual_block()
    sparse = prune_unstructured(block, 0.5)
    assert count_params(sparse) == count_params(block)
    assert count_nonzero_params(sparse) < 0.6 * count_nonzero_params(block)
    assert sparse[0].conv1.weight.shape == block[0].conv1.weight.shape


def test_bad_ratio_and_importance_are_refused() -> None:
    block = _residual_block()
    with pytest.raises(ConfigError, match="ratio"):
        prune_block(block, torch.randn(1, 16, 8, 8), 1.0)
    with pytest.raises(ConfigError, match="importance"):
        prune_block(block, torch.randn(1, 16, 8, 8), 0.5, importance="random-ish")
