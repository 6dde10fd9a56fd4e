"""Kernel choice for serving: 1x1 convolutions over tiny maps on oneDNN where PyTorch's one-thread rule says native.

PyTorch picks the CPU kernel of every ``conv2d`` call with a heuristic (``ConvParams::use_mkldnn``). Since
PyTorch 1.8 (pull requests #46675 and #52909) it sends a 1x1, stride-1 convolution with a batch below 16 to
the native im2col + GEMM kernel when the process's torch thread count is **one**, and to oneDNN with two or
more. Our partitioned CPU pool runs every block with one intra-op thread (``device.partitioned_cpu_pool``), and
so does the bench's ``threads`` mode. The native kernel is fine over most maps, but pathological over tiny ones.
Measured here (torch 2.14.1, 2-core VM, 2026-12-07, reference convolution 1.8-3.7 ms, one thread, medians of 7
loops; the sweeps are in docs/runtime.md, "Kernels"):

* maps of 2x2 / 2x3 / 3x3 values: native ~2.5 G multiply-adds/s against ~20 G for oneDNN, which pays a fixed
  ~100-200 us per call here: 208->208 channels at 3x3, 8 crops, 1231 us native vs 222 us (5.5x); 832->208
  4896 vs 658 us (7.4x); 128->128 at 3x3, 2 crops 123 vs 135 us (0.91x: below the fixed cost);
* maps of 1x1 and of 16 values or more: native as fast or faster (208->208 at 4x4, 8 crops 249 vs 321 us;
  at 8x8 566 vs 672 us; at 24x24 oneDNN was 3x slower, its layout reorders); 10-15 values: mixed
  (3x4 0.94-1.30x, 2x7 0.87-1.34x, 3x5 1.16-1.69x), left native.

So oneDNN is taken for a 1x1 convolution over at most :data:`SMALL_MAP_MAX_VALUES` values per channel whose
work is at least :data:`ONEDNN_MIN_MACS` (the break-even of its fixed cost: the 0.91x case above is 295 k,
the first clear win 590 k), at one thread, batch below 16, CPU float32, no autograd. Everywhere else
(training, two or more threads, CUDA, tracing, ONNX export, ``torch.compile``) it is the plain ``nn.Conv2d``
forward. The default classifier (RegNet: its last stage's bottleneck 1x1 convolutions run over 3x3 maps) is the
model this changes; outputs agree with the native kernel to float rounding.

:func:`use_onednn_pointwise` turns the eligible ``nn.Conv2d`` modules of a model into
:class:`OneDnnPointwiseConv2d` (same parameters, same ``state_dict`` keys). Apply it only to models being
served — after any compression or export, never to a model a compression tool will rewrite.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NATIVE_BATCH_LIMIT = 16
"""PyTorch's own limit: from a batch of 16 on, a 1x1 convolution goes to oneDNN at any thread count."""

SMALL_MAP_MAX_VALUES = 9
"""Largest map (height x width) where the native one-thread kernel was measured 1.5-7.4x slower than oneDNN
(2x2, 2x3, 3x3; module docstring); from 10 to 15 values the measurements were mixed, from 16 native won."""

ONEDNN_MIN_MACS = 430_000
"""Least work (batch x map x in x out channels / groups) for oneDNN's fixed cost per call (~100-200 us here)
to pay over the native kernel's ~2.5 G multiply-adds/s on small maps: the break-even of the measured cases
(295 k: 0.74-0.91x, 346-389 k: 0.96-1.14x, 590 k: 1.56x)."""


class OneDnnPointwiseConv2d(nn.Conv2d):
    """A 1x1, stride-1, unpadded ``nn.Conv2d`` that runs on oneDNN over tiny maps at one intra-op thread (see
    the module docstring)."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Conv2d's own parameter name
        # The thread count first: with two or more threads (PyTorch picks oneDNN itself) this is the only check
        # a call pays.
        if torch.get_num_threads() == 1 and _onednn_applies(input, self.weight, self.groups):
            return torch.ops.aten.mkldnn_convolution(input, self.weight, self.bias, self.padding, self.stride,
                                                     self.dilation, self.groups)
        return super().forward(input)


_MKLDNN_BUILT = torch.backends.mkldnn.is_available()


def _onednn_applies(x: Tensor, weight: Tensor, groups: int) -> bool:
    """The rest of the rule (the caller checked the thread count)."""
    if x.dim() != 4 or torch.is_grad_enabled():
        return False
    batch, channels, height, width = x.shape
    if batch >= NATIVE_BATCH_LIMIT or height * width > SMALL_MAP_MAX_VALUES:
        return False  # PyTorch picks oneDNN itself, or the native kernel is as fast
    if batch * height * width * channels * weight.shape[0] // groups < ONEDNN_MIN_MACS:
        return False  # oneDNN's fixed cost per call would not pay
    if not x.is_cpu or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return False
    if torch.compiler.is_compiling() or not _MKLDNN_BUILT:
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
