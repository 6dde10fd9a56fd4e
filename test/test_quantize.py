"""Tests of compression_tools.quantize: ONNX export of carries, ORT static int8, OrtBlock."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from compression_tools.quantize import (
    OrtBlock,
    carry_layout,
    export_onnx,
    flatten_carry,
    quantize_block_ort_int8,
    unflatten_carry,
)
from multidnn_sched.exceptions import ConfigError


def _block() -> nn.Module:
    torch.manual_seed(0)
    down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
    return nn.Sequential(BasicBlock(16, 32, stride=2, downsample=down), BasicBlock(32, 32)).eval()


class DictBlock(nn.Module):
    """Carry {"x": T, "skips": (T, T)} -> (T, T)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)

    def forward(self, carry: dict) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = carry["skips"]
        return self.conv(carry["x"]) + a, b * 2.0


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def test_carry_layout_round_trip() -> None:
    carry = {"x": torch.ones(1), "skips": (torch.zeros(2), [torch.full((3,), 2.0)])}
    layout = carry_layout(carry)
    rebuilt = unflatten_carry(layout, flatten_carry(carry))
    assert isinstance(rebuilt["skips"], tuple) and isinstance(rebuilt["skips"][1], list)
    assert torch.equal(rebuilt["skips"][1][0], carry["skips"][1][0])


def test_export_dict_carry_runs_in_ort_with_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    block = DictBlock().eval()
    carry = {"x": torch.randn(1, 4, 6, 6), "skips": (torch.randn(1, 8, 6, 6), torch.randn(1, 3))}
    ort_block = OrtBlock(export_onnx(block, carry, tmp_path / "d.onnx"), intra_op_threads=1)
    big = {"x": torch.randn(3, 4, 6, 6), "skips": (torch.randn(3, 8, 6, 6), torch.randn(3, 3))}
    out, ref = ort_block(big), block(big)
    assert isinstance(out, tuple) and len(out) == 2
    torch.testing.assert_close(out[0], ref[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[1], ref[1])


def test_int8_is_close_smaller_and_leaves_block_in_eval(tmp_path: Path) -> None:
    block = _block()
    calibration = [torch.rand(1, 16, 16, 16) for _ in range(8)]
    path = quantize_block_ort_int8(block, calibration, tmp_path / "q.onnx")
    fp32 = export_onnx(block, calibration[0], tmp_path / "f.onnx")
    assert not block.training  # the exporter must not flip the original block to train mode
    assert path.stat().st_size < 0.4 * fp32.stat().st_size
    x = torch.rand(2, 16, 16, 16)
    with torch.no_grad():
        ref = block(x)
    ort_block = OrtBlock(path, intra_op_threads=1)
    assert _cosine(ort_block(x), ref) > 0.99
    ort_block.set_intra_op_threads(2)
    assert ort_block.intra_op_threads == 2 and _cosine(ort_block(x), ref) > 0.99


def test_quantize_needs_calibration(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="calibration"):
        quantize_block_ort_int8(_block(), [], tmp_path / "q.onnx")
    with pytest.raises(ConfigError, match="calibrate_method"):
        quantize_block_ort_int8(_block(), [torch.rand(1, 16, 8, 8)], tmp_path / "q.onnx", calibrate_method="x")


def test_ort_block_refuses_threads_below_one(tmp_path: Path) -> None:
    path = export_onnx(_block(), torch.rand(1, 16, 8, 8), tmp_path / "f.onnx")
    with pytest.raises(ConfigError, match="intra_op_threads"):
        OrtBlock(path, intra_op_threads=0)


def test_ort_block_follows_the_calling_threads_torch_thread_count(tmp_path: Path) -> None:
    """Default OrtBlock: the executor's per-block thread budget (torch.set_num_threads) also governs ORT."""
    import threading

    path = export_onnx(_block(), torch.rand(1, 16, 8, 8), tmp_path / "f.onnx")
    ort_block = OrtBlock(path)
    seen: list[set[int]] = []

    def run(threads: int) -> None:
        torch.set_num_threads(threads)
        ort_block(torch.rand(1, 16, 8, 8))
        seen.append(set(ort_block._sessions))

    for threads in (1, 2):
        worker = threading.Thread(target=run, args=(threads,))
        worker.start()
        worker.join()
    assert seen == [{1}, {1, 2}]
