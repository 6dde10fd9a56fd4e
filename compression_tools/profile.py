"""MAC / parameter / size profiler for whole models and their blocks.

Counting convention (the one torchvision's weights metadata uses for ``meta["_ops"]``, which it labels GFLOPS
but which are multiply-accumulates): MACs = ``torch.utils.flop_counter.FlopCounterMode`` FLOPs / 2, i.e. only
the matrix-product ops (convolutions, linear / ``mm`` / ``addmm``, ``bmm`` including attention matmuls,
scaled-dot-product attention) count; element-wise ops, normalisation, pooling and activations do not. This
matches ``meta["_ops"]`` within 2 % for every torchvision classification model (test/test_profile.py; 78 of
80 within 0.5 %).

Models built by name are built on the ``meta`` device (no memory, no initialisation, no arithmetic): FLOP
counting only needs shapes, so profiling ViT-H/14 at 518 px takes well under a second. Modules whose
constructor needs real tensors (RegNet computes its widths with tensor ops) are built on the CPU and moved to
``meta``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from multidnn_sched.exceptions import ConfigError, PartitionError
from multidnn_sched.runtime.block import Block, Carry, PartitionedModel

_LOG = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE_PX = 224
"""Input side used when neither the caller nor the weights' metadata gives one."""

# Models whose pretrained configuration differs from the builder's default in a way that changes the counts:
# torchvision drops GoogLeNet's auxiliary classifiers when loading weights (``meta["num_params"]`` excludes
# them); ViT needs ``image_size`` to match the input (SWAG weights use 384 / 518 px).
_BUILD_OVERRIDES: dict[str, dict[str, Any]] = {"googlenet": {"aux_logits": False}}


@dataclass
class BlockProfile:
    """Figures of one block.

    Attributes:
        name: block name.
        params: parameter count (parameters shared with an earlier block are counted there only).
        macs: multiply-accumulates of one forward of this block on the profiled input.
        bytes: tensor payload of the block's ``state_dict`` (parameters + buffers), i.e. a safetensors file's
            size without its small JSON header.
    """

    name: str
    params: int
    macs: int
    bytes: int


@dataclass
class ModelProfile:
    """Figures of a model and of its blocks.

    Attributes:
        name: model name.
        input_shape: shape of the profiled input, ``(N, C, H, W)``.
        params: parameter count of the whole model.
        macs: multiply-accumulates of one forward of the whole model.
        bytes: tensor payload of the whole model's ``state_dict``.
        family: partitioner family (``"unpartitioned"`` when the model was profiled as one block).
        blocks: per-block figures in execution order.
    """

    name: str
    input_shape: tuple[int, ...]
    params: int
    macs: int
    bytes: int
    family: str = "unpartitioned"
    blocks: list[BlockProfile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``{"model", "input_shape", "params", "macs", "bytes", "family", "blocks": [...]}``."""
        return {
            "model": self.name,
            "input_shape": list(self.input_shape),
            "params": self.params,
            "macs": self.macs,
            "bytes": self.bytes,
            "family": self.family,
            "blocks": [asdict(b) for b in self.blocks],
        }


def count_params(module: nn.Module) -> int:
    """Number of parameters (each shared parameter once)."""
    return sum(p.numel() for p in module.parameters())


def state_dict_bytes(module: nn.Module) -> int:
    """Bytes of the tensors in ``module.state_dict()`` (shared tensors once), as they would be stored."""
    seen: set[int] = set()
    total = 0
    for tensor in module.state_dict(keep_vars=True).values():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
    return total


def count_macs(module: nn.Module | Any, carry: Carry) -> tuple[int, Carry]:
    """Multiply-accumulates of ``module(carry)`` (FlopCounterMode FLOPs / 2, see the module docstring).

    Args:
        module: any callable built from torch ops (an ``nn.Module``, a ``Block``...).
        carry: its input (a tensor or a tuple / dict of tensors), on the module's device (``meta`` works).

    Returns:
        ``(macs, output)``.
    """
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        output = module(carry)
    return int(counter.get_total_flops()) // 2, output


def default_input_shape(name: str) -> tuple[int, int, int, int]:
    """Input shape ``(1, 3, S, S)`` for a torchvision model name.

    ``S`` is the first weights' evaluation crop size (``weights.transforms().crop_size``: 224 for most, 299 for
    Inception-V3, 600 for EfficientNet-B7...), else ``meta["min_size"]``, else ``DEFAULT_IMAGE_SIZE_PX``.
    """
    import torchvision

    try:
        weights = list(torchvision.models.get_model_weights(name))
    except ValueError:
        return (1, 3, DEFAULT_IMAGE_SIZE_PX, DEFAULT_IMAGE_SIZE_PX)
    if not weights:
        return (1, 3, DEFAULT_IMAGE_SIZE_PX, DEFAULT_IMAGE_SIZE_PX)
    crop = getattr(weights[0].transforms(), "crop_size", None)
    if crop:
        size = int(crop[0])
    else:
        min_size = weights[0].meta.get("min_size", (DEFAULT_IMAGE_SIZE_PX, DEFAULT_IMAGE_SIZE_PX))
        size = max(int(min_size[0]), DEFAULT_IMAGE_SIZE_PX)
    return (1, 3, size, size)


def build_model(name: str, image_size_px: int | None = None, device: str = "meta") -> nn.Module:
    """Build a torchvision model by name, random init (no download), in eval mode.

    Args:
        name: a name of ``torchvision.models.list_models()``.
        image_size_px: input side; ViT models are built for it (they only accept their own size).
        device: ``"meta"`` (shapes only: for counting) or a real device.

    Returns:
        The model in eval mode on ``device``.
    """
    import torchvision

    if name not in torchvision.models.list_models():
        raise ConfigError(f"unknown model {name!r}: expected a torchvision model name such as 'resnet50', "
                          f"'vgg16' or 'inception_v3'")
    kwargs: dict[str, Any] = {"weights": None, **_BUILD_OVERRIDES.get(name, {})}
    if name.startswith("vit_") and image_size_px is not None:
        kwargs["image_size"] = image_size_px
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The default weight initialization", category=FutureWarning)
        if device == "meta":
            try:
                with torch.device("meta"):
                    model = torchvision.models.get_model(name, **kwargs)
            except (NotImplementedError, RuntimeError):
                # the constructor itself computes with tensors (RegNet widths): build for real, then drop data
                model = torchvision.models.get_model(name, **kwargs).to("meta")
        else:
            model = torchvision.models.get_model(name, **kwargs).to(device)
    return model.eval()


def _model_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def profile_blocks(blocks: Sequence[Block], carry: Carry) -> list[BlockProfile]:
    """Run blocks in order on ``carry`` and attribute MACs, params and bytes to each.

    Args:
        blocks: the model's blocks in execution order (``PartitionedModel.blocks``).
        carry: the model input, on the blocks' device.

    Returns:
        One ``BlockProfile`` per block.
    """
    profiles: list[BlockProfile] = []
    seen_params: set[int] = set()
    for block in blocks:
        macs, carry = count_macs(block.module, carry)
        params = 0
        for parameter in block.module.parameters():
            if id(parameter) not in seen_params:
                seen_params.add(id(parameter))
                params += parameter.numel()
        profiles.append(BlockProfile(block.name, params, macs, state_dict_bytes(block.module)))
    return profiles


def _partition(model: nn.Module, name: str) -> PartitionedModel | None:
    try:
        from multidnn_sched.runtime.partition import partition_model
    except ImportError:
        _LOG.warning("multidnn_sched.runtime.partition is not available: profiling %s as one block", name)
        return None
    try:
        return partition_model(model, name=name)
    except (PartitionError, RuntimeError, NotImplementedError, TypeError) as error:
        _LOG.warning("could not partition %s (%s): profiling it as one block", name, error)
        return None


def profile_model(
    name_or_module: str | nn.Module | PartitionedModel,
    input_shape: Sequence[int] | None = None,
    name: str | None = None,
    partition: bool = True,
) -> ModelProfile:
    """Profile a model: whole-model and per-block params, MACs and bytes for one forward.

    Args:
        name_or_module: a torchvision model name (built on ``meta``, random init), an ``nn.Module`` (run on its
            own device: move it to ``meta`` first for a free count), or an already partitioned model.
        input_shape: ``(N, C, H, W)``; default: ``default_input_shape(name)`` for a name, ``(1, 3, 224, 224)``
            otherwise.
        name: model name in the result (default: the given name, the module's class name, or
            ``PartitionedModel.name``).
        partition: cut the model into blocks with ``multidnn_sched.runtime.partition.partition_model``; when
            ``False``, unavailable or failing, the model is one block named after it.

    Returns:
        The ``ModelProfile``; for a ``PartitionedModel`` the whole-model figures are the sums over its blocks.
    """
    if isinstance(name_or_module, str):
        model_name = name or name_or_module
        shape = tuple(input_shape) if input_shape is not None else default_input_shape(name_or_module)
        module: nn.Module | None = build_model(name_or_module, image_size_px=int(shape[-1]))
    elif isinstance(name_or_module, PartitionedModel):
        model_name = name or name_or_module.name
        shape = tuple(input_shape) if input_shape is not None else (1, 3, DEFAULT_IMAGE_SIZE_PX, DEFAULT_IMAGE_SIZE_PX)
        module = None
    elif isinstance(name_or_module, nn.Module):
        model_name = name or type(name_or_module).__name__.lower()
        shape = tuple(input_shape) if input_shape is not None else (1, 3, DEFAULT_IMAGE_SIZE_PX, DEFAULT_IMAGE_SIZE_PX)
        module = name_or_module
    else:
        raise ConfigError(f"expected a model name, an nn.Module or a PartitionedModel, got "
                          f"{type(name_or_module).__name__}")
    if module is None:
        partitioned = name_or_module
        assert isinstance(partitioned, PartitionedModel)
        device = next((_model_device(b.module) for b in partitioned.blocks), torch.device("cpu"))
        blocks = profile_blocks(partitioned.blocks, torch.zeros(shape, device=device))
        return ModelProfile(model_name, shape, sum(b.params for b in blocks), sum(b.macs for b in blocks),
                            sum(b.bytes for b in blocks), partitioned.family, blocks)
    module.eval()
    example = torch.zeros(shape, device=_model_device(module))
    macs, _ = count_macs(module, example)
    profile = ModelProfile(model_name, shape, count_params(module), macs, state_dict_bytes(module))
    partitioned_model = _partition(module, model_name) if partition else None
    if partitioned_model is None:
        profile.blocks = [BlockProfile(model_name, profile.params, profile.macs, profile.bytes)]
    else:
        profile.family = partitioned_model.family
        profile.blocks = profile_blocks(partitioned_model.blocks, example)
    return profile
