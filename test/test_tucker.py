"""Tests for compression_tools.tucker: exactness at full rank, shapes, rank rules, whole-model MAC reductions."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from torch import nn

from compression_tools.profile import build_model, count_macs
from compression_tools.tucker import (
    decompose_conv,
    decompose_model,
    decompose_report,
    evbmf_rank,
    select_ranks,
    tucker2_macs_per_pixel,
)
from multidnn_sched.exceptions import ConfigError

CONV_CASES = [
    {"kernel_size": 3, "padding": 1},
    {"kernel_size": 3, "stride": 2, "padding": 2, "dilation": 2},
    {"kernel_size": 3, "bias": False},
    {"kernel_size": 3, "groups": 4, "stride": 2},
    {"kernel_size": (1, 7), "padding": (0, 3)},
    {"kernel_size": 5, "padding": 2, "padding_mode": "reflect"},
]


@pytest.mark.parametrize("kwargs", CONV_CASES, ids=lambda k: "-".join(f"{a}{b}" for a, b in k.items()))
def test_full_rank_decomposition_equals_conv(kwargs: dict) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, **kwargs).double()
    groups = conv.groups
    decomposed = decompose_conv(conv, (24 // groups, 16 // groups))
    x = torch.randn(2, 16, 13, 11, dtype=torch.float64)
    with torch.no_grad():
        expected, got = conv(x), decomposed(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    assert [m.kernel_size for m in decomposed] == [(1, 1), conv.kernel_size, (1, 1)]
    assert decomposed[1].stride == conv.stride and decomposed[1].dilation == conv.dilation
    assert (decomposed[2].bias is None) == (conv.bias is None)


def _tucker_weight(c_out: int, c_in: int, ranks: tuple[int, int], noise: float) -> torch.Tensor:
    core = torch.randn(ranks[0], ranks[1], 3, 3, dtype=torch.float64)
    u_out = torch.linalg.qr(torch.randn(c_out, ranks[0], dtype=torch.float64))[0]
    u_in = torch.linalg.qr(torch.randn(c_in, ranks[1], dtype=torch.float64))[0]
    weight = torch.einsum("abhw,oa,ib->oihw", core, u_out, u_in)
    return weight + noise * torch.randn_like(weight)


def test_low_tucker_rank_weight_is_recovered_at_its_ranks() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(32, 48, 3, padding=1, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(_tucker_weight(48, 32, (6, 5), noise=0.0))
    decomposed = decompose_conv(conv, (6, 5))
    x = torch.randn(1, 32, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(decomposed(x), conv(x), rtol=1e-8, atol=1e-8)


def test_vbmf_and_energy_find_planted_ranks() -> None:
    torch.manual_seed(2)
    weight = _tucker_weight(64, 32, (12, 7), noise=1e-3)
    assert select_ranks(weight, "vbmf") == (12, 7)
    assert select_ranks(weight, "energy", energy=0.9999) == (12, 7)
    signal = torch.randn(80, 6, dtype=torch.float64) @ torch.randn(6, 200, dtype=torch.float64)
    assert evbmf_rank(signal + 0.05 * torch.randn(80, 200, dtype=torch.float64)) == 6
    # pure noise: nothing above the EVB threshold
    assert evbmf_rank(torch.randn(80, 200, dtype=torch.float64)) == 0
    assert select_ranks(nn.Conv2d(16, 32, 3).weight, "vbmf") == (1, 1)


def test_macs_rule_keeps_the_budget_and_is_the_largest_such() -> None:
    weight = torch.empty(256, 128, 3, 3, device="meta")
    r_out, r_in = select_ranks(weight, "macs", mac_fraction=0.2)
    budget = 0.2 * 256 * 128 * 9
    assert tucker2_macs_per_pixel(256, 128, 9, (r_out, r_in), 1.0) <= budget
    assert tucker2_macs_per_pixel(256, 128, 9, (r_out + 1, round((r_out + 1) / 2)), 1.0) > budget
    assert abs(r_in - r_out / 2) <= 1
    # with the whole budget the ranks stop where Tucker-2 would cost as much as the conv itself
    r_out, r_in = select_ranks(weight, "macs", mac_fraction=1.0)
    assert 128 < r_out < 256 and tucker2_macs_per_pixel(256, 128, 9, (r_out, r_in), 1.0) <= 256 * 128 * 9


def test_bad_rules_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown rank rule 'svd'"):
        select_ranks(torch.zeros(8, 8, 3, 3), "svd")
    with pytest.raises(ConfigError, match="meta"):
        select_ranks(torch.empty(8, 8, 3, 3, device="meta"), "vbmf")
    with pytest.raises(ConfigError, match="mac_fraction"):
        select_ranks(torch.zeros(8, 8, 3, 3), "macs", mac_fraction=0.0)


def _small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=2, dilation=2, groups=2), nn.ReLU(),
        nn.Conv2d(32, 48, 1), nn.ReLU(),
        nn.Conv2d(48, 48, (1, 5), padding=(0, 2), bias=False),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 10),
    ).eval()


def test_decompose_real_model_report_matches_counted_macs() -> None:
    torch.manual_seed(3)
    model = _small_cnn()
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        reference = model(x)
    _, report = decompose_model(model, input_shape=(2, 3, 24, 24), mac_fraction=0.3)
    assert [row.name for row in report.layers] == ["2", "5", "9"]
    assert all(isinstance(model[int(row.name)], nn.Sequential) for row in report.layers)
    counted_after, output = count_macs(model, x)
    assert output.shape == reference.shape and torch.isfinite(output).all()
    assert report.macs_after == counted_after < report.macs_before
    assert sum(r.macs_before - r.macs_after for r in report.layers) == report.macs_before - report.macs_after
    skipped = {row["name"]: row["reason"] for row in report.skipped}
    assert "min_channels" in skipped["0"] and "1x1" in skipped["7"]
    assert report.layers[1].groups == 2
    assert all(row.macs_after <= 0.3 * row.macs_before + 1 for row in report.layers)


def test_unsupported_layers_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    model = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.Conv2d(32, 64, 1),
                          nn.Conv2d(64, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1))
    with caplog.at_level(logging.WARNING, logger="compression_tools.tucker"):
        _, report = decompose_model(model, rank_rule="energy", skip=["3"], input_shape=(1, 32, 8, 8))
    assert [row.name for row in report.layers] == ["2"]
    assert {row["name"] for row in report.skipped} == {"0", "1", "3"}
    assert "depthwise" in caplog.text and "tucker: skipping 0" in caplog.text and "skipping 1" in caplog.text
    assert isinstance(model[3], nn.Conv2d) and isinstance(model[2], nn.Sequential)


# Whole-model MAC reductions with the default rule, architecture only (meta device: shapes, no weights).
REQUIRED_REDUCTION = {"vgg16": 0.81, "resnet152": 0.386, "inception_v3": 0.628, "regnet_y_32gf": 0.358}


@pytest.mark.parametrize("name", sorted(REQUIRED_REDUCTION))
def test_default_rule_mac_reduction(name: str) -> None:
    result = decompose_report(name)
    assert result["mac_reduction"] >= REQUIRED_REDUCTION[name]
    assert result["macs_before"] == pytest.approx(
        list(torchvision.models.get_model_weights(name))[0].meta["_ops"] * 1e9, rel=0.02)
    model = build_model(name)
    decompose_model(model, input_shape=result["input_shape"])
    counted, _ = count_macs(model, torch.zeros(result["input_shape"], device="meta"))
    assert counted == result["macs_after"]
    assert {"name", "shape", "groups", "ranks", "macs_before", "macs_after"} <= set(result["layers"][0])
