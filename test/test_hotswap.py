"""Tests of hot-swap (multidnn_sched.runtime.variants through the executor): switch time, no torn block,
no frame lost, misbehaving variants disabled with the original used."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

from multidnn_sched.exceptions import VariantError
from multidnn_sched.runtime.block import Block, BlockVariant, PartitionedModel
from multidnn_sched.runtime.executor import BlockExecutor
from multidnn_sched.runtime.policy import ORIGINAL, Decision
from multidnn_sched.runtime.variants import VariantRegistry, carry_signature


def conv_block(mid: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, mid, 3, padding=1), nn.ReLU(), nn.Conv2d(mid, 8, 3, padding=1))


def channel_halved_model() -> tuple[PartitionedModel, nn.Module]:
    """A 2-block model whose first block has a channel-halved variant (16 -> 8 middle channels)."""
    halved = conv_block(8, seed=1)
    block = Block("conv", conv_block(16, seed=0))
    block.variants["halved"] = BlockVariant("halved", halved, kind="prune", accuracy=0.99)
    pm = PartitionedModel("m", [block, Block("pool", nn.AdaptiveAvgPool2d(1))])
    return pm, halved


class Marker(nn.Module):
    """Block that adds ``value`` in two halves with a pause between: a torn run would show a mixed sum."""

    def __init__(self, value: float, pause_sec: float = 0.0) -> None:
        super().__init__()
        self.value, self.pause_sec = value, pause_sec
        self.started = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.started.set()
        x = x + self.value / 2
        time.sleep(self.pause_sec)
        return x + self.value / 2


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("variant exploded")


def new_executor() -> BlockExecutor:
    return BlockExecutor(shed_late_frames=False, decision_interval_sec=None, reprofile_idle_sec=None)


def test_swap_is_a_reference_switch_under_1ms_and_changes_next_frame() -> None:
    pm, halved = channel_halved_model()
    ex = new_executor()
    try:
        ex.register_model(pm, deadline_ms=100.0, accuracy=1.0)
        x = torch.randn(1, 3, 16, 16)
        with torch.inference_mode():
            original_out, halved_out = pm(x), nn.AdaptiveAvgPool2d(1)(halved(x))
        torch.testing.assert_close(ex.submit("m", x).result(timeout=10), original_out)
        registry = ex._registry
        switch_ms = [registry.activate(("m", "conv"), name) for name in ("halved", ORIGINAL) * 50]
        assert max(switch_ms) <= 1.0
        ex.apply(Decision("m", "conv", "variant", "halved", "test"))
        torch.testing.assert_close(ex.submit("m", x).result(timeout=10), halved_out)
        assert ex.stats().blocks[("m", "conv")].variant == "halved"
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_swap_mid_block_never_tears_and_applies_at_next_boundary() -> None:
    slow_original = Marker(1.0, pause_sec=0.2)
    block = Block("mark", slow_original)
    block.variants["v"] = BlockVariant("v", Marker(100.0), accuracy=0.99)
    ex = new_executor()
    try:
        ex.register_model(PartitionedModel("m", [block]), deadline_ms=1000.0, queue_depth=2)
        first = ex.submit("m", torch.zeros(1))
        assert slow_original.started.wait(5.0)
        second = ex.submit("m", torch.zeros(1))
        ex.apply(Decision("m", "mark", "variant", "v", "swap while the original runs"))
        assert first.result(timeout=10).item() == 1.0  # wholly the original
        assert second.result(timeout=10).item() == 100.0  # wholly the variant
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_swapping_under_load_drops_no_frame_and_mixes_no_versions() -> None:
    blocks = []
    for i, value in enumerate((1.0, 10.0)):
        block = Block(f"b{i}", Marker(value, pause_sec=0.001))
        block.variants["v"] = BlockVariant("v", Marker(value * 1000.0, pause_sec=0.001), accuracy=0.99)
        blocks.append(block)
    ex = new_executor()
    try:
        ex.register_model(PartitionedModel("m", blocks), deadline_ms=1000.0, queue_depth=64)
        stop = threading.Event()

        def flip() -> None:
            name = "v"
            while not stop.is_set():
                for block in blocks:
                    ex._registry.activate(("m", block.name), name)
                name = ORIGINAL if name == "v" else "v"
                time.sleep(0.0005)

        flipper = threading.Thread(target=flip)
        flipper.start()
        futures = []
        for _ in range(40):
            futures.append(ex.submit("m", torch.zeros(1)))
            time.sleep(0.002)
        results = {fut.result(timeout=20).item() for fut in futures}
        stop.set()
        flipper.join(5.0)
        # each block wholly original or wholly variant: only these sums are possible
        assert results <= {11.0, 1000.0 + 10.0, 1.0 + 10000.0, 11000.0}
        stats = ex.stats().models["m"]
        assert (stats.frames_done, stats.dropped, stats.failed) == (40, 0, 0)
    finally:
        stop.set()
        assert ex.shutdown(timeout_sec=5.0)


def test_raising_variant_disabled_original_used_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    pm, _ = channel_halved_model()
    pm.blocks[0].variants["boom"] = BlockVariant("boom", Raises(), accuracy=0.99)
    ex = new_executor()
    try:
        ex.register_model(pm, deadline_ms=100.0)
        ex.apply(Decision("m", "conv", "variant", "boom", "test"))
        x = torch.randn(1, 3, 16, 16)
        with caplog.at_level("ERROR", logger="multidnn_sched.executor"):
            out = ex.submit("m", x).result(timeout=10)
        with torch.inference_mode():
            torch.testing.assert_close(out, pm(x))
        assert pm.blocks[0].variants["boom"].usable is False
        assert "variant exploded" in caplog.text
        block = ex.stats().blocks[("m", "conv")]
        assert (block.variant, block.variant_failures) == (ORIGINAL, 1)
        assert ex.stats().models["m"].failed == 0
        with pytest.raises(VariantError, match="disabled"):
            ex.apply(Decision("m", "conv", "variant", "boom", "again"))
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_wrong_shape_variant_disabled_in_service() -> None:
    pm, _ = channel_halved_model()
    pm.blocks[0].variants["narrow"] = BlockVariant("narrow", nn.Conv2d(3, 4, 3, padding=1), accuracy=0.99)
    ex = new_executor()
    try:
        ex.register_model(pm, deadline_ms=100.0)
        x = torch.randn(1, 3, 16, 16)
        ex.submit("m", x).result(timeout=10)  # the original records its output shape for this input
        ex.apply(Decision("m", "conv", "variant", "narrow", "test"))
        out = ex.submit("m", x).result(timeout=10)
        assert out.shape == (1, 8, 1, 1)
        assert pm.blocks[0].variants["narrow"].usable is False
        assert ex.stats().blocks[("m", "conv")].variant == ORIGINAL
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_profiling_measures_good_variants_and_disables_bad_ones() -> None:
    pm, _ = channel_halved_model()
    pm.blocks[0].variants["narrow"] = BlockVariant("narrow", nn.Conv2d(3, 4, 3, padding=1))
    pm.blocks[0].variants["boom"] = BlockVariant("boom", Raises())
    ex = new_executor()
    try:
        ex.register_model(pm, deadline_ms=100.0, accuracy=0.8, example_input=torch.randn(1, 3, 16, 16))
        solo = ex.profile_solo(repeats=2, warmup=1)
        assert ("m", "conv", "halved") in solo and pm.blocks[0].variants["halved"].solo_latency_ms is not None
        assert not pm.blocks[0].variants["narrow"].usable and not pm.blocks[0].variants["boom"].usable
        options = {b.block: b.options for b in ex.observations().blocks}["conv"]
        assert [o.name for o in options] == [ORIGINAL, "halved"]
        assert options[1].relative_accuracy == pytest.approx(0.99 / 0.8)
    finally:
        assert ex.shutdown(timeout_sec=5.0)


def test_registry_rejects_reserved_name_unknown_and_non_callable() -> None:
    registry = VariantRegistry()
    registry.add_block("m", Block("b", nn.Identity()))
    with pytest.raises(VariantError, match="reserved"):
        registry.register(("m", "b"), BlockVariant(ORIGINAL, nn.Identity()))
    with pytest.raises(VariantError, match="callable"):
        registry.register(("m", "b"), BlockVariant("x", 42))
    with pytest.raises(VariantError, match="no variant 'ghost'"):
        registry.activate(("m", "b"), "ghost")
    with pytest.raises(VariantError, match="unknown block"):
        registry.activate(("m", "zz"), ORIGINAL)


def test_carry_signature_covers_structure_shape_dtype() -> None:
    a = {"x": torch.zeros(1, 2), "skip": (torch.zeros(3), torch.zeros(1, dtype=torch.int64))}
    b = {"skip": (torch.ones(3), torch.ones(1, dtype=torch.int64)), "x": torch.ones(1, 2)}
    assert carry_signature(a) == carry_signature(b)
    assert carry_signature(torch.zeros(1, 2)) != carry_signature(torch.zeros(1, 2, dtype=torch.float16))
    assert carry_signature((torch.zeros(1),)) != carry_signature([torch.zeros(1)])
