"""multidnn-compress on a registry model: int8 variants of a torchvision classifier, agreement as accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compression_tools.cli import main, setup_model
from compression_tools.manifest import read_manifest
from multidnn_sched.exceptions import CheckpointError
from multidnn_sched.models.registry import load_model
from multidnn_sched.runtime.variant_loader import attach_variants, load_variants

FAST = ["--frames", "3", "--calibration", "2", "--repeats", "2", "--threads", "1", "--quiet"]


def test_build_int8_for_a_torchvision_classifier_makes_usable_variants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "variants"
    weights = tmp_path / "effnet.pt"  # the user's own weights (random here), as a local state-dict file
    torch.save(load_model("torchvision:efficientnet_b0").model.state_dict(), weights)
    code = main(["build", "--model", "torchvision:efficientnet_b0", "--name", "classifier", "--block", "heaviest",
                 "--kinds", "int8", "--weights", str(weights), "--out", str(out), *FAST])
    assert code == 0, capsys.readouterr().err
    manifest = read_manifest(out / "manifest.json")
    int8 = [r for r in manifest.variants if r.kind == "int8"]
    assert len(int8) == 1 and int8[0].model == "classifier" and int8[0].usable, int8
    assert int8[0].accuracy_metric == "top1_agreement_pct" and int8[0].accuracy is not None
    assert 0.0 <= int8[0].accuracy <= 100.0
    assert manifest.models["classifier"].accuracy == pytest.approx(100.0)  # fp32 agrees with itself
    assert len(manifest.models["classifier"].weights_fingerprint) == 64  # which weights the variants came from
    assert (out / int8[0].file).is_file()
    # The runtime loads the variant into the same registry model with the same weights, and it runs; into one
    # with other (fresh random) weights it is refused: those int8 blocks were calibrated on other weights.
    other = load_model("torchvision:efficientnet_b0", weights=str(weights)).partition("classifier")
    with torch.no_grad():  # other weights (a fresh random draw could repeat the same RNG state)
        next(other.blocks[0].module.parameters()).mul_(1.01)
    with pytest.raises(CheckpointError, match="built from other weights"):
        load_variants(out / "manifest.json", other)
    loaded = load_model("torchvision:efficientnet_b0", weights=str(weights))
    pm = loaded.partition("classifier")
    assert attach_variants(pm, load_variants(out / "manifest.json", pm)) >= 1
    block = pm.block(int8[0].block)
    setup = setup_model("torchvision:efficientnet_b0", frames=1, model_name="classifier")
    carry = setup.inputs[0]
    with torch.inference_mode():
        for b in pm.blocks:
            if b.name == block.name:
                expected = b.module(carry)
                got = torch.as_tensor(block.variants["int8"].module(carry))
                assert got.shape == expected.shape
                break
            carry = b.module(carry)
