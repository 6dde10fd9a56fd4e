"""Kernel choice for serving: 1x1 convolutions on oneDNN when PyTorch's single-thread heuristic would not.

PyTorch picks the CPU kernel of every ``conv2d`` call with a heuristic (``ConvParams::use_mkldnn``). Since
PyTorch 1.8 (pull requests #46675 and #52909) it sends a 1x1, stride-1 convolution with a batch below 16 to
the native im2col + GEMM kernel when the calling thread has **one** intra-op thread, on the grounds that the
native kernel was faster single-threaded at the time, and to oneDNN with two threads or more. Our partitioned
CPU pool runs every block with one intra-op thread (``device.partitioned_cpu_pool``), and so does the bench's
``threads`` mode, so every pointwise convolution of a crops model (RegNet and ResNet bottlenecks, MobileNet,
the 1x1 ends of a Tucker chain) takes that path. Measured here (torch 2.14.1, 2-core VM, 2026-12-07, reference
convolution 1.8-3.7 ms; the default classifier, whole forward at 96x96, medians of 5 interleaved rounds,
one intra-op thread): 4 crops 62.6 ms native vs 45.1 ms on oneDNN (1.39x), 8 crops 94.8 vs 51.8 ms (1.83x);
at 16 and 32 crops both paths are oneDNN already (110 / 118, 230 / 229 ms); one crop on oneDNN was SLOWER
(27.1 vs 34.0 ms), which is the heuristic's other clause (batch 1 with a small map stays native at any thread
count) — kept here. With two threads nothing changes (the heuristic already picks oneDNN; 0.96-0.99x, noise).
The classifier's ``block4`` alone, 8 crops: 48-52 ms at one thread against 13 ms at two.

:func:`use_onednn_pointwise` turns the eligible ``nn.Conv2d`` modules of a model into
:class:`OneDnnPointwiseConv2d` (same parameters, same ``state_dict`` keys) whose forward calls oneDNN directly
exactly where the heuristic refuses it for the thread count alone: CPU, float32, no autograd, one intra-op
thread, batch 2-15 or a map of more than 20480 values. Everywhere else (training, two or more threads, CUDA,
tracing, ONNX export, ``torch.compile``) it is the plain ``nn.Conv2d`` forward. Outputs agree with the native
kernel to float rounding (max abs difference 3.6e-7 on the classifier's logits). Apply it only to models being
served — after any compression or export, never to a model a compression tool will rewrite.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NATIVE_BATCH_LIMIT = 16
"""PyTorch's own limit: from a batch of 16 on, a 1x1 convolution goes to oneDNN at any thread count."""

NATIVE_SMALL_INPUT_NUMEL = 20480
"""PyTorch's own rule for a batch of 1: a 1x1 convolution over at most this many input values stays native at
any thread count (measured above: one crop ran slower on oneDNN), so this module keeps it native too."""


class OneDnnPointwiseConv2d(nn.Conv2d):
    """A 1x1, stride-1, unpadded ``nn.Conv2d`` that runs on oneDNN with one intra-op thread (module docstring)."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Conv2d's own parameter name
        if _onednn_applies(input, self.weight):
            return torch.ops.aten.mkldnn_convolution(input, self.weight, self.bias, self.padding, self.stride,
                                                     self.dilation, self.groups)
        return super().forward(input)


def _onednn_applies(x: Tensor, weight: Tensor) -> bool:
    if (x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32 or x.dim() != 4
            or torch.is_grad_enabled() or torch.get_num_threads() != 1):
        return False
    batch = x.shape[0]
    if batch >= NATIVE_BATCH_LIMIT or not (batch > 1 or x.numel() > NATIVE_SMALL_INPUT_NUMEL):
        return False  # PyTorch already picks oneDNN, or the native kernel is the faster one
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return False
    if torch.compiler.is_compiling() or not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.backends.mkldnn.enabled)


def is_eligible(module: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` (not a subclass: quantized / QAT / user types keep their own forward) that is a
    1x1, stride-1, dilation-1, unpadded, zero-padding-mode convolution with float32 weights."""
    return (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.stride == (1, 1)
            and module.dilation == (1, 1) and module.padding in ((0, 0), "valid")
            and module.padding_mode == "zeros" and module.weight.dtype == torch.float32)


def use_onednn_pointwise(model: nn.Module) -> int:
    """Turn every eligible 1x1 convolution of ``model`` (in place) into :class:`OneDnnPointwiseConv2d`; returns
    how many. Parameters, buffers and ``state_dict`` keys are unchanged (the class of each module changes)."""
    count = 0
    for module in model.modules():
        if is_eligible(module):
            module.__class__ = OneDnnPointwiseConv2d
            if module.padding == "valid":
                module.padding = (0, 0)  # mkldnn_convolution takes the explicit padding
            count += 1
    return count


def uses_onednn_pointwise(model: nn.Module) -> bool:
    """Whether any module of ``model`` is a :class:`OneDnnPointwiseConv2d` (a variant rebuilt on top of such a
    block follows it)."""
    return any(isinstance(m, OneDnnPointwiseConv2d) for m in model.modules())


def restore_native_pointwise(model: nn.Module) -> int:
    """Undo :func:`use_onednn_pointwise` (in place; e.g. before handing a served model to a compression tool);
    returns how many modules were turned back into ``nn.Conv2d``."""
    count = 0
    for module in model.modules():
        if type(module) is OneDnnPointwiseConv2d:
            module.__class__ = nn.Conv2d
            count += 1
    return count
