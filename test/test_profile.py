"""Tests for compression_tools.profile: hand-counted layers, torchvision metadata, per-block attribution."""

from __future__ import annotations

import gc

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from compression_tools.profile import (
    build_model,
    count_macs,
    count_params,
    default_input_shape,
    profile_blocks,
    profile_model,
    state_dict_bytes,
)
from multidnn_sched.exceptions import ConfigError
from multidnn_sched.runtime.block import Block, PartitionedModel

MAC_TOLERANCE = 0.02


def test_hand_counted_conv_linear_matmul() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    macs, out = count_macs(conv, torch.zeros(1, 3, 16, 16))
    assert out.shape == (1, 8, 16, 16)
    assert macs == 16 * 16 * 8 * 3 * 3 * 3
    strided = nn.Conv2d(4, 6, 3, stride=2, groups=2)
    assert count_macs(strided, torch.zeros(2, 4, 9, 9))[0] == 2 * 4 * 4 * 6 * 2 * 9
    assert count_macs(nn.Linear(10, 5), torch.zeros(3, 10))[0] == 3 * 50
    # element-wise ops do not count (torchvision's convention)
    assert count_macs(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3).eval()), torch.zeros(1, 3, 8, 8))[0] == 0


def test_default_input_shapes() -> None:
    assert default_input_shape("resnet50") == (1, 3, 224, 224)
    assert default_input_shape("inception_v3") == (1, 3, 299, 299)
    assert default_input_shape("efficientnet_b7") == (1, 3, 600, 600)


def test_meta_count_equals_real_forward_count() -> None:
    torch.manual_seed(0)
    real = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    real_macs, real_out = count_macs(real, x)
    assert torch.isfinite(real_out).all()
    meta_macs, _ = count_macs(build_model("resnet18"), torch.zeros(1, 3, 64, 64, device="meta"))
    assert real_macs == meta_macs > 0


@pytest.mark.slow  # ~30 s alone on 2 cores (RegNets are built on the CPU), 150 s on a loaded machine
def test_every_torchvision_classifier_matches_metadata() -> None:
    torch.set_num_threads(1)
    names = torchvision.models.list_models(module=torchvision.models)
    assert len(names) >= 70
    mismatches = []
    for name in names:
        meta = list(torchvision.models.get_model_weights(name))[0].meta
        profile = profile_model(name, partition=False)
        expected_macs = meta["_ops"] * 1e9
        if profile.params != meta["num_params"] or abs(profile.macs / expected_macs - 1) > MAC_TOLERANCE:
            mismatches.append((name, profile.params, meta["num_params"], profile.macs / 1e9, meta["_ops"]))
        gc.collect()
    assert mismatches == []


def _resnet18_blocks(model: torchvision.models.ResNet) -> PartitionedModel:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    head = nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)
    blocks = [Block("stem", stem)] + [Block(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
    return PartitionedModel("resnet18", blocks + [Block("head", head)], family="resnet")


def test_per_block_figures_add_up() -> None:
    model = build_model("resnet18")
    x = torch.zeros(1, 3, 224, 224, device="meta")
    whole_macs, _ = count_macs(model, x)
    partitioned = _resnet18_blocks(model)
    blocks = profile_blocks(partitioned.blocks, x)
    assert [b.name for b in blocks] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert sum(b.macs for b in blocks) == whole_macs
    assert sum(b.params for b in blocks) == count_params(model) == 11_689_512
    assert sum(b.bytes for b in blocks) == state_dict_bytes(model)
    assert blocks[-1].macs == 512 * 1000
    assert all(b.macs > 0 for b in blocks)
    result = profile_model(partitioned, input_shape=(1, 3, 224, 224)).to_dict()
    assert result["macs"] == whole_macs and result["params"] == 11_689_512
    assert [b["name"] for b in result["blocks"]] == [b.name for b in blocks]
    assert set(result["blocks"][0]) == {"name", "params", "macs", "bytes"}


def test_profile_model_dict_and_bytes_match_safetensors(tmp_path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    result = profile_model(model, input_shape=(1, 3, 8, 8), name="tiny", partition=False).to_dict()
    assert result["params"] == 3 * 4 * 9 + 4 + 8 + 144 * 2 + 2
    assert result["macs"] == 6 * 6 * 4 * 27 + 144 * 2
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    header_bytes = int.from_bytes(path.read_bytes()[:8], "little") + 8
    assert result["bytes"] == path.stat().st_size - header_bytes
    assert result["blocks"] == [{"name": "tiny", "params": result["params"], "macs": result["macs"],
                                 "bytes": result["bytes"]}]


def test_unknown_model_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no_such_net"):
        profile_model("no_such_net")


def test_profile_model_by_name_uses_the_partitioner() -> None:
    result = profile_model("resnet18").to_dict()
    assert result["family"] == "resnet"
    assert len(result["blocks"]) > 1
    assert sum(b["macs"] for b in result["blocks"]) == result["macs"]
    assert sum(b["params"] for b in result["blocks"]) == result["params"] == 11_689_512
