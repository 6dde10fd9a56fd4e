"""``multidnn-compress``: offline compression of model blocks (profile, decompose, prune, quantize, build,
build-defaults, report). The CLI parses arguments, calls the library functions and prints; errors are one line
on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multidnn_sched.exceptions import MultiDnnError
from multidnn_sched.runtime.block import Carry, PartitionedModel

from .heldout import SeedPlan

DEFAULT_OUT_DIR = Path("runs/variants")
"""Default output of build / build-defaults: a run directory (git-ignored), not the package, so shipped files
stay small; point the runtime at ``<out>/manifest.json``."""
DEFAULT_MODELS: tuple[str, ...] = ("detector", "embedder", "classifier")
DEFAULT_FRAMES = 300
"""Held-out evaluation frames of ``build`` / ``build-defaults`` (see :mod:`compression_tools.heldout`)."""
DEFAULT_CALIBRATION = 16
DEFAULT_MAX_DROP = 10.0
"""Manifest gate (metric points): a variant further below the original is marked unusable and never loaded.

It only weeds out broken variants (structured pruning without fine-tuning costs the detector and the embedder
tens of points); the decision between usable variants is the runtime policy's ``accuracy_floor`` (relative,
0.97 by default, and a ROS parameter), which also bounds combinations of variants. With a 1-point gate the
policy floor could never bind: any variant it would refuse (> 3 % relative, i.e. > 1.4-3 points at the default
models' accuracies) was already unloaded, and lowering the floor at run time had nothing to choose from."""
MODEL_KINDS: dict[str, tuple[str, ...]] = {"classifier": ("unstructured80+int8",)}
"""Extra kinds of a model's heaviest block in ``build-defaults``, so every default model has a variant that costs
accuracy on the held-out frames (the floor has something to refuse). The classifier's default kinds all stay
within 1 point: structured pruning of RegNetY's block4 removes only ~10 % of its parameters (the channels on its
residual path are frozen) and int8 is lossless, so its lossy probe is 80 % magnitude pruning with int8
(measured 99.23 -> 93.77 attribute top-1 on the 300 held-out frames; 84 % fell to 68, 80 % without int8 lost ~1
point). The detector's and the embedder's ``prune50`` (no fine-tune) already cost far more than a point."""


@dataclass
class ModelSetup:
    """A model ready for compression: partitioned, with held-out evaluation inputs, calibration inputs and its
    task metric.

    Attributes:
        pm: the partitioned model.
        inputs: model inputs made from the held-out evaluation frames (one carry per frame).
        accuracy_fn: task metric of a whole-model callable (``None``: output fidelity on ``inputs`` is used).
        metric: name of the metric.
        trained: whether shipped weights were loaded (random init otherwise).
        calibration: model inputs of the calibration / fine-tune frames (disjoint seeds).
        seeds: the seeds of every role (recorded in the manifest).
    """

    pm: PartitionedModel
    inputs: list[Carry]
    accuracy_fn: Callable[[Callable[[Carry], Carry]], float] | None
    metric: str
    trained: bool
    calibration: list[Carry] = field(default_factory=list)
    seeds: SeedPlan | None = None


def _seed_plan(model: str, heldout_seeds: Sequence[int] | None, calibration_seeds: Sequence[int] | None,
               profile: str) -> SeedPlan:
    """The seeds of a build, checked: held-out disjoint from calibration, fine-tune and training seeds."""
    from .heldout import CALIBRATION_SEEDS, HELDOUT_SEEDS, check_disjoint, training_seeds

    calibration = list(calibration_seeds or CALIBRATION_SEEDS)
    trained_on = sorted({s for name in DEFAULT_MODELS for s in training_seeds(name)}) if model in DEFAULT_MODELS \
        else []
    plan = SeedPlan(heldout=list(heldout_seeds or HELDOUT_SEEDS), calibration=calibration, finetune=calibration,
                    training=trained_on, profile=profile)
    check_disjoint(plan)
    return plan


def _default_model(name: str) -> tuple[nn.Module, bool]:
    from multidnn_sched.models import zoo

    try:
        return getattr(zoo.load_default_models(), name), True
    except MultiDnnError as exc:
        warnings.warn(f"{name}: shipped weights unavailable ({exc}); using random init", stacklevel=2)
        builders = {"detector": zoo.build_detector, "embedder": zoo.build_embedder, "classifier": zoo.build_classifier}
        return builders[name]().eval(), False


def setup_registry_model(
    name: str, frames: int = DEFAULT_FRAMES, seed: int | None = None, model_name: str | None = None, *,
    heldout_seeds: Sequence[int] | None = None, calibration_seeds: Sequence[int] | None = None,
    calibration_frames: int = DEFAULT_CALIBRATION, profile: str = "hard", **options: Any
) -> ModelSetup:
    """Build, partition and prepare scene inputs for any registry model (``torchvision:efficientnet_b0``,
    ``exported:net.pt2``, ``module:pkg.mod:factory``...).

    Models whose labels are not the synthetic scene's have no task metric there: accuracy is measured as
    agreement with the model's own fp32 outputs (top-1 agreement for classifiers, output cosine otherwise) on
    the held-out frames.

    Args:
        name: registry name.
        frames: held-out evaluation frames.
        seed: one held-out scene seed (shorthand for ``heldout_seeds=[seed]``).
        model_name: the model's name in the manifest (the runtime's model name, e.g. ``classifier`` when a node
            runs it; default: the registry name).
        heldout_seeds: held-out scene seeds (default :data:`~compression_tools.heldout.HELDOUT_SEEDS`).
        calibration_seeds: calibration / fine-tune scene seeds (default ``CALIBRATION_SEEDS``).
        calibration_frames: calibration / fine-tune frames.
        profile: scene profile.
        options: ``weights``, ``labels_file``, ``input_hw``, ``task`` for the registry lookup.

    Raises:
        ConfigError: unknown name, or colliding seeds; CheckpointError: a file is missing or does not fit.
    """
    from multidnn_sched.models.registry import get_model_spec

    from .heldout import render_calibration, render_heldout

    heldout_seeds = [seed] if seed is not None and heldout_seeds is None else heldout_seeds
    spec = get_model_spec(name, **options)
    if spec.source == "default":
        return setup_model(name.removeprefix("default:"), frames, model_name=model_name, heldout_seeds=heldout_seeds,
                           calibration_seeds=calibration_seeds, calibration_frames=calibration_frames,
                           profile=profile)
    plan = _seed_plan(name, heldout_seeds, calibration_seeds, profile)
    loaded = spec.load("cpu")
    pm = loaded.partition(model_name or name)
    inputs = [loaded.preprocess(f.image) for f in render_heldout(plan.heldout, frames, profile)]
    calibration = [loaded.preprocess(f.image) for f in render_calibration(plan.calibration, calibration_frames,
                                                                          profile)]
    metric = "top1_agreement_pct" if spec.task == "classification" else "output_cosine_pct"
    return ModelSetup(pm, inputs, None, metric, spec.weights is not None, calibration, plan)


def setup_model(
    name: str,
    frames: int = DEFAULT_FRAMES,
    seed: int | None = None,
    model_name: str | None = None,
    input_hw: tuple[int, int] | None = None,
    *,
    heldout_seeds: Sequence[int] | None = None,
    calibration_seeds: Sequence[int] | None = None,
    calibration_frames: int = DEFAULT_CALIBRATION,
    profile: str = "hard",
    progress: bool = False,
    weights: str | None = None,
) -> ModelSetup:
    """Build, partition and prepare held-out and calibration inputs for a default model, a torchvision model
    name or a registry name (``source:name``, see :func:`setup_registry_model`).

    Default models are scored with their task metric (:data:`~compression_tools.heldout.TASK_METRICS`) on
    ``frames`` held-out frames; calibration and fine-tuning use ``calibration_frames`` frames of other seeds.

    Raises:
        ConfigError: unknown model name, or a held-out seed colliding with a calibration / training seed.
        PartitionError: the model cannot be cut into blocks.
    """
    from multidnn_sched.exceptions import ConfigError
    from multidnn_sched.runtime.partition import partition_model

    from .heldout import TASK_METRICS, render_calibration, render_heldout

    heldout_seeds = [seed] if seed is not None and heldout_seeds is None else heldout_seeds
    if ":" in name:
        extra = {"weights": weights} if weights else {}
        return setup_registry_model(name, frames, None, model_name, heldout_seeds=heldout_seeds,
                                    calibration_seeds=calibration_seeds, calibration_frames=calibration_frames,
                                    profile=profile, input_hw=input_hw, **extra)
    if weights:
        raise ConfigError(f"--weights applies to registry models (torchvision:..., module:...), not {name!r}")
    plan = _seed_plan(name, heldout_seeds, calibration_seeds, profile)
    if name in DEFAULT_MODELS:
        from multidnn_sched.models.classifier import CLASSIFIER_INPUT_HW
        from multidnn_sched.models.crops import crop_batch
        from multidnn_sched.models.detector import detector_preprocess
        from multidnn_sched.models.embedding import EMBEDDER_INPUT_HW

        model, trained = _default_model(name)
        pm = partition_model(model, model_name or name)
        scenes = render_heldout(plan.heldout, frames, profile, progress=progress)
        calib = [f for f in render_calibration(plan.calibration, calibration_frames * 2, profile) if f.objects]
        metric = TASK_METRICS[name](scenes)
        if name == "detector":
            calibration = [detector_preprocess(f.image) for f in calib[:calibration_frames]]
        else:
            size = CLASSIFIER_INPUT_HW if name == "classifier" else EMBEDDER_INPUT_HW
            calibration = [crop_batch(f.image, [o.box_xyxy for o in f.objects], size)
                           for f in calib[:calibration_frames]]
        inputs = metric.inputs
        return ModelSetup(pm, inputs, metric, metric.name, trained, calibration, plan)
    import torchvision

    from multidnn_sched.models.detector import normalize_images, resize_uint8

    if name not in torchvision.models.list_models():
        raise ConfigError(f"unknown model {name!r}: expected one of {list(DEFAULT_MODELS)}, a torchvision "
                          "classification model name (random init) or a registry name such as "
                          "torchvision:efficientnet_b0, exported:net.pt2, module:pkg.mod:factory")
    model = torchvision.models.get_model(name, weights=None).eval()

    def prepare(frames_: Sequence[Any]) -> list[Carry]:
        return [normalize_images(resize_uint8(f.image, (224, 224))) for f in frames_]

    inputs = prepare(render_heldout(plan.heldout, frames, profile))
    calibration = prepare(render_calibration(plan.calibration, calibration_frames, profile))
    return ModelSetup(partition_model(model, model_name or name), inputs, None, "top1_agreement_pct", False,
                      calibration, plan)


def block_macs(pm: PartitionedModel, example: Carry) -> dict[str, int]:
    """MACs of every block on ``example``, in block order."""
    from .profile import count_macs

    macs: dict[str, int] = {}
    carry = example
    for block in pm.blocks:
        macs[block.name], carry = count_macs(block.module, carry)
    return macs


def heaviest_block(pm: PartitionedModel, example: Carry) -> str:
    """Name of the block with the most MACs on ``example``."""
    macs = block_macs(pm, example)
    return max(macs, key=lambda name: macs[name])


SIGNIFICANT_BLOCK_MAC_FRACTION = 0.05
"""``build-defaults`` gives an int8 variant to every block with at least this share of its model's MACs (the
heaviest block gets every default kind): the policy can then shed load block by block, not only at one block."""


def significant_blocks(pm: PartitionedModel, example: Carry, exclude: Sequence[str] = ()) -> list[str]:
    macs = block_macs(pm, example)
    total = sum(macs.values()) or 1
    return [n for n, m in macs.items() if m >= SIGNIFICANT_BLOCK_MAC_FRACTION * total and n not in exclude]


def _merge(out_dir: Path, setup: ModelSetup, records: list[Any], max_drop: float) -> Path:
    from .manifest import Manifest, ModelBaseline, mark_usability, read_manifest, weights_fingerprint, write_manifest

    path = out_dir / "manifest.json"
    manifest = read_manifest(path) if path.is_file() else Manifest(max_accuracy_drop=max_drop)
    manifest.max_accuracy_drop = max_drop
    replaced = {(r.model, r.block, r.name) for r in records}
    manifest.variants = [r for r in manifest.variants if (r.model, r.block, r.name) not in replaced] + records
    base = next((r for r in records if r.kind == "original"), None)
    if base is not None:
        seeds = setup.seeds
        manifest.models[setup.pm.name] = ModelBaseline(
            base.accuracy, base.accuracy_metric, base.eval_frames or len(setup.inputs), base.eval_samples,
            scene_profile=seeds.profile if seeds else "", heldout_seeds=list(seeds.heldout) if seeds else [],
            calibration_seeds=list(seeds.calibration) if seeds else [],
            finetune_seeds=list(seeds.finetune) if seeds else [], training_seeds=list(seeds.training) if seeds else [],
            weights_fingerprint=weights_fingerprint((b.name, b.module) for b in setup.pm.blocks))
    for record in manifest.variants:  # the floor may have changed: re-judge accuracy verdicts
        if record.reason.startswith("accuracy"):
            record.usable, record.reason = True, ""
    mark_usability(manifest)
    return write_manifest(manifest, path)


def _build(args: argparse.Namespace, model: str, blocks: Sequence[str], kinds: Sequence[str],
           extra_kinds: Sequence[str] = ()) -> Path:
    """Build ``kinds`` for ``blocks`` (names or ``"heaviest"``) of ``model``; with ``extra_kinds``, also build
    those for every other significant block (see :data:`SIGNIFICANT_BLOCK_MAC_FRACTION`)."""
    from .heldout import parse_seeds
    from .variants import BuildOptions, build_block_variants

    size = getattr(args, "input", None)
    heldout = parse_seeds(args.heldout_seeds, "--heldout-seeds") if args.heldout_seeds else None
    calibration_seeds = parse_seeds(args.calibration_seeds, "--calibration-seeds") if args.calibration_seeds \
        else None
    setup = setup_model(model, args.frames, model_name=getattr(args, "name", None) or None,
                        input_hw=(size[0], size[1]) if size else None, heldout_seeds=heldout,
                        calibration_seeds=calibration_seeds, calibration_frames=args.calibration,
                        progress=not args.quiet, weights=getattr(args, "weights", None))
    if not setup.trained and model in DEFAULT_MODELS:
        print(f"warning: {model} has no trained weights yet; accuracy figures are for random init", file=sys.stderr)
    calibration = setup.calibration or setup.inputs
    names = [heaviest_block(setup.pm, calibration[0]) if b == "heaviest" else b for b in blocks]
    options = BuildOptions(importance=args.importance, finetune_steps=args.finetune_steps,
                           intra_op_threads=args.threads, torch_threads=args.threads, progress=not args.quiet,
                           latency_repeats=args.repeats,
                           tucker_fn=_tucker_fn(args.rank_rule),
                           extra={"scene_frames": int(getattr(setup.accuracy_fn, "frames", len(setup.inputs)))})
    torch.manual_seed(0)
    records = build_block_variants(setup.pm, names, setup.inputs, kinds, args.out, setup.accuracy_fn, setup.metric,
                                   options, calibration_count=args.calibration, calibration_inputs=calibration)
    others = significant_blocks(setup.pm, calibration[0], exclude=names) if extra_kinds else []
    if others:
        extra = build_block_variants(setup.pm, others, setup.inputs, extra_kinds, args.out, setup.accuracy_fn,
                                     setup.metric, options, calibration_count=args.calibration,
                                     calibration_inputs=calibration, baseline_accuracy=records[0].accuracy)
        records += extra
    path = _merge(Path(args.out), setup, records, args.max_drop)
    for r in records:
        accuracy = "n/a" if r.accuracy is None else f"{r.accuracy:.2f}"
        print(f"{r.model}/{r.block}/{r.name}: {r.solo_latency_ms.get('cpu', float('nan')):.2f} ms, "
              f"{r.bytes / 1e6:.2f} MB, {r.accuracy_metric} {accuracy} ({r.eval_frames} held-out frames)"
              f"{'' if r.usable else ' UNUSABLE: ' + r.reason}")
    print(f"manifest: {path}")
    return path


def _tucker_fn(rank_rule: str) -> Callable[[nn.Module, Carry], nn.Module] | None:
    try:
        from .tucker import decompose_model
    except ImportError:
        return None

    def decompose(block: nn.Module, example: Carry) -> nn.Module:
        if not isinstance(example, torch.Tensor):
            raise MultiDnnError(f"Tucker needs a single-tensor block input, got {type(example).__name__}")
        return decompose_model(block, rank_rule=rank_rule, input_shape=tuple(example.shape))[0]

    return decompose


def _cmd_profile(args: argparse.Namespace) -> int:
    from .profile import profile_model

    if args.model in DEFAULT_MODELS:
        setup = setup_model(args.model, frames=1, calibration_frames=1)
        result = profile_model(setup.pm, input_shape=tuple(setup.inputs[0].shape))
    else:
        result = profile_model(args.model)
    text = json.dumps(result.to_dict(), indent=1)
    _emit(text, args.json)
    return 0


def _cmd_decompose(args: argparse.Namespace) -> int:
    from .tucker import decompose_report

    _emit(json.dumps(decompose_report(args.model, rank_rule=args.rank_rule), indent=1), args.json)
    return 0


def _emit(text: str, path: Path | None) -> None:
    if path is None:
        print(text)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path}")


def _cmd_report(args: argparse.Namespace) -> int:
    from .manifest import read_manifest
    from .report import write_report

    paths = write_report(read_manifest(args.manifest), args.out or Path(args.manifest).parent, args.device_key,
                         args.accuracy_floor)
    print(f"wrote {paths.markdown}, {paths.json}, {paths.png}")
    return 0


def _parse_model_kinds(text: str) -> dict[str, list[str]]:
    """``"classifier=unstructured80+int8,int8;detector=prune75"`` -> ``{model: [kind, ...]}`` (kinds checked)."""
    from multidnn_sched.exceptions import ConfigError

    from .variants import parse_kind

    out: dict[str, list[str]] = {}
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        model, sep, kinds = item.partition("=")
        if not sep or not model.strip() or not kinds.strip():
            raise ConfigError(f"--model-kinds: expected MODEL=KIND[,KIND] items separated by ';', got {item!r}")
        out[model.strip()] = [k.strip() for k in kinds.split(",") if k.strip()]
        for kind in out[model.strip()]:
            parse_kind(kind)
    return out


def _cmd_build_defaults(args: argparse.Namespace) -> int:
    from .manifest import read_manifest
    from .report import write_report

    path = None
    for model in args.models:
        kinds = list(dict.fromkeys([*args.kinds, *args.model_kinds.get(model, ())]))
        path = _build(args, model, ["heaviest"], kinds, args.other_kinds)
    if path is not None:
        paths = write_report(read_manifest(path), Path(args.out))
        print(f"report: {paths.markdown}")
    return 0


def _common(parser: argparse.ArgumentParser, kinds: bool = True) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output dir (manifest.json inside)")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                        help="held-out evaluation frames, split over --heldout-seeds (hard scene profile)")
    parser.add_argument("--heldout-seeds", default="",
                        help="scene seeds of the evaluation frames, 'LO-HI' or 'A,B' (default: "
                        "compression_tools.heldout.HELDOUT_SEEDS); must be disjoint from calibration and training "
                        "seeds")
    parser.add_argument("--calibration", type=int, default=DEFAULT_CALIBRATION,
                        help="scene frames for int8 calibration and fine-tuning")
    parser.add_argument("--calibration-seeds", default="",
                        help="scene seeds of the calibration / fine-tune frames (default: CALIBRATION_SEEDS)")
    parser.add_argument("--importance", choices=("l1", "l2", "taylor"), default="l2")
    parser.add_argument("--finetune-steps", type=int, default=200, help="distillation steps of '+ft' kinds")
    parser.add_argument("--threads", type=int, default=2, help="torch / ORT intra-op threads when measuring")
    parser.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP,
                        help="manifest gate: variants more than this many metric points below the original are "
                        "marked unusable (not loaded)")
    parser.add_argument("--rank-rule", default="macs", help="Tucker rank rule of 'tucker' kinds")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per latency figure (20th percentile)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    from .variants import DEFAULT_KINDS

    parser = argparse.ArgumentParser(prog="multidnn-compress", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profile", help="per-block params / MACs / bytes of a model")
    p.add_argument("--model", required=True)
    p.add_argument("--json", type=Path, default=None)
    p = sub.add_parser("decompose", help="Tucker-2 decomposition report of a torchvision model")
    p.add_argument("--model", required=True)
    p.add_argument("--rank-rule", default="macs")
    p.add_argument("--json", type=Path, default=None)
    p = sub.add_parser("prune", help="structured pruning of blocks (saved as safetensors variants)")
    p.add_argument("--model", required=True)
    p.add_argument("--block", action="append", default=None, help="block name or 'heaviest' (repeatable)")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--unstructured", action="store_true", help="magnitude (zeroing) pruning instead")
    _common(p)
    p = sub.add_parser("quantize", help="ORT static int8 of blocks (QDQ ONNX)")
    p.add_argument("--model", required=True)
    p.add_argument("--block", action="append", default=None)
    _common(p)
    p = sub.add_parser("build", help="build variant kinds (combinations) for blocks")
    p.add_argument("--model", required=True,
                   help="default model name, torchvision name or registry name (torchvision:efficientnet_b0, "
                   "exported:net.pt2, module:pkg.mod:factory)")
    p.add_argument("--name", default=None,
                   help="model name in the manifest: the runtime's model (e.g. classifier when a node runs it; "
                   "default: --model)")
    p.add_argument("--input", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="network input size of a registry model (as the node / workload runs it)")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="weights of a registry model (.safetensors, or a state dict read with weights_only=True); "
                   "without it a torchvision model has random weights, and its variants load only into a model "
                   "with the same weights (the manifest records their fingerprint)")
    p.add_argument("--block", action="append", default=None)
    p.add_argument("--kinds", default=",".join(DEFAULT_KINDS), help="comma-separated variant kinds")
    _common(p)
    p = sub.add_parser("build-defaults", help="default variants of the default models' blocks")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    p.add_argument("--kinds", default=",".join(DEFAULT_KINDS), help="variant kinds of each model's heaviest block")
    p.add_argument("--other-kinds", default="int8",
                   help="variant kinds of every other block with >= 5%% of the model's MACs ('' for none)")
    p.add_argument("--model-kinds", default=";".join(f"{m}={','.join(k)}"
                                                     for m, k in MODEL_KINDS.items()),
                   help="extra heaviest-block kinds per model, 'MODEL=KIND,KIND;MODEL=KIND' ('' for none; default: "
                   "the lossy probes of compression_tools.cli.MODEL_KINDS)")
    _common(p)
    p = sub.add_parser("report", help="Markdown + JSON + PNG report of a manifest")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--device-key", default="cpu")
    p.add_argument("--accuracy-floor", type=float, default=None,
                   help="policy accuracy floor of the verdict table (default: the default workload's, "
                   "PolicyConfig.accuracy_floor)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``multidnn-compress``; returns the exit status (2 on a user-facing error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "profile":
            return _cmd_profile(args)
        if args.command == "decompose":
            return _cmd_decompose(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "build-defaults":
            args.kinds = [k for k in args.kinds.split(",") if k]
            args.other_kinds = [k for k in args.other_kinds.split(",") if k]
            args.model_kinds = _parse_model_kinds(args.model_kinds)
            return _cmd_build_defaults(args)
        blocks = args.block or ["heaviest"]
        if args.command == "prune":
            kinds = [f"{'unstructured' if args.unstructured else 'prune'}{round(args.ratio * 100)}"]
        elif args.command == "quantize":
            kinds = ["int8"]
        else:
            kinds = [k for k in args.kinds.split(",") if k]
        from .variants import parse_kind

        for kind in kinds:
            parse_kind(kind)
        _build(args, args.model, blocks, kinds)
        return 0
    except (MultiDnnError, KeyError, ImportError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"multidnn-compress {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
