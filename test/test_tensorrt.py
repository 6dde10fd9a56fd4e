"""Tests of compression_tools.tensorrt. Engine tests need a CUDA GPU and TensorRT (``needs_cuda``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from compression_tools.quantize import export_onnx, quantize_block_ort_int8
from compression_tools.tensorrt import TrtBlock, build_engine, engine_cache_key, import_tensorrt
from multidnn_sched.exceptions import ConfigError, VariantError

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def _block() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()).eval()


def test_cache_key_changes_with_gpu_version_and_precision(tmp_path: Path) -> None:
    path = export_onnx(_block(), torch.rand(1, 16, 8, 8), tmp_path / "b.onnx")
    key = engine_cache_key(path, "fp16", "10.9.0", "NVIDIA H100 sm90")
    assert key == engine_cache_key(path, "fp16", "10.9.0", "NVIDIA H100 sm90")
    others = {engine_cache_key(path, "int8", "10.9.0", "NVIDIA H100 sm90"),
              engine_cache_key(path, "fp16", "10.10.0", "NVIDIA H100 sm90"),
              engine_cache_key(path, "fp16", "10.9.0", "NVIDIA L4 sm89")}
    assert key not in others and len(others) == 3


@pytest.mark.skipif(HAVE_TRT and torch.cuda.is_available(), reason="TensorRT and a GPU are present here")
def test_missing_tensorrt_or_gpu_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VariantError, match="pip install tensorrt|CUDA GPU"):
        import_tensorrt()
    with pytest.raises(ConfigError, match="precision"):
        build_engine(tmp_path / "none.onnx", tmp_path, precision="fp8")


@pytest.mark.needs_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_matches_torch_and_is_cached(tmp_path: Path, precision: str) -> None:
    block = _block()
    calibration = [torch.rand(1, 16, 8, 8) for _ in range(4)]
    if precision == "int8":
        onnx_path = quantize_block_ort_int8(block, calibration, tmp_path / "b.onnx")
    else:
        onnx_path = export_onnx(block, calibration[0], tmp_path / "b.onnx")
    engine = build_engine(onnx_path, tmp_path / "engines", precision=precision)
    stamp = engine.stat().st_mtime_ns
    assert build_engine(onnx_path, tmp_path / "engines", precision=precision) == engine
    assert engine.stat().st_mtime_ns == stamp  # cache hit: not rebuilt
    trt_block = TrtBlock(engine)
    x = torch.rand(3, 16, 8, 8)
    out = trt_block(x.cuda())
    torch.cuda.synchronize()
    with torch.no_grad():
        ref = block(x)
    cosine = torch.nn.functional.cosine_similarity(out.cpu().flatten(), ref.flatten(), dim=0).item()
    assert out.shape == ref.shape and cosine > 0.99
