"""Compression apart from scheduling: the static modes run a fixed assignment of block variants.

An *assignment* maps ``model -> {block -> variant}`` (blocks not named keep the original). ``blocks+swap``
holds one at the end of its warm-up; ``sequential+variants`` and ``threads+variants`` run exactly that one,
composed into a plain module (block after block, the assigned variant where there is one), so
``blocks+swap`` vs ``sequential+variants`` measures scheduling alone and ``sequential+variants`` vs
``sequential`` compression alone.

Variants are loaded once per bench run (sha256-checked by the runtime's loader) and shared by every mode.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from multidnn_sched.exceptions import ConfigError
from multidnn_sched.runtime.block import BlockVariant, PartitionedModel
from multidnn_sched.runtime.partition import partition_model

Assignment = dict[str, dict[str, str]]
"""``{model: {block: variant name}}``."""


def parse_assignment(text: str) -> Assignment:
    """``"detector/layer3=int8,classifier/head=prune50"`` -> ``{"detector": {"layer3": "int8"}, ...}``."""
    out: Assignment = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        target, sep, variant = item.partition("=")
        model, slash, block = target.partition("/")
        if not sep or not slash or not model or not block or not variant:
            raise ConfigError(f"--assignment: expected MODEL/BLOCK=VARIANT items separated by commas, got {item!r}")
        out.setdefault(model, {})[block] = variant
    return out


def manifest_variants(manifest_path: Path) -> dict[tuple[str, str], dict[str, bool]]:
    """``(model, block) -> {variant: usable}`` of a manifest (no file is loaded)."""
    from compression_tools.manifest import read_manifest

    table: dict[tuple[str, str], dict[str, bool]] = {}
    for record in read_manifest(manifest_path).variants:
        if record.kind != "original":
            table.setdefault((record.model, record.block), {})[record.name] = record.usable
    return table


def check_assignment(assignment: Assignment, manifest_path: Path) -> None:
    """Raise ``ConfigError`` naming every (model, block, variant) the manifest lacks or marks unusable."""
    table = manifest_variants(manifest_path)
    problems = []
    for model, blocks in assignment.items():
        for block, variant in blocks.items():
            known = table.get((model, block), {})
            if variant not in known:
                problems.append(f"{model}/{block}={variant} (the manifest has {sorted(known) or 'no variants'} "
                                f"for that block)")
            elif not known[variant]:
                problems.append(f"{model}/{block}={variant} (marked unusable in the manifest)")
    if problems:
        raise ConfigError(f"variant manifest {manifest_path} cannot serve the assignment: " + "; ".join(problems))


class VariantCache:
    """Loads each model's variants from the manifest once; hands out fresh copies per run."""

    def __init__(self, manifest_path: Path) -> None:
        self.manifest_path = Path(manifest_path)
        if not self.manifest_path.is_file():
            raise ConfigError(f"variant manifest {self.manifest_path} does not exist (build the default variants "
                              f"with `multidnn-compress build-defaults`, or pass --variants)")
        self._loaded: dict[str, dict[str, list[BlockVariant]]] = {}

    def variants(self, pm: PartitionedModel) -> dict[str, list[BlockVariant]]:
        from multidnn_sched.runtime.variant_loader import load_variants

        if pm.name not in self._loaded:
            self._loaded[pm.name] = load_variants(self.manifest_path, pm)
        return {block: [copy.copy(v) for v in items] for block, items in self._loaded[pm.name].items()}

    def baseline_accuracy(self, model: str) -> float | None:
        from compression_tools.manifest import read_manifest

        entry = read_manifest(self.manifest_path).models.get(model)
        return entry.accuracy if entry is not None else None


class FixedVariantModel(nn.Module):
    """A partitioned model with a fixed variant per block, run block after block."""

    def __init__(self, pm: PartitionedModel, steps: list[object]) -> None:
        super().__init__()
        self.pm_name = pm.name
        self._steps = steps

    def forward(self, carry: object) -> object:
        for step in self._steps:
            carry = step(carry)
        return carry


def compose(model: nn.Module, name: str, blocks: Mapping[str, str], cache: VariantCache) -> nn.Module:
    """``model`` with the variants of ``blocks`` (``{block: variant}``) in place of the original blocks."""
    pm = partition_model(model, name)
    loaded = cache.variants(pm)
    steps: list[object] = []
    for block in pm.blocks:
        wanted = blocks.get(block.name)
        if wanted is None:
            steps.append(block.module)
            continue
        match = next((v for v in loaded.get(block.name, []) if v.name == wanted and v.module is not None), None)
        if match is None:
            raise ConfigError(f"variant {name}/{block.name}={wanted} is not loadable from {cache.manifest_path}")
        steps.append(match.module)
    unknown = set(blocks) - set(pm.block_names)
    if unknown:
        raise ConfigError(f"assignment names blocks {sorted(unknown)} that model {name!r} does not have "
                          f"(blocks: {pm.block_names})")
    return FixedVariantModel(pm, steps).eval()
