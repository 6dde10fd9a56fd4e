"""Tucker-2 decomposition of k×k convolutions (TensorLy ``partial_tucker`` over the channel modes).

A convolution weight ``W [C_out, C_in, kh, kw]`` is approximated as ``core ×₀ U_out ×₁ U_in`` with
``core [r_out, r_in, kh, kw]``, ``U_out [C_out, r_out]``, ``U_in [C_in, r_in]``, which runs as three
convolutions: 1×1 ``C_in → r_in`` (``U_inᵀ``), kh×kw ``r_in → r_out`` (the core; stride, padding, dilation and
padding mode move here) and 1×1 ``r_out → C_out`` (``U_out``, carrying the original bias).

Grouped convolutions (``groups = g > 1``, e.g. RegNet / ResNeXt) are decomposed per group with the same ranks
for every group, so the three replacement convolutions are grouped with ``g`` as well. Depthwise convolutions
(one input channel per group), 1×1 convolutions, and convolutions with fewer than ``min_channels`` input or
output channels per group are skipped with a warning that names them.

Rank rules (``select_ranks``):

- ``"macs"`` (default): a compression target. Both ranks are the same fraction ρ of their channel counts
  (``r_out ≈ ρ·C_out``, ``r_in ≈ ρ·C_in``, per group), and ρ is the largest value for which the decomposed
  layer needs at most ``mac_fraction`` (default ``DEFAULT_MAC_FRACTION`` = 0.15) of the layer's original
  multiply-accumulates at its input / output resolution. It needs no weights, so it is the rule that gives the
  same, predictable cost on random-init and trained models; it says nothing about accuracy, which
  fine-tuning or the per-variant accuracy measurement has to establish.
- ``"vbmf"``: empirical variational Bayesian matrix factorisation (Nakajima et al., JMLR 2013 / 2015) on the
  mode-0 (``C_out × C_in·kh·kw``) and mode-1 (``C_in × C_out·kh·kw``) unfoldings: the noise variance is
  estimated by minimising the EVB free energy, and the rank is the number of singular values above the EVB
  threshold. On trained weights this finds the signal rank; on random-init weights (pure noise) it finds
  (almost) nothing and the rank floors at 1, which is a degenerate but honest answer.
- ``"energy"``: the smallest rank whose singular values keep ``energy`` of the unfolding's squared Frobenius
  norm. On random-init weights the spectrum is flat, so 0.9 keeps most of the rank and saves little.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from compression_tools.profile import build_model, count_macs, default_input_shape
from multidnn_sched.exceptions import ConfigError

_LOG = logging.getLogger(__name__)

RANK_RULES = ("macs", "vbmf", "energy")
DEFAULT_RANK_RULE = "macs"
DEFAULT_MAC_FRACTION = 0.15
"""Share of a layer's MACs its Tucker-2 replacement may keep under the ``"macs"`` rule. With it, the
whole-model MAC reduction (architecture only, torchvision's input sizes) is VGG16 84.1 %, ResNet152 42.8 %,
InceptionV3 66.3 %, RegNetY-32GF 42.1 % (test/test_tucker.py); 0.20 would miss VGG16's 81 % target (79.1 %)."""
DEFAULT_MIN_CHANNELS = 16
"""Convolutions with fewer input or output channels per group are left alone (e.g. the RGB stem)."""
DEFAULT_ENERGY = 0.9
HOOI_MAX_ITERATIONS = 3
"""``partial_tucker`` (HOOI) iterations from its SVD initialisation. Each iteration costs two SVDs of the
unfoldings (~0.6 s for a 256×256×3×3 weight on one loaded core, measured); the relative fit error moved by
< 1 % after the first iterations on the layers tried, so more iterations are not worth their time here."""


@dataclass
class TuckerLayer:
    """One decomposed convolution.

    Attributes:
        name: module path in the model, e.g. ``"features.10"``.
        shape: original weight shape ``[C_out, C_in/groups, kh, kw]``.
        groups: the convolution's groups.
        ranks: ``(r_out, r_in)`` per group.
        macs_before: MACs of the original convolution at the profiled input.
        macs_after: MACs of the three replacement convolutions.
    """

    name: str
    shape: list[int]
    groups: int
    ranks: tuple[int, int]
    macs_before: int
    macs_after: int


@dataclass
class TuckerReport:
    """Result of ``decompose_model``.

    Attributes:
        rank_rule: the rule used.
        input_shape: shape of the input the MACs are counted for.
        macs_before: whole-model MACs before.
        macs_after: whole-model MACs after.
        layers: decomposed convolutions.
        skipped: ``{"name", "reason"}`` for each convolution left alone.
    """

    rank_rule: str
    input_shape: tuple[int, ...]
    macs_before: int
    macs_after: int
    layers: list[TuckerLayer] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def mac_reduction(self) -> float:
        """Fraction of whole-model MACs removed, in [0, 1]."""
        return 1.0 - self.macs_after / self.macs_before if self.macs_before else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        result = asdict(self)
        result["input_shape"] = list(self.input_shape)
        result["mac_reduction"] = self.mac_reduction
        for row in result["layers"]:
            row["ranks"] = list(row["ranks"])
        return result


# -------------------------------------------------------------------------------------------- rank rules


def _evb_tau(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Positive root of τ² − (x − 1 − α)τ + α = 0: the EVB posterior's shrinkage variable for x ≥ x̄."""
    b = x - (1.0 + alpha)
    return 0.5 * (b + torch.sqrt(torch.clamp(b * b - 4.0 * alpha, min=0.0)))


def _evb_tau_bar(alpha: float) -> float:
    """Zero of Ξ(τ; α) = Φ(τ) + Φ(τ/α), Φ(z) = ln(z + 1)/z − 1/2 (Nakajima et al. 2013, Theorem 2)."""
    from scipy.optimize import brentq

    def phi(z: float) -> float:
        return math.log1p(z) / z - 0.5

    # Φ decreases from 1/2 (z→0) to −1/2 (z→∞); Φ(z) = 0 near z ≈ 2.513, so the root lies in this bracket.
    return float(brentq(lambda t: phi(t) + phi(t / alpha), 1e-6, 1e3 * max(1.0, alpha)))


def evbmf_rank(matrix: torch.Tensor) -> int:
    """Rank of ``matrix`` estimated by empirical VB matrix factorisation with unknown noise variance.

    The free energy per entry, as a function of the noise variance σ² (Nakajima et al. 2015), is
    ``Σ_h ψ(x_h)`` with ``x_h = γ_h² / (M σ²)``, ``ψ(x) = x − ln x`` below the threshold ``x̄ = (1+τ̄)(1+α/τ̄)``
    and ``ψ(x) = x − ln x + ln(τ+1) + α ln(τ/α+1) − τ`` above it (``τ = τ(x; α)``), for an ``L × M`` matrix with
    ``L ≤ M``, ``α = L/M`` and singular values ``γ_h``. σ² is minimised over the range where at most
    ``⌈L/(1+α)⌉ − 1`` components can be signal; the rank is ``#{γ_h > sqrt(M σ² x̄)}``.

    Args:
        matrix: a 2-D tensor.

    Returns:
        The estimated rank, in ``[0, min(matrix.shape)]``.
    """
    from scipy.optimize import minimize_scalar

    values = matrix.detach().to(torch.float64).cpu()
    if values.shape[0] > values.shape[1]:
        values = values.T
    rows, cols = values.shape
    gammas = torch.linalg.svdvals(values)
    alpha = rows / cols
    tau_bar = _evb_tau_bar(alpha)
    x_bar = (1.0 + tau_bar) * (1.0 + alpha / tau_bar)
    squared = gammas**2
    max_signal = max(0, min(math.ceil(rows / (1.0 + alpha)) - 1, rows - 1))
    upper = float(squared.sum()) / (rows * cols)
    lower = max(float(squared[max_signal]) / (cols * x_bar), float(squared[max_signal:].mean()) / cols)
    if not 0.0 < lower < upper:
        return 0

    def free_energy(sigma2: float) -> float:
        x = squared / (cols * sigma2)
        above = x > x_bar
        energy = torch.sum(x - torch.log(x))
        if bool(above.any()):
            tau = _evb_tau(x[above], alpha)
            energy = energy + torch.sum(torch.log1p(tau) + alpha * torch.log1p(tau / alpha) - tau)
        return float(energy)

    sigma2 = float(minimize_scalar(free_energy, bounds=(lower, upper), method="bounded").x)
    threshold = math.sqrt(cols * sigma2 * x_bar)
    return int((gammas > threshold).sum())


def _energy_rank(matrix: torch.Tensor, energy: float) -> int:
    squared = torch.linalg.svdvals(matrix.detach().to(torch.float64).cpu()) ** 2
    cumulative = torch.cumsum(squared, 0) / squared.sum()
    return int(torch.searchsorted(cumulative, torch.tensor([energy - 1e-12], dtype=cumulative.dtype))) + 1


def tucker2_macs_per_pixel(c_out: int, c_in: int, kernel_area: int, ranks: tuple[int, int],
                           in_pixels_per_out_pixel: float) -> float:
    """MACs per output pixel of one group's Tucker-2 replacement (1×1 in at input resolution, core, 1×1 out)."""
    r_out, r_in = ranks
    return in_pixels_per_out_pixel * c_in * r_in + r_in * r_out * kernel_area + r_out * c_out


def _macs_rule_ranks(c_out: int, c_in: int, kernel_area: int, mac_fraction: float,
                     in_pixels_per_out_pixel: float) -> tuple[int, int]:
    budget = mac_fraction * c_out * c_in * kernel_area
    best = (1, 1)
    for r_out in range(1, c_out + 1):  # cost grows with r_out: keep the last one within budget
        r_in = max(1, min(c_in, round(r_out * c_in / c_out)))
        if tucker2_macs_per_pixel(c_out, c_in, kernel_area, (r_out, r_in), in_pixels_per_out_pixel) > budget:
            break
        best = (r_out, r_in)
    return best


def select_ranks(
    weight: torch.Tensor,
    rule: str = DEFAULT_RANK_RULE,
    energy: float = DEFAULT_ENERGY,
    mac_fraction: float = DEFAULT_MAC_FRACTION,
    in_pixels_per_out_pixel: float = 1.0,
    groups: int = 1,
) -> tuple[int, int]:
    """Choose Tucker-2 ranks ``(r_out, r_in)`` (per group) for a convolution weight.

    Args:
        weight: ``[C_out, C_in/groups, kh, kw]``; for ``"macs"`` only its shape is used (``meta`` is fine).
        rule: ``"macs"``, ``"vbmf"`` or ``"energy"`` (see the module docstring).
        energy: kept share of squared singular values for ``"energy"``, in (0, 1].
        mac_fraction: share of the layer's MACs the replacement may keep for ``"macs"``, in (0, 1].
        in_pixels_per_out_pixel: input pixels per output pixel (stride², ``"macs"`` only).
        groups: the convolution's groups; weight-based rules take the largest rank over the groups.

    Returns:
        ``(r_out, r_in)``, each at least 1 and at most the per-group channel count.
    """
    if rule not in RANK_RULES:
        raise ConfigError(f"unknown rank rule {rule!r}: expected one of {RANK_RULES}")
    c_out_total, c_in, kh, kw = weight.shape
    c_out = c_out_total // groups
    if rule == "macs":
        if not 0.0 < mac_fraction <= 1.0:
            raise ConfigError(f"mac_fraction must be in (0, 1], got {mac_fraction}")
        return _macs_rule_ranks(c_out, c_in, kh * kw, mac_fraction, in_pixels_per_out_pixel)
    if weight.device.type == "meta":
        raise ConfigError(f"rank rule {rule!r} needs real weights, got a weight on the meta device; use 'macs'")
    if rule == "energy" and not 0.0 < energy <= 1.0:
        raise ConfigError(f"energy must be in (0, 1], got {energy}")
    r_out, r_in = 1, 1
    for g in range(groups):
        w = weight[g * c_out:(g + 1) * c_out]
        mode0 = w.reshape(c_out, -1)
        mode1 = w.transpose(0, 1).reshape(c_in, -1)
        if rule == "vbmf":
            r_out, r_in = max(r_out, evbmf_rank(mode0)), max(r_in, evbmf_rank(mode1))
        else:
            r_out, r_in = max(r_out, _energy_rank(mode0, energy)), max(r_in, _energy_rank(mode1, energy))
    return min(r_out, c_out), min(r_in, c_in)


# ---------------------------------------------------------------------------------------- decomposition


def _unsupported_reason(conv: nn.Conv2d, min_channels: int) -> str | None:
    c_in_group = conv.in_channels // conv.groups
    c_out_group = conv.out_channels // conv.groups
    if conv.kernel_size == (1, 1):
        return "1x1 convolution (nothing to decompose)"
    if c_in_group == 1:
        return "depthwise convolution (one input channel per group)"
    if min(c_in_group, c_out_group) < min_channels:
        return f"fewer than min_channels={min_channels} channels per group ({c_out_group} out, {c_in_group} in)"
    return None


def decompose_conv(conv: nn.Conv2d, ranks: tuple[int, int]) -> nn.Sequential:
    """Replace a k×k convolution by its Tucker-2 form: 1×1 in → k×k core → 1×1 out.

    Args:
        conv: the convolution (any groups, stride, padding, dilation, padding mode, with or without bias).
            On the ``meta`` device only the shapes are built (no factors are computed).
        ranks: ``(r_out, r_in)`` per group; clipped to the per-group channel counts.

    Returns:
        ``nn.Sequential(in_1x1, core, out_1x1)`` on the conv's device and dtype, same input / output shapes.
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected an nn.Conv2d, got {type(conv).__name__}")
    groups = conv.groups
    c_out, c_in = conv.out_channels // groups, conv.in_channels // groups
    r_out, r_in = min(int(ranks[0]), c_out), min(int(ranks[1]), c_in)
    if r_out < 1 or r_in < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    weight = conv.weight
    factory = {"device": weight.device, "dtype": weight.dtype}
    first = nn.Conv2d(conv.in_channels, groups * r_in, 1, groups=groups, bias=False, **factory)
    core = nn.Conv2d(groups * r_in, groups * r_out, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     dilation=conv.dilation, groups=groups, bias=False, padding_mode=conv.padding_mode, **factory)
    last = nn.Conv2d(groups * r_out, conv.out_channels, 1, groups=groups, bias=conv.bias is not None, **factory)
    if weight.device.type != "meta":
        import tensorly as tl
        from tensorly.decomposition import partial_tucker

        with torch.no_grad(), tl.backend_context("pytorch"):
            for g in range(groups):
                w = weight[g * c_out:(g + 1) * c_out].detach()
                (core_g, (u_out, u_in)), _ = partial_tucker(w, rank=[r_out, r_in], modes=[0, 1], init="svd",
                                                             n_iter_max=HOOI_MAX_ITERATIONS)
                first.weight[g * r_in:(g + 1) * r_in] = u_in.T[:, :, None, None].to(weight.dtype)
                core.weight[g * r_out:(g + 1) * r_out] = core_g.to(weight.dtype)
                last.weight[g * c_out:(g + 1) * c_out] = u_out[:, :, None, None].to(weight.dtype)
            if conv.bias is not None:
                last.bias.copy_(conv.bias)
    return nn.Sequential(first, core, last)


def _conv_shapes(model: nn.Module, example: torch.Tensor) -> tuple[int, dict[str, tuple[int, int, int]]]:
    """Whole-model MACs and, per Conv2d, (input pixels, output pixels, batch) seen in one forward."""
    shapes: dict[str, tuple[int, int, int]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor, key: str = name) -> None:
                x = inputs[0]
                shapes[key] = (x.shape[-2] * x.shape[-1], output.shape[-2] * output.shape[-1], x.shape[0])
            handles.append(module.register_forward_hook(hook))
    try:
        macs, _ = count_macs(model, example)
    finally:
        for handle in handles:
            handle.remove()
    return macs, shapes


def decompose_model(
    model: nn.Module,
    rank_rule: str = DEFAULT_RANK_RULE,
    min_channels: int = DEFAULT_MIN_CHANNELS,
    skip: Sequence[str] = (),
    input_shape: Sequence[int] = (1, 3, 224, 224),
    mac_fraction: float = DEFAULT_MAC_FRACTION,
    energy: float = DEFAULT_ENERGY,
) -> tuple[nn.Module, TuckerReport]:
    """Replace every eligible k×k convolution of ``model`` by its Tucker-2 form, in place.

    Args:
        model: the model (eval mode is set). On the ``meta`` device only the architecture changes (for MAC
            figures with the ``"macs"`` rule); on a real device the factors are computed.
        rank_rule: ``"macs"`` (default), ``"vbmf"`` or ``"energy"``.
        min_channels: skip convolutions with fewer input or output channels per group.
        skip: module names (as in ``named_modules``) to leave alone.
        input_shape: input used to find each convolution's resolution and to count MACs.
        mac_fraction: see ``select_ranks``.
        energy: see ``select_ranks``.

    Returns:
        ``(model, report)``: the same model object, modified; the report lists decomposed and skipped layers and
        whole-model MACs before and after (after = before − the per-layer savings, counted analytically).
    """
    if rank_rule not in RANK_RULES:
        raise ConfigError(f"unknown rank rule {rank_rule!r}: expected one of {RANK_RULES}")
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    macs_before, shapes = _conv_shapes(model, torch.zeros(tuple(input_shape), device=device))
    report = TuckerReport(rank_rule, tuple(input_shape), macs_before, macs_before)
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for name, conv in convs:
        reason = "listed in skip" if name in skip else _unsupported_reason(conv, min_channels)
        if reason is None and name not in shapes:
            reason = "not run in the forward pass"
        if reason is not None:
            if name not in skip:
                _LOG.warning("tucker: skipping %s: %s", name, reason)
            report.skipped.append({"name": name, "reason": reason})
            continue
        in_pixels, out_pixels, batch = shapes[name]
        c_out, c_in, kh, kw = conv.weight.shape
        c_out_group = c_out // conv.groups
        ranks = select_ranks(conv.weight, rank_rule, energy=energy, mac_fraction=mac_fraction,
                             in_pixels_per_out_pixel=in_pixels / out_pixels, groups=conv.groups)
        before = batch * out_pixels * c_out * c_in * kh * kw
        after = round(batch * out_pixels * conv.groups * tucker2_macs_per_pixel(
            c_out_group, c_in, kh * kw, ranks, in_pixels / out_pixels))
        if after >= before:
            reason = f"ranks {ranks} save no MACs ({after} >= {before})"
            _LOG.warning("tucker: skipping %s: %s", name, reason)
            report.skipped.append({"name": name, "reason": reason})
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, decompose_conv(conv, ranks))
        report.layers.append(TuckerLayer(name, [c_out, c_in, kh, kw], conv.groups, ranks, before, after))
        report.macs_after -= before - after
    return model, report


def decompose_report(
    model_name: str,
    rank_rule: str = DEFAULT_RANK_RULE,
    input_shape: Sequence[int] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Decompose a torchvision model by name (random init) and return the report as a dict (for the CLI).

    Args:
        model_name: a torchvision model name, e.g. ``"vgg16"``.
        rank_rule: ``"macs"`` builds the model on ``meta`` (architecture only, seconds even for RegNetY-32GF);
            ``"vbmf"`` / ``"energy"`` need weights, so the model is built on the CPU with random init and
            decomposed for real (minutes for large models).
        input_shape: default ``profile.default_input_shape(model_name)``.
        **options: passed to ``decompose_model`` (``min_channels``, ``skip``, ``mac_fraction``, ``energy``).

    Returns:
        ``TuckerReport.to_dict()`` plus ``"model": model_name``.
    """
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(model_name)
    device = "meta" if rank_rule == "macs" else "cpu"
    model = build_model(model_name, image_size_px=int(shape[-1]), device=device)
    _, report = decompose_model(model, rank_rule=rank_rule, input_shape=shape, **options)
    return {"model": model_name, **report.to_dict()}
