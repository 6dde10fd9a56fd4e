"""Tests of multidnn_sched.runtime.kernels: 1x1 convolutions on oneDNN where PyTorch's one-thread rule refuses it."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from compression_tools.manifest import Manifest, VariantRecord, save_variant, sha256_file, write_manifest
from multidnn_sched.runtime.block import Block, PartitionedModel
from multidnn_sched.runtime.kernels import (
    OneDnnPointwiseConv2d,
    restore_native_pointwise,
    use_onednn_pointwise,
    uses_onednn_pointwise,
)
from multidnn_sched.runtime.partition_fx import partition_fx
from multidnn_sched.runtime.variant_loader import load_variants


@pytest.fixture
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(128, 128, 1), nn.ReLU(),                    # eligible
        nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(),         # 3x3: PyTorch's own choice
        nn.Conv2d(128, 128, 1, stride=2),                     # strided: oneDNN already
        nn.Conv2d(128, 8, 1, padding="valid", bias=False),    # eligible, no bias
    ).eval()


def _conv_kernels(model: nn.Module, x: torch.Tensor) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x)
    return {e.key for e in prof.key_averages() if e.key in ("aten::thnn_conv2d", "aten::mkldnn_convolution")}


def test_only_plain_unstrided_pointwise_convs_are_converted_and_the_weights_stay() -> None:
    class MyConv(nn.Conv2d):
        pass

    net = _net()
    net.append(MyConv(8, 8, 1))  # a user's subclass keeps its own forward
    keys = {k: v.clone() for k, v in net.state_dict().items()}
    assert use_onednn_pointwise(net) == 2
    assert [type(m).__name__ for m in net if isinstance(m, nn.Conv2d)] == [
        "OneDnnPointwiseConv2d", "Conv2d", "Conv2d", "OneDnnPointwiseConv2d", "MyConv"]
    assert net[5].padding == (0, 0)
    assert uses_onednn_pointwise(net)
    assert net.state_dict().keys() == keys.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in keys.items())
    assert use_onednn_pointwise(net) == 0  # idempotent
    assert restore_native_pointwise(net) == 2 and not uses_onednn_pointwise(net)
    assert type(net[0]) is nn.Conv2d


def test_onednn_runs_exactly_where_the_native_one_thread_kernel_is_slow(one_thread: None) -> None:
    native = nn.Conv2d(128, 128, 1).eval()
    fast = copy.deepcopy(native)
    use_onednn_pointwise(nn.Sequential(fast))
    tiny_map = torch.rand(4, 128, 3, 3)  # 9 values per channel, 590 k multiply-adds
    with torch.inference_mode():
        assert _conv_kernels(native, tiny_map) == {"aten::thnn_conv2d"}  # PyTorch's one-thread rule
        assert _conv_kernels(fast, tiny_map) == {"aten::mkldnn_convolution"}
        torch.testing.assert_close(fast(tiny_map), native(tiny_map), rtol=1e-5, atol=1e-5)
        assert _conv_kernels(fast, torch.rand(4, 128, 4, 4)) == {"aten::thnn_conv2d"}  # 16 values: native wins
        assert _conv_kernels(fast, torch.rand(1, 128, 3, 3)) == {"aten::thnn_conv2d"}  # 147 k: fixed cost
        assert _conv_kernels(fast, torch.rand(16, 128, 3, 3)) == {"aten::mkldnn_convolution"}  # PyTorch's own
        torch.set_num_threads(2)  # PyTorch picks oneDNN itself: nothing to change
        assert _conv_kernels(native, tiny_map) == {"aten::mkldnn_convolution"}
        torch.set_num_threads(1)
    # autograd (training, fine-tuning): the plain nn.Conv2d forward, gradients as before
    x = tiny_map.clone().requires_grad_()
    assert _conv_kernels(fast, x) == {"aten::thnn_conv2d"}
    fast(x).sum().backward()
    assert x.grad is not None and fast.weight.grad is not None


def test_a_converted_model_still_partitions_and_its_blocks_compose(one_thread: None) -> None:
    net = _net()
    reference = copy.deepcopy(net)
    use_onednn_pointwise(net)
    blocks = partition_fx(net, "toy", num_blocks=2)
    assert len(blocks) == 2
    x = torch.rand(4, 128, 6, 6)
    with torch.inference_mode():
        carry = x
        for block in blocks:
            carry = block.module(carry)
        torch.testing.assert_close(carry, reference(x), rtol=1e-5, atol=1e-5)
    assert any(isinstance(m, OneDnnPointwiseConv2d) for b in blocks for m in b.module.modules())


def test_a_torch_variant_follows_the_kernel_choice_of_its_block(tmp_path: Path) -> None:
    torch.manual_seed(1)
    body = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1),
                         nn.Conv2d(16, 16, 1)).eval()
    tucker = copy.deepcopy(body)  # what Tucker-2 writes: 1x1 -> 3x3 -> 1x1
    tucker[0] = nn.Sequential(nn.Conv2d(16, 4, 1, bias=False), nn.Conv2d(4, 8, 3, padding=1, bias=False),
                              nn.Conv2d(8, 32, 1))
    path = save_variant(tucker.eval(), body, tmp_path / "toy/body/tucker.safetensors")
    record = VariantRecord("toy", "body", "tucker", "tucker", "torch-safetensors", str(path.relative_to(tmp_path)),
                           sha256_file(path), path.stat().st_size, solo_latency_ms={"cpu": 1.0}, accuracy=90.0)
    manifest = write_manifest(Manifest(variants=[record]), tmp_path / "manifest.json")

    def variant_convs(block: nn.Module) -> list[str]:
        loaded = load_variants(manifest, PartitionedModel("toy", [Block("body", block)]))["body"][0].module
        return [type(m).__name__ for m in loaded.modules() if isinstance(m, nn.Conv2d)]

    assert variant_convs(copy.deepcopy(body)) == ["Conv2d"] * 5  # a native block: a native variant
    served = copy.deepcopy(body)
    use_onednn_pointwise(served)
    assert variant_convs(served) == ["OneDnnPointwiseConv2d", "Conv2d", "OneDnnPointwiseConv2d", "Conv2d",
                                     "OneDnnPointwiseConv2d"]


def test_the_bench_serves_every_mode_the_same_kernels() -> None:
    from multidnn_sched.bench.tasks import build_model

    assert uses_onednn_pointwise(build_model("classifier"))
    assert not uses_onednn_pointwise(build_model("classifier", native_pointwise=True))
