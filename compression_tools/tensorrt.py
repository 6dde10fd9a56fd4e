"""TensorRT engines per block (GPU only): fp16 from the fp32 ONNX export, int8 from the QDQ int8 ONNX.

TensorRT is imported lazily; without it (or without a CUDA GPU) every entry point raises
:class:`VariantError` with an install hint. Int8 engines use *explicit* quantization: the QDQ ONNX written by
:func:`compression_tools.quantize.quantize_block_ort_int8` already carries the calibrated scales, so no
TensorRT calibrator (deprecated since TensorRT 10) is needed and both backends share one calibration.

Engines are only valid for the TensorRT version and GPU they were built on, so the engine cache key is
``sha256(onnx file) + precision + TensorRT version + GPU name + compute capability``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from multidnn_sched.exceptions import CheckpointError, ConfigError, VariantError
from multidnn_sched.runtime.backends.trt import TrtBlock, gpu_identity, import_tensorrt  # noqa: F401 - re-exported

from .manifest import sha256_file
from .quantize import CARRY_METADATA_KEY, flatten_carry, unflatten_carry  # noqa: F401

LOGGER = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp16", "int8")
DEFAULT_WORKSPACE_MIB = 1024
MAX_BATCH = 32
"""Upper bound of the dynamic batch dimension in the engines' optimisation profile (classifier crops)."""


def engine_cache_key(onnx_path: Path, precision: str, trt_version: str, gpu: str) -> str:
    """Return the cache key (hex, 24 chars) of an engine built from ``onnx_path`` on ``gpu`` with ``trt_version``."""
    text = json.dumps([sha256_file(onnx_path), precision, trt_version, gpu, MAX_BATCH])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _carry_layout(onnx_path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if CARRY_METADATA_KEY not in meta:
        raise CheckpointError(f"ONNX file {onnx_path} lacks the {CARRY_METADATA_KEY!r} metadata entry")
    return json.loads(meta[CARRY_METADATA_KEY])


def build_engine(
    onnx_path: Path,
    cache_dir: Path,
    precision: str = "fp16",
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
) -> Path:
    """Build (or reuse from ``cache_dir``) a TensorRT engine for one block; returns the ``.engine`` path.

    Args:
        onnx_path: fp32 ONNX (for ``"fp16"``) or QDQ int8 ONNX (for ``"int8"``) of the block.
        cache_dir: engine cache; file name ``<engine_cache_key>.engine`` with a ``.json`` sidecar (carry layout,
            precision, TensorRT version, GPU).
        precision: ``"fp16"`` or ``"int8"``.
        workspace_mib: builder workspace limit.

    Raises:
        ConfigError: unknown precision.
        VariantError: TensorRT missing, no GPU, or the ONNX graph fails to parse / build.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"expected TensorRT precision in {PRECISIONS}, got {precision!r}")
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    key = engine_cache_key(onnx_path, precision, trt.__version__, gpu_identity())
    engine_path = Path(cache_dir) / f"{key}.engine"
    if engine_path.is_file():
        LOGGER.info("engine cache hit %s for %s (%s)", engine_path.name, onnx_path.name, precision)
        return engine_path
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT >= 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise VariantError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)[1:]
        if any(d < 0 for d in dims):
            raise VariantError(f"{onnx_path}: only the batch dimension may be dynamic, input {tensor.name} has "
                               f"shape {tuple(tensor.shape)}")
        profile.set_shape(tensor.name, [1, *dims], [1, *dims], [MAX_BATCH, *dims])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise VariantError(f"TensorRT failed to build a {precision} engine from {onnx_path} (see its log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    sidecar = {"layout": _carry_layout(onnx_path), "precision": precision, "tensorrt": trt.__version__,
               "gpu": gpu_identity(), "onnx_sha256": sha256_file(onnx_path)}
    engine_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
    return engine_path


