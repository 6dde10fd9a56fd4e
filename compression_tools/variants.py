"""Build the variants of a partitioned model's blocks: single techniques and combinations, measured.

A variant *kind* is a ``+``-joined recipe: an optional torch stage (``prune<pct>``, ``unstructured<pct>``,
``tucker``), an optional ``ft`` (short block-level distillation from the original block on scene carries),
then an optional backend (``int8`` = ORT static int8, ``ort_fp32``, ``trt_fp16``, ``trt_int8``). Examples:
``prune50``, ``int8``, ``prune50+ft+int8``, ``tucker+int8``, ``unstructured50``, ``trt_fp16``.

Every variant is saved (see :mod:`compression_tools.manifest`), then measured like the runtime runs it: solo
latency (20th percentile, fixed thread count), params, MACs, file bytes, and the accuracy of the whole model with only
this block swapped (task metric when an ``accuracy_fn`` is given, else output fidelity against the original).
"""

from __future__ import annotations

import copy
import logging
import re
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multidnn_sched.exceptions import ConfigError, VariantError
from multidnn_sched.runtime.block import Carry, PartitionedModel

from .manifest import VariantRecord, save_variant, sha256_file
from .prune import count_nonzero_params, count_params, prune_block, prune_unstructured
from .quantize import OrtBlock, export_onnx, flatten_carry, quantize_block_ort_int8, unflatten_carry

LOGGER = logging.getLogger(__name__)

AccuracyFn = Callable[[Callable[[Carry], Carry]], float]
"""Runs a whole-model callable (``input carry -> output``) on evaluation data and returns its task metric."""

DEFAULT_KINDS: tuple[str, ...] = ("prune50", "int8", "prune50+int8", "prune50+ft+int8")
BACKENDS: tuple[str, ...] = ("int8", "ort_fp32", "trt_fp16", "trt_int8")
_TORCH_STAGE = re.compile(r"^(prune|unstructured)(\d{1,2})$|^tucker$")


@dataclass
class Recipe:
    """A parsed variant kind.

    Attributes:
        kind: the kind string, also the variant name.
        stage: ``"prune"``, ``"unstructured"``, ``"tucker"`` or ``""`` (none).
        ratio: pruning ratio for ``prune`` / ``unstructured``.
        finetune: run block-level distillation after the torch stage.
        backend: one of :data:`BACKENDS` or ``""`` (torch fp32 eager, safetensors file).
    """

    kind: str
    stage: str = ""
    ratio: float = 0.0
    finetune: bool = False
    backend: str = ""


def parse_kind(kind: str) -> Recipe:
    """Parse a variant kind such as ``"prune50+ft+int8"``.

    Raises:
        ConfigError: an unknown part, or parts in the wrong order.
    """
    recipe = Recipe(kind=kind)
    parts = kind.split("+")
    for position, part in enumerate(parts):
        match = _TORCH_STAGE.match(part)
        if match and position == 0:
            recipe.stage = match.group(1) or "tucker"
            recipe.ratio = int(match.group(2)) / 100.0 if match.group(2) else 0.0
        elif part == "ft" and not recipe.backend and not recipe.finetune:
            recipe.finetune = True
        elif part in BACKENDS and position == len(parts) - 1:
            recipe.backend = part
        else:
            raise ConfigError(f"variant kind {kind!r}: unexpected part {part!r}; expected [prune<pct>|"
                              f"unstructured<pct>|tucker][+ft][+{'|'.join(BACKENDS)}]")
    if not (recipe.stage or recipe.backend):
        raise ConfigError(f"variant kind {kind!r} changes nothing")
    return recipe


# --- data: the block's input carries on scene frames ------------------------------------------------------

def block_input_carries(pm: PartitionedModel, block_name: str, inputs: Sequence[Carry]) -> list[Carry]:
    """Run the blocks before ``block_name`` on each model input; returns the carries ``block_name`` receives."""
    index = pm.block_names.index(pm.block(block_name).name)
    carries: list[Carry] = []
    with torch.no_grad():
        for carry in inputs:
            for block in pm.blocks[:index]:
                carry = block(carry)
            carries.append(carry)
    return carries


def batch_carries(carries: Sequence[Carry]) -> Carry:
    """Concatenate carries of the same layout along dim 0 (one batch)."""
    from .quantize import carry_layout

    layout = carry_layout(carries[0])
    columns = zip(*[flatten_carry(c) for c in carries], strict=True)
    return unflatten_carry(layout, [torch.cat(list(col), dim=0) for col in columns])


def swapped(pm: PartitionedModel, block_name: str, module: Callable[[Carry], Carry]) -> Callable[[Carry], Carry]:
    """Return ``input -> output`` of ``pm`` with only ``block_name`` replaced by ``module``."""
    target = pm.block(block_name)

    def run(carry: Carry) -> Carry:
        with torch.no_grad():
            for block in pm.blocks:
                carry = module(carry) if block is target else block(carry)
        return carry

    return run


def output_fidelity(pm: PartitionedModel, inputs: Sequence[Carry]) -> tuple[AccuracyFn, str]:
    """A label-free stand-in for the task metric: agreement with the original model's outputs, in percent.

    If the model output is one ``[N, C]`` tensor (logits), the metric is top-1 agreement; otherwise the mean
    cosine similarity of the flattened output tensors. Returns ``(fn, metric_name)``.
    """
    with torch.no_grad():
        references = [flatten_carry(pm(x)) for x in inputs]
    logits = all(len(r) == 1 and r[0].dim() == 2 for r in references)

    def fn(model: Callable[[Carry], Carry]) -> float:
        scores: list[float] = []
        with torch.no_grad():
            for x, ref in zip(inputs, references, strict=True):
                out = flatten_carry(model(x))
                if logits:
                    scores.extend((out[0].argmax(1) == ref[0].argmax(1)).float().tolist())
                else:
                    scores.extend(torch.nn.functional.cosine_similarity(o.flatten().float(), r.flatten().float(),
                                                                        dim=0).item() for o, r in zip(out, ref,
                                                                                                      strict=True))
        return 100.0 * statistics.fmean(scores)

    return fn, "top1_agreement_pct" if logits else "output_cosine_pct"


class PrefixCache:
    """``input -> output`` callables of a model with one block replaced, sharing the unchanged blocks before it.

    Every variant of one block sees the same carries at that block's input, so they are computed once per
    evaluation input (keyed by the input object: a metric must pass the same tensor objects on every call, as
    :class:`~compression_tools.heldout.TaskMetric` does) and each variant runs from the block on. Exact, not an
    approximation; it holds one carry per input until the cache is dropped.
    """

    def __init__(self, pm: PartitionedModel, block_name: str) -> None:
        self.index = pm.block_names.index(pm.block(block_name).name)
        self.prefix = pm.blocks[:self.index]
        self.rest = pm.blocks[self.index + 1:]
        self._store: dict[int, tuple[Carry, Carry]] = {}

    def _block_input(self, carry: Carry) -> Carry:
        if not self.prefix:
            return carry
        hit = self._store.get(id(carry))
        if hit is not None and hit[0] is carry:
            return hit[1]
        out = carry
        for block in self.prefix:
            out = block(out)
        self._store[id(carry)] = (carry, out)
        return out

    def swapped(self, module: Callable[[Carry], Carry]) -> Callable[[Carry], Carry]:
        """``input -> output`` of the model with this block replaced by ``module``."""

        def run(carry: Carry) -> Carry:
            with torch.no_grad():
                out = module(self._block_input(carry))
                for block in self.rest:
                    out = block(out)
            return out

        return run


# --- measurement ---------------------------------------------------------------------------------------------

def measure_latency_ms(module: Callable[[Carry], Carry], carry: Carry, repeats: int = 20, warmup: int = 3,
                       torch_threads: int | None = None) -> float:
    """Solo latency of ``module(carry)`` in milliseconds: the 20th percentile of ``repeats`` timed runs.

    A low percentile rather than the median: on a shared machine other processes only ever add time, so the
    lower tail is the better estimate of the block running alone. Torch threads are set for the duration.
    """
    previous = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    try:
        with torch.no_grad():
            for _ in range(warmup):
                module(carry)
            times: list[float] = []
            for _ in range(repeats):
                start = time.perf_counter()
                module(carry)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(previous)
    return sorted(times)[len(times) // 5]


def count_block_macs(module: Callable[[Carry], Carry], carry: Carry) -> int | None:
    """MACs of one forward (profile's convention); ``None`` for modules torch cannot count (ORT, TensorRT)."""
    if not isinstance(module, nn.Module) or isinstance(module, OrtBlock):
        return None
    from .profile import count_macs

    return count_macs(module, carry)[0]


# --- fine-tune -------------------------------------------------------------------------------------------------

def distill_block(student: nn.Module, teacher: nn.Module, carries: Sequence[Carry], steps: int = 100,
                  lr: float = 1e-4, batch_size: int = 8, progress: bool = True, seed: int = 0) -> nn.Module:
    """Short block-level distillation: train ``student`` so its outputs match ``teacher``'s (MSE) on ``carries``.

    Batch-norm statistics stay frozen (eval mode); only weights move. Labels are not needed, so the carries can
    come from generated scenes. Returns ``student`` (trained in place, eval mode).
    """
    from tqdm import tqdm

    if steps <= 0 or not carries:
        return student.eval()
    generator = torch.Generator().manual_seed(seed)
    teacher.eval()
    student.eval()
    for p in student.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(list(student.parameters()), lr=lr)
    with torch.no_grad():
        targets = [flatten_carry(teacher(c)) for c in carries]
    bar = tqdm(range(steps), desc="distill", unit="step", disable=not progress, leave=False)
    for _ in bar:
        picks = torch.randint(len(carries), (min(batch_size, len(carries)),), generator=generator).tolist()
        inputs = batch_carries([carries[i] for i in picks])
        target = [torch.cat([targets[i][k] for i in picks]) for k in range(len(targets[0]))]
        out = flatten_carry(student(inputs))
        loss = sum(torch.nn.functional.mse_loss(o, t) for o, t in zip(out, target, strict=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()
        bar.set_postfix(mse=f"{loss.item():.4g}")  # type: ignore[union-attr]
    for p in student.parameters():
        p.requires_grad_(False)
    return student.eval()


# --- build -------------------------------------------------------------------------------------------------

@dataclass
class BuildOptions:
    """Settings shared by every variant of a build.

    Attributes:
        importance: structured pruning importance (``"l1"``, ``"l2"``, ``"taylor"``).
        finetune_steps: distillation steps for ``ft`` kinds.
        finetune_lr: distillation learning rate.
        intra_op_threads: ORT intra-op threads when measuring (the executor re-sets it at run time).
        torch_threads: torch threads when measuring torch variants.
        latency_repeats: timed runs per latency figure (20th percentile).
        device_key: key of ``solo_latency_ms`` (e.g. ``"cpu"``).
        progress: show progress bars.
        tucker_fn: ``(block, example carry) -> decomposed block`` for ``tucker`` kinds (compression_tools.tucker).
        extra: free-form settings copied into every record (e.g. calibration frame count).
    """

    importance: str = "l2"
    finetune_steps: int = 200
    finetune_lr: float = 1e-4
    intra_op_threads: int = 2
    torch_threads: int = 2
    latency_repeats: int = 20
    device_key: str = "cpu"
    progress: bool = True
    tucker_fn: Callable[[nn.Module, Carry], nn.Module] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _torch_stage(recipe: Recipe, block: nn.Module, example: Carry, options: BuildOptions) -> nn.Module:
    if recipe.stage == "prune":
        return prune_block(block, example, recipe.ratio, importance=options.importance)
    if recipe.stage == "unstructured":
        return prune_unstructured(block, recipe.ratio)
    if recipe.stage == "tucker":
        if options.tucker_fn is None:
            raise VariantError("variant kind 'tucker' needs BuildOptions.tucker_fn (compression_tools.tucker)")
        return options.tucker_fn(copy.deepcopy(block), example).eval()
    return block


def build_variant(pm: PartitionedModel, block_name: str, kind: str, calibration: Sequence[Carry],
                  out_dir: Path, options: BuildOptions | None = None) -> tuple[Any, VariantRecord]:
    """Build one variant of one block and save its file; returns ``(ready module, record without accuracy)``.

    Args:
        pm: the partitioned model (original blocks).
        block_name: block to compress.
        kind: variant kind (see the module docstring).
        calibration: this block's *input* carries on scene frames (:func:`block_input_carries`).
        out_dir: directory for the variant files (``<model>/<block>/<kind>.<ext>`` below it).
        options: build settings.

    Raises:
        ConfigError: bad kind.
        VariantError: the technique failed on this block (message says which and why).
    """
    options = options or BuildOptions()
    recipe = parse_kind(kind)
    original = pm.block(block_name).module
    example = calibration[0]
    stem = Path(out_dir) / pm.name / block_name / kind.replace("+", "_")
    module: nn.Module = _torch_stage(recipe, original, example, options)
    if recipe.finetune:
        module = distill_block(copy.deepcopy(module) if module is original else module, original, calibration,
                               steps=options.finetune_steps, lr=options.finetune_lr, progress=options.progress)
    params = count_nonzero_params(module) if recipe.stage == "unstructured" else count_params(module)
    macs = count_block_macs(module, example)
    settings: dict[str, Any] = {"stage": recipe.stage, "ratio": recipe.ratio, "backend": recipe.backend or "torch",
                                "finetune_steps": options.finetune_steps if recipe.finetune else 0,
                                "calibration_carries": len(calibration), **options.extra}
    if recipe.stage == "prune":
        settings["importance"] = options.importance
    ready: Any
    if recipe.backend in ("int8", "ort_fp32"):
        path = stem.with_suffix(".onnx")
        if recipe.backend == "int8":
            quantize_block_ort_int8(module, calibration, path)
        else:
            export_onnx(module, example, path)
        ready = OrtBlock(path, options.intra_op_threads)
        settings["intra_op_threads"] = options.intra_op_threads
        fmt = "onnx"
    elif recipe.backend in ("trt_fp16", "trt_int8"):
        from .tensorrt import TrtBlock, build_engine

        onnx_path = stem.with_suffix(".onnx")
        if recipe.backend == "trt_int8":
            quantize_block_ort_int8(module, calibration, onnx_path)
        else:
            export_onnx(module, example, onnx_path)
        path = build_engine(onnx_path, Path(out_dir) / "engines", precision=recipe.backend[4:])
        ready = TrtBlock(path)
        fmt = "tensorrt"
    else:
        path = save_variant(module, original, stem.with_suffix(".safetensors"), {"kind": kind})
        ready = module
        fmt = "torch-safetensors"
    record = VariantRecord(model=pm.name, block=block_name, name=kind, kind=kind, format=fmt,
                           file=str(path.relative_to(out_dir)) if path.is_relative_to(out_dir) else str(path),
                           sha256=sha256_file(path), bytes=path.stat().st_size, params=params, macs=macs,
                           settings=settings)
    return ready, record


def original_record(pm: PartitionedModel, block_name: str, example: Carry) -> VariantRecord:
    """The ``original`` record of a block (no file; bytes = fp32 state-dict payload)."""
    from .profile import state_dict_bytes

    module = pm.block(block_name).module
    return VariantRecord(model=pm.name, block=block_name, name="original", kind="original", format="builtin",
                         bytes=state_dict_bytes(module), params=count_params(module),
                         macs=count_block_macs(module, example), settings={"backend": "torch"})


def build_block_variants(
    pm: PartitionedModel,
    block_names: Sequence[str],
    inputs: Sequence[Carry],
    kinds: Sequence[str],
    out_dir: Path,
    accuracy_fn: AccuracyFn | None = None,
    accuracy_metric: str = "",
    options: BuildOptions | None = None,
    calibration_count: int = 16,
    calibration_inputs: Sequence[Carry] | None = None,
    baseline_accuracy: float | None = None,
) -> list[VariantRecord]:
    """Build, save and measure ``kinds`` for every block in ``block_names``.

    A kind that fails on a block (unsupported layer, export error) is skipped with a warning naming both.

    Args:
        pm: partitioned model.
        block_names: blocks to compress.
        inputs: model inputs (preprocessed scene frames, batch 1 each): the evaluation inputs of the fidelity
            metric when no ``accuracy_fn``, and the calibration source when no ``calibration_inputs``.
        kinds: variant kinds.
        out_dir: output directory (records' ``file`` are relative to it; put the manifest there).
        accuracy_fn: task metric of a whole-model callable (a :class:`~compression_tools.heldout.TaskMetric`
            records its frame and sample counts); default: :func:`output_fidelity` on ``inputs``.
        accuracy_metric: name of ``accuracy_fn``'s metric.
        options: build settings.
        calibration_count: frames used for calibration and fine-tuning.
        calibration_inputs: model inputs of the calibration / fine-tune frames (default: the first
            ``calibration_count`` of ``inputs``). Pass frames disjoint from the evaluation ones.
        baseline_accuracy: the original model's metric if already measured (it is the same for every block).

    Returns:
        Records: one ``original`` per block, then its variants, with latency and accuracy filled in.
    """
    from tqdm import tqdm

    options = options or BuildOptions()
    out_dir = Path(out_dir)
    if accuracy_fn is None:
        accuracy_fn, accuracy_metric = output_fidelity(pm, inputs)
    frames = int(getattr(accuracy_fn, "frames", len(inputs)))
    samples = int(getattr(accuracy_fn, "samples", frames))
    calibration = list(calibration_inputs if calibration_inputs is not None else inputs)[:calibration_count]
    if baseline_accuracy is None:
        baseline_accuracy = accuracy_fn(pm)
    records: list[VariantRecord] = []
    for block_name in block_names:
        carries = block_input_carries(pm, block_name, calibration)
        example = carries[0]
        base = original_record(pm, block_name, example)
        base.solo_latency_ms[options.device_key] = measure_latency_ms(
            pm.block(block_name).module, example, options.latency_repeats, torch_threads=options.torch_threads)
        base.accuracy, base.accuracy_metric = baseline_accuracy, accuracy_metric
        base.eval_frames, base.eval_samples = frames, samples
        records.append(base)
        cache = PrefixCache(pm, block_name)
        bar = tqdm(kinds, desc=f"{pm.name}/{block_name}", unit="variant", disable=not options.progress,
                   leave=False)
        for kind in bar:
            bar.set_postfix_str(kind)
            try:
                ready, record = build_variant(pm, block_name, kind, carries, out_dir, options)
            except (VariantError, RuntimeError, ValueError) as exc:
                warnings.warn(f"variant {kind!r} of {pm.name}/{block_name} skipped: {exc}", stacklevel=2)
                continue
            if isinstance(ready, OrtBlock):
                ready.set_intra_op_threads(options.intra_op_threads)
            record.solo_latency_ms[options.device_key] = measure_latency_ms(
                ready, example, options.latency_repeats, torch_threads=options.torch_threads)
            record.accuracy, record.accuracy_metric = accuracy_fn(cache.swapped(ready)), accuracy_metric
            record.eval_frames, record.eval_samples = frames, samples
            LOGGER.info("%s/%s %s: %.2f ms (original %.2f), %s %.2f on %d frames", pm.name, block_name, kind,
                        record.solo_latency_ms[options.device_key], base.solo_latency_ms[options.device_key],
                        accuracy_metric, record.accuracy, frames)
            records.append(record)
    return records
