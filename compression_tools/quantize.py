"""Int8 post-training quantization of one block with ONNX Runtime, and the ORT block wrapper.

Backend choice (measured on this project's CPU, AMD EPYC with AVX-512 VNNI, 2 cores; see docs/compression.md):
ONNX Runtime static int8 — QDQ format, per-channel int8 weights, uint8 activations, after ``quant_pre_process``
— ran ResNet18 layer3+layer4 (1x128x28x28) in 1.2 ms against 7.3 ms for PyTorch fp32 eager, and needs no
compiler at run time. PyTorch's PT2E x86 flow only gets int8 kernels through ``torch.compile`` (Inductor, a C++
toolchain and minutes of compilation per block on 2 cores); run eagerly, its quantize / dequantize pairs make
the block slower than fp32. So the int8 variants are ONNX files run by :class:`OrtBlock`.

The carry structure (Tensor / tuple / list / dict, nested) is flattened into ONNX inputs ``in_0..`` and
outputs ``out_0..``; its layout is stored in the ONNX ``metadata_props`` (key ``multidnn_sched.carry``) so the
file alone is enough to rebuild the carry. Dim 0 (batch) is dynamic.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from multidnn_sched.exceptions import ConfigError, VariantError
from multidnn_sched.runtime.backends.carry import (  # noqa: F401 - re-exported for the compression side
    CARRY_METADATA_KEY,
    carry_layout,
    flatten_carry,
    unflatten_carry,
)
from multidnn_sched.runtime.backends.ort import OrtBlock  # noqa: F401 - re-exported
from multidnn_sched.runtime.block import Carry

LOGGER = logging.getLogger(__name__)

DEFAULT_OPSET = 17




class _FlatWrapper(nn.Module):
    """Adapts a ``carry -> carry`` block to ``*tensors -> tuple(tensors)`` for ONNX export."""

    def __init__(self, block: nn.Module, layout: Any) -> None:
        super().__init__()
        self.block = block
        self.layout = layout

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flatten_carry(self.block(unflatten_carry(self.layout, tensors))))


# --- export and quantization -------------------------------------------------------------------------------

def export_onnx(block: nn.Module, example_carry: Carry, out_path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export ``block`` (eval mode, fp32) to ONNX with a dynamic batch dimension; returns ``out_path``.

    Uses the TorchScript exporter (``dynamo=False``), which handled torchvision blocks here.

    Raises:
        VariantError: the exporter fails (the message names the block type).
    """
    import onnx

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    was_training = block.training
    block.eval()
    in_layout = carry_layout(example_carry)
    inputs = tuple(flatten_carry(example_carry))
    with torch.no_grad():
        out_layout = carry_layout(block(example_carry))
        n_out = len(flatten_carry(block(example_carry)))
    in_names = [f"in_{i}" for i in range(len(inputs))]
    out_names = [f"out_{i}" for i in range(n_out)]
    axes = {name: {0: "batch"} for name in in_names + out_names}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The exporter restores the wrapper's train/eval mode afterwards, recursively: build it in eval mode.
            torch.onnx.export(_FlatWrapper(block, in_layout).eval(), inputs, str(out_path), input_names=in_names,
                              output_names=out_names, dynamic_axes=axes, opset_version=opset, dynamo=False)
    except (RuntimeError, torch.onnx.errors.OnnxExporterError, TypeError) as exc:
        raise VariantError(f"ONNX export of block {type(block).__name__} failed: {exc}") from exc
    finally:
        block.train(was_training)
    model = onnx.load(str(out_path))
    _set_carry_metadata(model, in_layout, out_layout)
    onnx.save(model, str(out_path))
    return out_path


def _set_carry_metadata(model: Any, in_layout: Any, out_layout: Any) -> None:
    value = json.dumps({"in": in_layout, "out": out_layout})
    for prop in model.metadata_props:
        if prop.key == CARRY_METADATA_KEY:
            prop.value = value
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = CARRY_METADATA_KEY, value


class _CarryReader:
    """ORT ``CalibrationDataReader`` over calibration carries."""

    def __init__(self, carries: Sequence[Carry], names: Sequence[str]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(
            [{n: t.detach().cpu().float().numpy() for n, t in zip(names, flatten_carry(c), strict=True)}
             for c in carries])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_block_ort_int8(
    block: nn.Module,
    calibration_carries: Sequence[Carry],
    out_path: Path,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
) -> Path:
    """Quantize ``block`` to a static int8 ONNX model (QDQ, int8 weights, uint8 activations); returns ``out_path``.

    Args:
        block: the block (original, pruned or Tucker), ``carry -> carry``, fp32.
        calibration_carries: input carries of this block on scene frames (the model prefix's outputs); the
            first one is also the export example. 8–32 frames are enough for min-max calibration.
        out_path: where to write the ``.onnx`` file.
        per_channel: per-output-channel weight scales (more accurate, same speed here).
        calibrate_method: ``"minmax"``, ``"entropy"`` or ``"percentile"`` (ORT calibrators).

    Raises:
        ConfigError: no calibration carries or an unknown calibration method.
        VariantError: export or quantization failed.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if not calibration_carries:
        raise ConfigError("expected at least one calibration carry for int8 quantization, got none")
    if calibrate_method not in methods:
        raise ConfigError(f"expected calibrate_method in {sorted(methods)}, got {calibrate_method!r}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    import onnx

    with tempfile.TemporaryDirectory(prefix="mdnn_quant_") as tmp:
        fp32 = export_onnx(block, calibration_carries[0], Path(tmp) / "fp32.onnx")
        metadata = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
        prepared = Path(tmp) / "prep.onnx"
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        except (RuntimeError, ValueError, AttributeError) as exc:  # optimisation is optional: quantize anyway
            LOGGER.warning("quant_pre_process failed (%s); quantizing the unprocessed graph", exc)
            prepared = fp32
        names = [f"in_{i}" for i in range(len(flatten_carry(calibration_carries[0])))]
        try:
            quantize_static(str(prepared), str(out_path), _CarryReader(calibration_carries, names),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[calibrate_method])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise VariantError(f"ORT static int8 quantization of block {type(block).__name__} failed: {exc}") from exc
    model = onnx.load(str(out_path))
    layout = json.loads(metadata[CARRY_METADATA_KEY])
    _set_carry_metadata(model, layout["in"], layout["out"])
    onnx.save(model, str(out_path))
    return out_path




