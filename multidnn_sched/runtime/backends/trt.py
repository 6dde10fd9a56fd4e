"""A TensorRT engine block variant (GPU only) behind the block contract; TensorRT is imported lazily."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multidnn_sched.exceptions import CheckpointError, VariantError
from multidnn_sched.runtime.backends.carry import flatten_carry, unflatten_carry
from multidnn_sched.runtime.block import Carry


def import_tensorrt() -> Any:
    """Return the ``tensorrt`` module.

    Raises:
        VariantError: TensorRT is not installed or no CUDA GPU is visible.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise VariantError("TensorRT is not installed: on a machine with an NVIDIA GPU run "
                           "`pip install tensorrt-cu13` (or tensorrt-cu12 to match the CUDA driver)") from exc
    if not torch.cuda.is_available():
        raise VariantError("TensorRT engines need a CUDA GPU; torch.cuda.is_available() is False")
    return trt


def gpu_identity() -> str:
    """Return ``"<GPU name> sm<major><minor>"`` of the current CUDA device."""
    major, minor = torch.cuda.get_device_capability()
    return f"{torch.cuda.get_device_name()} sm{major}{minor}"


class TrtBlock(nn.Module):
    """A TensorRT engine behind the block contract: torch CUDA carry in, torch CUDA carry out.

    Runs on the current CUDA stream (so the executor's per-model streams apply). Inputs on the CPU are
    moved to the GPU; fp32 in, fp32 out (TensorRT casts internally for fp16 / int8 layers).

    Args:
        engine_path: a ``.engine`` file from :func:`build_engine` (its ``.json`` sidecar next to it).

    Raises:
        VariantError: TensorRT missing / no GPU.
        CheckpointError: the engine cannot be deserialized (other TensorRT version or GPU) or lacks its sidecar.
    """

    def __init__(self, engine_path: Path) -> None:
        super().__init__()
        trt = import_tensorrt()
        self.engine_path = Path(engine_path)
        sidecar = self.engine_path.with_suffix(".json")
        if not sidecar.is_file():
            raise CheckpointError(f"engine {self.engine_path} has no sidecar {sidecar.name} (carry layout)")
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        self._in_layout, self._out_layout = info["layout"]["in"], info["layout"]["out"]
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise CheckpointError(f"engine {self.engine_path} cannot be deserialized here (built with TensorRT "
                                  f"{info.get('tensorrt')} on {info.get('gpu')}; this is {trt.__version__} on "
                                  f"{gpu_identity()}): rebuild it")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._inputs.sort(key=lambda n: int(n.split("_")[-1]))
        self._outputs.sort(key=lambda n: int(n.split("_")[-1]))

    def forward(self, carry: Carry) -> Carry:
        tensors = [t.to("cuda", torch.float32).contiguous() for t in flatten_carry(carry)]
        if len(tensors) != len(self._inputs):
            raise VariantError(f"{self.engine_path.name}: expected {len(self._inputs)} input tensors, got "
                               f"{len(tensors)}")
        for name, tensor in zip(self._inputs, tensors, strict=True):
            self._context.set_input_shape(name, tuple(tensor.shape))
            self._context.set_tensor_address(name, tensor.data_ptr())
        outputs = []
        for name in self._outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=torch.float32, device="cuda")
            self._context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream()
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise VariantError(f"TensorRT execution of {self.engine_path.name} failed")
        return unflatten_carry(self._out_layout, outputs)

    def extra_repr(self) -> str:
        return self.engine_path.name
