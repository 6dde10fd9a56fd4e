"""Tests of multidnn_sched.runtime.policy with synthetic observations: no threads, no clocks."""

from __future__ import annotations

from dataclasses import replace

import pytest

from multidnn_sched.runtime.policy import (
    ADMIT,
    ORIGINAL,
    PARALLEL,
    SEQUENTIAL,
    BlockObservation,
    DeviceObservation,
    ModelObservation,
    Observations,
    Policy,
    PolicyConfig,
    VariantOption,
    admission_fractions,
    estimated_accuracy,
    fair_shares,
    quantize_fraction,
)

ORIG_10 = VariantOption(ORIGINAL, 10.0, 1.0)


def block(
    model: str,
    name: str,
    *,
    lag_ms: float = 0.0,
    solo_ms: float = 10.0,
    mode: str = PARALLEL,
    variant: str = ORIGINAL,
    options: tuple[VariantOption, ...] = (ORIG_10,),
    locked: bool = False,
) -> BlockObservation:
    return BlockObservation(model, name, solo_ms, solo_ms + lag_ms, lag_ms, mode, variant, options, locked)


def model(name: str, latency_ms: float, deadline_ms: float = 50.0, priority: int = 0) -> ModelObservation:
    return ModelObservation(name, deadline_ms, latency_ms, priority, samples=20)


TWO_WORKERS = DeviceObservation("cpu", workers=2, slots=2)


def obs(
    models: list[ModelObservation], blocks: list[BlockObservation], device: DeviceObservation = TWO_WORKERS
) -> Observations:
    return Observations(tuple(models), tuple(blocks), device)


def cfg(**kwargs: object) -> PolicyConfig:
    base = {"min_dwell_sec": 2.0, "relax_dwell_sec": 2.0, "settle_sec": 1.0, "hysteresis": 0.2, "max_changes": 1,
            "relax_latency_fraction": 1.0}
    base.update(kwargs)
    return PolicyConfig(**base)  # type: ignore[arg-type]


def test_late_model_serializes_block_with_largest_lag() -> None:
    policy = Policy(cfg())
    blocks = [block("det", "b1", lag_ms=3.0), block("det", "b2", lag_ms=8.0), block("det", "b3", lag_ms=0.1)]
    decisions = policy.decide(obs([model("det", 60.0)], blocks), now_sec=10.0)
    assert [(d.block, d.kind, d.value) for d in decisions] == [("b2", "mode", SEQUENTIAL)]
    assert "late" in decisions[0].reason and "LAG 8.0" in decisions[0].reason
    assert decisions[0].time_sec == 10.0


def test_partitioned_pool_never_serializes_neither_for_latency_nor_for_device_time() -> None:
    """With fixed threads per block and sequential at the same count (``sequential_threads=worker_threads``) a
    sequential block is no faster, only alone: neither the late model's
    lagging block nor a block that costs more device time in parallel is serialized (it would idle its worker
    until the running block ends, and wait behind every more urgent request); with an elastic pool the
    device-time rule acts."""
    pool = DeviceObservation("cpu", workers=2, slots=2, fixed_block_threads=1)
    assert pool.can_overlap and not pool.sequential_is_faster and TWO_WORKERS.sequential_is_faster
    blocks = [block("det", "b1", lag_ms=3.0), block("det", "b2", lag_ms=8.0)]
    decisions = Policy(cfg(swap_enabled=False)).decide(obs([model("det", 60.0)], blocks, pool), now_sec=10.0)
    assert decisions == []
    heavy = contended("det", "conv", 10.0, 30.0)
    assert Policy(cfg()).decide(obs([model("det", 20.0)], [heavy], pool), now_sec=10.0) == []
    decisions = Policy(cfg()).decide(obs([model("det", 20.0)], [heavy], TWO_WORKERS), now_sec=10.0)
    assert [(d.block, d.value) for d in decisions] == [("conv", SEQUENTIAL)]


def test_partitioned_pool_with_every_core_for_sequential_serializes_by_what_it_saves() -> None:
    """Partitioned pool 2 x 1 whose sequential blocks run with 2 threads: a late model's block is serialized by
    what it saves (observed in parallel − its solo with every core), not by its LAG alone — a block with no
    interference at all (LAG 0) still saves the threads it gains; the device-time rule weighs the sequential
    solo too (2 slots x 4 ms + drain < 30 ms contended: sequential frees throughput)."""
    pool = DeviceObservation("cpu", workers=2, slots=2, fixed_block_threads=1, sequential_threads=2)
    assert pool.sequential_is_faster
    blocks = [replace(block("det", "b1", lag_ms=0.0, solo_ms=20.0), sequential_solo_ms=11.0),
              replace(block("det", "b2", lag_ms=1.0, solo_ms=10.0), sequential_solo_ms=6.0)]
    assert blocks[0].alone_ms == 11.0
    decisions = Policy(cfg(swap_enabled=False)).decide(obs([model("det", 60.0)], blocks, pool), now_sec=10.0)
    assert [(d.block, d.value) for d in decisions] == [("b1", SEQUENTIAL)]
    assert ("20.0 ms in parallel vs 11.0 ms alone with every core + 0.0 ms waiting for the running block "
            "(saves 9.0 ms)") in decisions[0].reason
    # another model's 24 ms blocks run beside: a sequential request waits ~12 ms for one to end (the drain),
    # more than either block saves -> nothing serialized
    other = [block("cls", "c1", solo_ms=24.0), block("cls", "c2", solo_ms=24.0)]
    busy = obs([model("det", 60.0), model("cls", 20.0, deadline_ms=90.0)], blocks + other, pool)
    assert Policy(cfg(swap_enabled=False)).decide(busy, now_sec=10.0) == []
    # the same figures without a faster sequential (same thread count): LAG 0 and 1 ms explain nothing
    same = DeviceObservation("cpu", workers=2, slots=2, fixed_block_threads=1)
    plain = [replace(b, sequential_solo_ms=None) for b in blocks]
    assert Policy(cfg(swap_enabled=False)).decide(obs([model("det", 60.0)], plain, same), now_sec=10.0) == []
    heavy = replace(contended("det", "conv", 10.0, 30.0), sequential_solo_ms=4.0)
    decisions = Policy(cfg()).decide(obs([model("det", 20.0)], [heavy], pool), now_sec=10.0)
    assert [(d.block, d.value) for d in decisions] == [("conv", SEQUENTIAL)]
    assert "2 x solo 4.0 ms" in decisions[0].reason
    scales_badly = replace(heavy, sequential_solo_ms=14.0)  # (2 x 14 ms) x 1.2 > 30 ms: parallel is cheaper
    assert Policy(cfg()).decide(obs([model("det", 20.0)], [scales_badly], pool), now_sec=10.0) == []


def test_a_shed_model_is_not_serialized_even_where_every_core_would_shorten_its_run() -> None:
    """A model whose recent frames were all shed (never ran: no observed figures) is overloaded, not disturbed:
    no block of it goes sequential, neither in the elastic pool nor in the partitioned pool where sequential
    runs with every core (measured: serializing the shed default detector there served none of its frames and
    cost the others, see ``_serialize_or_swap``); without variants nothing is decided."""
    pool = DeviceObservation("cpu", workers=2, slots=2, fixed_block_threads=1, sequential_threads=2)
    shed = replace(model("det", 0.0, deadline_ms=120.0), latency_ms=None, dropped_fraction=1.0)
    never_ran = [replace(block("det", "b1", solo_ms=30.0), ema_observed_ms=None, sequential_solo_ms=17.0),
                 replace(block("det", "b2", solo_ms=60.0), ema_observed_ms=None, sequential_solo_ms=32.0)]
    assert Policy(cfg(swap_enabled=False)).decide(obs([shed], never_ran, pool), now_sec=10.0) == []
    plain = [replace(b, sequential_solo_ms=None) for b in never_ran]
    assert Policy(cfg(swap_enabled=False)).decide(obs([shed], plain, TWO_WORKERS), now_sec=10.0) == []
    late = replace(shed, latency_ms=130.0, dropped_fraction=0.0)  # computed, late: serialized by its saving
    ran = [replace(b, ema_observed_ms=b.solo_ms) for b in never_ran]
    decisions = Policy(cfg(swap_enabled=False)).decide(obs([late], ran, pool), now_sec=10.0)
    assert [(d.block, d.value) for d in decisions] == [("b2", SEQUENTIAL)]


def test_on_time_model_changes_nothing() -> None:
    policy = Policy(cfg())
    decisions = policy.decide(obs([model("det", 45.0)], [block("det", "b1", lag_ms=20.0)]), now_sec=0.0)
    assert decisions == []


def test_too_few_samples_changes_nothing() -> None:
    policy = Policy(cfg(min_samples=10))
    few = ModelObservation("det", 50.0, 90.0, samples=3)
    assert policy.decide(obs([few], [block("det", "b1", lag_ms=20.0)]), now_sec=0.0) == []


def test_serialize_before_swap() -> None:
    options = (ORIG_10, VariantOption("prune50", 5.0, 0.99))
    policy = Policy(cfg())
    blocks = [block("det", "b1", lag_ms=6.0, options=options)]
    first = policy.decide(obs([model("det", 70.0)], blocks), now_sec=0.0)
    assert first[0].kind == "mode"
    # still late, the lagging block is sequential now (LAG gone): next change is the swap
    blocks = [block("det", "b1", lag_ms=0.0, mode=SEQUENTIAL, options=options)]
    second = policy.decide(obs([model("det", 70.0)], blocks), now_sec=3.0)
    assert [(d.kind, d.value) for d in second] == [("variant", "prune50")]
    assert "gain 5.0 ms" in second[0].reason


def test_lagging_block_in_dwell_blocks_swap() -> None:
    options = (ORIG_10, VariantOption("prune50", 5.0, 0.99))
    policy = Policy(cfg())
    policy.decide(obs([model("det", 70.0)], [block("det", "b1", lag_ms=6.0, options=options)]), now_sec=0.0)
    # b1 back to parallel by hand-made observation, lag high, but within dwell: no swap instead
    blocks = [block("det", "b1", lag_ms=6.0, options=options)]
    assert policy.decide(obs([model("det", 70.0)], blocks), now_sec=1.5) == []


def test_swap_picks_best_gain_per_accuracy_cost() -> None:
    policy = Policy(cfg(serialize_enabled=False))
    cheap = (ORIG_10, VariantOption("int8", 6.0, 0.995))  # 4 ms for 0.005 -> 800
    costly = (VariantOption(ORIGINAL, 20.0, 1.0), VariantOption("tucker", 10.0, 0.98))  # 10 ms for 0.02 -> 500
    blocks = [block("det", "b1", options=cheap), block("det", "b2", solo_ms=20.0, options=costly)]
    decisions = policy.decide(obs([model("det", 70.0)], blocks), now_sec=0.0)
    assert [(d.block, d.value) for d in decisions] == [("b1", "int8")]


def test_swap_respects_accuracy_floor() -> None:
    policy = Policy(cfg(serialize_enabled=False, accuracy_floor=0.97))
    b1 = block("det", "b1", variant="v", options=(ORIG_10, VariantOption("v", 5.0, 0.98)))
    b2 = block("det", "b2", options=(ORIG_10, VariantOption("w", 4.0, 0.985)))
    # 0.98 * 0.985 = 0.9653 < 0.97: refused
    assert policy.decide(obs([model("det", 70.0)], [b1, b2]), now_sec=0.0) == []
    b2_ok = block("det", "b2", options=(ORIG_10, VariantOption("w", 4.0, 0.995)))
    decisions = policy.decide(obs([model("det", 70.0)], [b1, b2_ok]), now_sec=0.0)
    assert [(d.block, d.value) for d in decisions] == [("b2", "w")]
    assert estimated_accuracy([b1, replace(b2_ok, variant="w")]) >= 0.97


def test_unknown_accuracy_variant_never_chosen() -> None:
    policy = Policy(cfg(serialize_enabled=False))
    b1 = block("det", "b1", options=(ORIG_10, VariantOption("mystery", 1.0, None)))
    assert policy.decide(obs([model("det", 90.0)], [b1]), now_sec=0.0) == []


def test_swap_disabled_only_serializes() -> None:
    policy = Policy(cfg(swap_enabled=False))
    b1 = block("det", "b1", mode=SEQUENTIAL, options=(ORIG_10, VariantOption("v", 1.0, 0.999)))
    assert policy.decide(obs([model("det", 90.0)], [b1]), now_sec=0.0) == []


def test_return_to_parallel_after_dwell_when_prediction_comfortable() -> None:
    policy = Policy(cfg())
    late_blocks = [block("det", "b1", lag_ms=4.0)]
    assert policy.decide(obs([model("det", 60.0)], late_blocks), now_sec=0.0)[0].value == SEQUENTIAL
    seq = [block("det", "b1", mode=SEQUENTIAL)]
    # comfortable (<= 40 ms) but not for min_dwell yet
    assert policy.decide(obs([model("det", 30.0)], seq), now_sec=3.0) == []
    assert policy.decide(obs([model("det", 30.0)], seq), now_sec=4.0) == []
    decisions = policy.decide(obs([model("det", 30.0)], seq), now_sec=5.0)
    assert [(d.kind, d.value) for d in decisions] == [("mode", PARALLEL)]
    assert "predicted latency 34.0" in decisions[0].reason


def test_no_return_to_parallel_when_prediction_not_comfortable() -> None:
    policy = Policy(cfg())
    policy.decide(obs([model("det", 60.0)], [block("det", "b1", lag_ms=15.0)]), now_sec=0.0)
    seq = [block("det", "b1", mode=SEQUENTIAL)]
    for t in (3.0, 6.0, 9.0):
        # 30 + 15 = 45 > 40: stays sequential — the hysteresis band prevents flapping
        assert policy.decide(obs([model("det", 30.0)], seq), now_sec=t) == []


def test_swap_back_before_return_to_parallel() -> None:
    policy = Policy(cfg())
    options = (ORIG_10, VariantOption("v", 6.0, 0.99))
    blocks = [block("det", "b1", mode=SEQUENTIAL), block("det", "b2", variant="v", solo_ms=6.0, options=options)]
    policy.decide(obs([model("det", 20.0)], blocks), now_sec=0.0)  # starts the comfortable timer
    decisions = policy.decide(obs([model("det", 20.0)], blocks), now_sec=2.5)
    assert [(d.block, d.kind, d.value) for d in decisions] == [("b2", "variant", ORIGINAL)]


def test_hysteresis_no_flapping_in_band() -> None:
    policy = Policy(cfg())
    seq = [block("det", "b1", mode=SEQUENTIAL, lag_ms=0.0)]
    # 45 ms: between comfortable (40) and deadline (50): no change ever, whatever the time
    for t in range(0, 20):
        assert policy.decide(obs([model("det", 45.0)], seq), now_sec=float(t)) == []


def test_min_dwell_limits_changes_of_one_block() -> None:
    policy = Policy(cfg(settle_sec=0.0, min_dwell_sec=5.0))
    options = (ORIG_10, VariantOption("v", 5.0, 0.99))
    first = policy.decide(obs([model("det", 90.0)], [block("det", "b1", options=options)]), now_sec=0.0)
    assert first[0].value == "v"
    swapped = [block("det", "b1", variant="v", solo_ms=5.0, options=options)]
    # comfortable right away, but the block changed < 5 s ago: it stays
    for t in (1.0, 2.0, 4.9):
        assert policy.decide(obs([model("det", 10.0)], swapped), now_sec=t) == []
    assert policy.decide(obs([model("det", 10.0)], swapped), now_sec=6.0)[0].value == ORIGINAL


def test_settle_time_between_changes_of_one_model() -> None:
    policy = Policy(cfg(settle_sec=1.0, max_changes=5))
    blocks = [block("det", "b1", lag_ms=5.0), block("det", "b2", lag_ms=4.0)]
    assert len(policy.decide(obs([model("det", 60.0)], blocks), now_sec=0.0)) == 1
    blocks2 = [block("det", "b1", mode=SEQUENTIAL), block("det", "b2", lag_ms=4.0)]
    assert policy.decide(obs([model("det", 60.0)], blocks2), now_sec=0.5) == []
    assert policy.decide(obs([model("det", 60.0)], blocks2), now_sec=1.0)[0].block == "b2"


def test_priority_orders_late_models() -> None:
    policy = Policy(cfg(max_changes=1))
    models = [model("cls", 200.0, priority=0), model("det", 55.0, priority=1)]
    blocks = [block("cls", "c1", lag_ms=5.0), block("det", "d1", lag_ms=5.0)]
    decisions = policy.decide(obs(models, blocks), now_sec=0.0)
    assert [d.model for d in decisions] == ["det"]


def test_equal_priority_most_negative_relative_slack_first() -> None:
    policy = Policy(cfg(max_changes=2))
    models = [model("a", 55.0), model("b", 80.0)]
    blocks = [block("a", "a1", lag_ms=5.0), block("b", "b1", lag_ms=10.0)]
    assert [d.model for d in policy.decide(obs(models, blocks), now_sec=0.0)] == ["b", "a"]


def test_locked_blocks_untouched() -> None:
    policy = Policy(cfg())
    options = (ORIG_10, VariantOption("v", 1.0, 0.999))
    blocks = [block("det", "b1", lag_ms=9.0, locked=True, options=options)]
    assert policy.decide(obs([model("det", 90.0)], blocks), now_sec=0.0) == []


def test_bad_config_rejected() -> None:
    with pytest.raises(ValueError, match="accuracy_floor"):
        PolicyConfig(accuracy_floor=1.5)
    with pytest.raises(ValueError, match="hysteresis"):
        PolicyConfig(hysteresis=1.0)


def test_overloaded_model_swaps_instead_of_serializing() -> None:
    policy = Policy(cfg(serialize_min_cover=0.25))
    options = (ORIG_10, VariantOption("int8", 4.0, 0.99))
    # overshoot 150 ms, summed LAG 6 ms < 0.25 * 150: interference cannot explain it -> swap
    blocks = [block("det", "b1", lag_ms=6.0, options=options)]
    decisions = policy.decide(obs([model("det", 200.0)], blocks), now_sec=0.0)
    assert [(d.kind, d.value) for d in decisions] == [("variant", "int8")]
    assert "model LAG 6.0 ms" in decisions[0].reason
    # small overshoot explained by LAG -> serialize
    policy2 = Policy(cfg(serialize_min_cover=0.25))
    decisions2 = policy2.decide(obs([model("det", 60.0)], blocks), now_sec=0.0)
    assert [(d.kind, d.value) for d in decisions2] == [("mode", SEQUENTIAL)]


def test_no_relax_while_another_model_is_not_comfortable() -> None:
    """Models share the device: a comfortable model keeps its variant while another model is still late."""
    options = (ORIG_10, VariantOption("v", 6.0, 0.99))
    swapped = [block("a", "b1", variant="v", solo_ms=6.0, options=options)]
    late_other = [block("b", "c1")]
    both = [model("a", 10.0), model("b", 60.0)]
    policy = Policy(cfg())
    for t in (0.0, 3.0, 6.0, 9.0):
        assert all(d.model != "a" for d in policy.decide(obs(both, swapped + late_other), now_sec=t))
    relaxed = Policy(cfg(relax_needs_all_comfortable=False))
    relaxed.decide(obs(both, swapped + late_other), now_sec=0.0)
    decisions = relaxed.decide(obs(both, swapped + late_other), now_sec=3.0)
    assert ("a", "b1", ORIGINAL) in [(d.model, d.block, d.value) for d in decisions]


def test_late_model_is_helped_by_swapping_another_models_heavy_block() -> None:
    """On one shared device the best gain/cost swap may be in another model (each kept above its floor)."""
    light = [block("emb", "e1", solo_ms=2.0, options=(VariantOption(ORIGINAL, 2.0, 1.0),
                                                      VariantOption("int8", 1.5, 0.99)))]
    heavy = [block("det", "d1", solo_ms=30.0, options=(VariantOption(ORIGINAL, 30.0, 1.0),
                                                       VariantOption("int8", 8.0, 0.995)))]
    models = [model("emb", 80.0), model("det", 30.0)]  # emb late (deadline 50), det on time
    decisions = Policy(cfg()).decide(obs(models, light + heavy), now_sec=0.0)
    assert [(d.model, d.block, d.value) for d in decisions] == [("det", "d1", "int8")]
    assert "emb late" in decisions[0].reason
    own_only = Policy(cfg(shared_device_swaps=False)).decide(obs(models, light + heavy), now_sec=0.0)
    assert [(d.model, d.block, d.value) for d in own_only] == [("emb", "e1", "int8")]


def test_relax_needs_latency_below_the_relax_fraction() -> None:
    options = (ORIG_10, VariantOption("v", 6.0, 0.99))
    swapped = [block("det", "b1", variant="v", solo_ms=6.0, options=options)]
    strict = Policy(cfg(relax_latency_fraction=0.5))  # limit 25 ms: 20 + 4 = 24 ok, 24 + 4 = 28 not
    strict.decide(obs([model("det", 24.0)], swapped), now_sec=0.0)
    assert strict.decide(obs([model("det", 24.0)], swapped), now_sec=3.0) == []
    assert strict.decide(obs([model("det", 20.0)], swapped), now_sec=4.0)[0].value == ORIGINAL


def test_no_swap_back_that_would_saturate_the_shared_device() -> None:
    """15 Hz x (6 ms + 40 ms other) = 0.69 busy; swapping b1 back (+4 ms) would make it 0.75 > 0.7."""
    options = (ORIG_10, VariantOption("v", 6.0, 0.99))
    swapped = [block("det", "b1", variant="v", solo_ms=6.0, options=options),
               block("det", "b2", solo_ms=40.0, options=(VariantOption(ORIGINAL, 40.0, 1.0),))]
    busy = [ModelObservation("det", 50.0, 10.0, 0, samples=20, rate_hz=15.0)]
    policy = Policy(cfg())
    policy.decide(obs(busy, swapped), now_sec=0.0)
    assert policy.decide(obs(busy, swapped), now_sec=3.0) == []
    idle = [ModelObservation("det", 50.0, 10.0, 0, samples=20, rate_hz=5.0)]  # 0.23 -> 0.25: fine
    relaxed = Policy(cfg())
    relaxed.decide(obs(idle, swapped), now_sec=0.0)
    assert relaxed.decide(obs(idle, swapped), now_sec=3.0)[0].value == ORIGINAL


# -- overload: utilization-driven swaps and admission control --------------------------------------------------


def loaded(name: str, latency_ms: float, rate_hz: float = 15.0, deadline_ms: float = 100.0, priority: int = 0,
           admit_fraction: float = 1.0) -> ModelObservation:
    return ModelObservation(name, deadline_ms, latency_ms, priority, samples=20, rate_hz=rate_hz,
                            admit_fraction=admit_fraction)


def one_block(model_name: str, solo_ms: float, options: tuple[VariantOption, ...] = ()) -> BlockObservation:
    return block(model_name, "b", solo_ms=solo_ms, options=(VariantOption(ORIGINAL, solo_ms, 1.0), *options))


def test_admission_grants_max_min_fair_device_time_cheapest_models_first() -> None:
    # 1.375 of a 1.0 device: the embedder (0.165) and the classifier (0.40) each fit an equal split (1/3, then
    # (1 - 0.165) / 2 = 0.4175), so they keep every frame; the detector gets what is left: 0.435 / 0.81
    demands = {"det": 0.81, "emb": 0.165, "cls": 0.40}
    fractions = admission_fractions(demands, target=1.0, min_fraction=0.2)
    assert fractions["emb"] == 1.0 and fractions["cls"] == 1.0
    assert fractions["det"] == pytest.approx((1.0 - 0.165 - 0.40) / 0.81)
    # a classifier just above its split (0.42 > 0.4175) loses a sliver, never the detector's share
    assert admission_fractions({"det": 0.81, "emb": 0.165, "cls": 0.42}, 1.0, 0.2)["cls"] == pytest.approx(
        0.4175 / 0.42)
    assert sum(demands[n] * f for n, f in fractions.items()) == pytest.approx(1.0)
    assert admission_fractions({"a": 0.3, "b": 0.2}, target=1.0, min_fraction=0.2) == {"a": 1.0, "b": 1.0}


def test_admission_never_starves_a_model_every_one_keeps_an_equal_split_of_the_device() -> None:
    # the former rule cut the largest demand to its minimum and left the others whole; max-min fairness gives
    # each of two models at least half the device
    fractions = admission_fractions({"big": 1.5, "small": 0.7}, target=1.0, min_fraction=0.25)
    assert fractions == pytest.approx({"big": 0.5 / 1.5, "small": 0.5 / 0.7})
    assert fair_shares({"a": 3.0, "b": 3.0, "c": 0.1}) == pytest.approx({"a": 0.15, "b": 0.15, "c": 1.0})
    assert admission_fractions({"big": 9.0, "small": 9.0}, target=1.0, min_fraction=0.2) == pytest.approx(
        {"big": 0.2, "small": 0.2})  # beyond 1 / min_fraction the minimum binds, the rest is left to shedding


def test_overloaded_device_without_variants_admits_a_fraction_of_the_costliest_model() -> None:
    """15 Hz x (54 + 11 + 26 ms) = 1.37 of the device: no swap possible, so admission cuts the detector."""
    models = [loaded("det", 50.0), loaded("emb", 10.0), loaded("cls", 30.0)]
    blocks = [one_block("det", 54.0), one_block("emb", 11.0), one_block("cls", 26.0)]
    decisions = Policy(cfg(admission_enabled=True)).decide(obs(models, blocks), now_sec=1.0)
    assert [(d.model, d.block, d.kind) for d in decisions] == [("det", None, ADMIT)]
    # the detector's grant is what the others leave: (1 - 0.165 - 0.39) / 0.81 = 0.55 of its frames, rounded
    # down to a regular pattern: every 2nd frame
    assert decisions[0].value == pytest.approx(0.5) and isinstance(decisions[0].value, float)
    assert "overloaded" in decisions[0].reason and "1.37" in decisions[0].reason


def test_admitted_fractions_are_regular_frame_patterns_rounded_down() -> None:
    assert quantize_fraction(1.0, 0.2) == 1.0
    assert quantize_fraction(0.99, 0.2) == pytest.approx(0.9)  # mildest cut: skip every 10th
    assert quantize_fraction(0.7, 0.2) == pytest.approx(2 / 3)  # skip every 3rd
    assert quantize_fraction(0.55, 0.2) == 0.5
    assert quantize_fraction(0.49, 0.2) == pytest.approx(1 / 3)  # never two admitted frames in a row
    assert quantize_fraction(1 / 3, 0.2) == pytest.approx(1 / 3)
    assert quantize_fraction(0.1, 0.2) == 0.2


def test_admission_unchanged_while_the_pattern_holds_and_restored_when_the_device_fits() -> None:
    blocks = [one_block("det", 54.0), one_block("emb", 11.0), one_block("cls", 26.0)]
    policy = Policy(cfg(admission_enabled=True))
    steady = [loaded("det", 50.0, admit_fraction=0.5), loaded("emb", 10.0), loaded("cls", 30.0)]
    assert policy.decide(obs(steady, blocks), now_sec=1.0) == []
    light = [loaded("det", 50.0, rate_hz=5.0, admit_fraction=0.5), loaded("emb", 10.0, rate_hz=5.0),
             loaded("cls", 30.0, rate_hz=5.0)]  # 5 Hz x 93 ms = 0.47: fits
    decisions = policy.decide(obs(light, blocks), now_sec=2.0)
    assert [(d.model, d.kind, d.value) for d in decisions] == [("det", ADMIT, 1.0)]  # the others admit all
    assert "fits" in decisions[0].reason


def test_admission_disabled_or_unknown_rate_admits_every_frame() -> None:
    blocks = [one_block("det", 54.0), one_block("emb", 11.0)]
    cut = [loaded("det", 50.0, admit_fraction=0.5), loaded("emb", 10.0)]
    off = Policy(cfg(admission_enabled=False)).decide(obs(cut, blocks), now_sec=1.0)
    assert [(d.model, d.value) for d in off] == [("det", 1.0)]
    unknown = [ModelObservation("det", 100.0, 50.0, samples=20), ModelObservation("emb", 100.0, 10.0, samples=20)]
    assert Policy(cfg()).decide(obs(unknown, blocks), now_sec=1.0) == []


def test_overloaded_device_swaps_before_any_model_is_late() -> None:
    """Every model meets its deadline, but the device is 0.975 busy: swap the best gain/cost block anyway."""
    models = [loaded("det", 50.0), loaded("cls", 30.0)]
    blocks = [one_block("det", 40.0, (VariantOption("int8", 10.0, 0.99),)),
              one_block("cls", 25.0, (VariantOption("int8", 20.0, 0.99),))]
    decisions = Policy(cfg(swap_utilization=0.75, admission_utilization=1.0)).decide(obs(models, blocks), 1.0)
    assert [(d.model, d.kind, d.value) for d in decisions] == [("det", "variant", "int8")]
    assert "device overloaded: predicted utilization 0.97" in decisions[0].reason


def test_no_relax_while_the_device_is_overloaded() -> None:
    options = (VariantOption("int8", 30.0, 0.99),)
    swapped = [block("det", "b", solo_ms=30.0, variant="int8", options=(VariantOption(ORIGINAL, 40.0, 1.0),
                                                                         *options))]
    models = [loaded("det", 20.0, rate_hz=30.0)]  # comfortable, but 30 Hz x 30 ms = 0.90 > 0.75
    policy = Policy(cfg(swap_utilization=0.75, admission_utilization=1.0))
    policy.decide(obs(models, swapped), now_sec=0.0)
    assert [d for d in policy.decide(obs(models, swapped), now_sec=10.0) if d.kind == "variant"] == []


def test_measured_slowdown_scales_the_predicted_utilization() -> None:
    """Solo 15 Hz x (40 + 10) ms = 0.75 fits a 0.8 target; running 1.5x slower among the others (1.125) does not."""
    blocks = [one_block("det", 40.0), one_block("emb", 10.0)]
    alone = [loaded("det", 50.0), loaded("emb", 10.0)]
    config = {"admission_enabled": True, "admission_utilization": 0.8, "swap_utilization": None}
    assert Policy(cfg(**config)).decide(obs(alone, blocks), 1.0) == []
    slow = [replace(m, slowdown=1.5) for m in alone]
    decisions = Policy(cfg(**config)).decide(obs(slow, blocks), 1.0)
    assert [(d.model, d.kind) for d in decisions] == [("det", ADMIT)]
    # the embedder (15 ms x 15 Hz = 0.225) fits half of 0.8; the detector gets 0.575 / 0.9 = 0.64: every 2nd
    assert decisions[0].value == pytest.approx(0.5)
    assert "60.0 ms x 15.0 Hz" in decisions[0].reason  # 40 ms solo x 1.5


def test_overloaded_device_swaps_several_blocks_in_one_round_until_it_fits() -> None:
    """15 Hz x 4 blocks x 15 ms = 0.90; each int8 swap saves 10 ms (0.15): two swaps reach 0.60 <= 0.6."""
    int8 = (VariantOption("int8", 5.0, 0.995),)
    blocks = [block("det", f"b{i}", solo_ms=15.0, options=(VariantOption(ORIGINAL, 15.0, 1.0), *int8))
              for i in range(4)]
    policy = Policy(cfg(swap_utilization=0.6, admission_utilization=1.0, max_overload_swaps=6))
    decisions = policy.decide(obs([loaded("det", 50.0)], blocks), now_sec=1.0)
    swaps = [d for d in decisions if d.kind == "variant"]
    assert len(swaps) == 2 and {d.value for d in swaps} == {"int8"} and len({d.block for d in swaps}) == 2
    assert "0.90" in swaps[0].reason and "0.75" in swaps[1].reason
    capped = Policy(cfg(swap_utilization=0.1, admission_utilization=1.0, max_overload_swaps=3))
    assert len([d for d in capped.decide(obs([loaded("det", 50.0)], blocks), 1.0) if d.kind == "variant"]) == 3


def test_overload_swaps_still_come_when_several_models_are_late() -> None:
    int8 = (VariantOption(ORIGINAL, 30.0, 1.0), VariantOption("int8", 10.0, 0.995))
    blocks = [block("det", "b", lag_ms=20.0, solo_ms=30.0, options=int8),
              block("cls", "c", solo_ms=30.0, options=int8)]
    late = [loaded("det", 150.0), loaded("cls", 150.0)]  # both late; 15 Hz x 60 ms = 0.90
    decisions = Policy(cfg(swap_utilization=0.6, admission_utilization=1.0)).decide(obs(late, blocks), 1.0)
    assert ("det", "mode", SEQUENTIAL) in [(d.model, d.kind, d.value) for d in decisions]  # the late path first
    assert [(d.model, d.value) for d in decisions if d.kind == "variant"] == [("cls", "int8")]  # then overload


def test_overload_is_seen_before_every_model_has_a_rate() -> None:
    """At start-up only the pipeline's first model has frames: its 15 Hz x 60 ms = 0.90 alone overloads."""
    int8 = (VariantOption(ORIGINAL, 60.0, 1.0), VariantOption("int8", 20.0, 0.995))
    blocks = [block("det", "b", solo_ms=60.0, options=int8), block("cls", "c", solo_ms=30.0)]
    models = [loaded("det", 50.0), ModelObservation("cls", 100.0, None)]  # no rate, no latency yet
    decisions = Policy(cfg(swap_utilization=0.6)).decide(obs(models, blocks), now_sec=1.0)
    assert [(d.model, d.kind, d.value) for d in decisions] == [("det", "variant", "int8")]  # no admission yet


def contended(model_name: str, name: str, solo_ms: float, contended_ms: float, *, mode: str = PARALLEL,
              samples: int = 10) -> BlockObservation:
    return replace(block(model_name, name, solo_ms=solo_ms, mode=mode), contended_ms=contended_ms,
                   contended_samples=samples)


def test_a_block_that_costs_more_device_time_in_parallel_goes_sequential_even_when_nobody_is_late() -> None:
    policy = Policy(cfg())
    # 2 slots: alone it holds both for 10 ms (20 slot-ms); beside another block it held one for 30 ms > 20 x 1.15
    heavy = contended("det", "conv", 10.0, 30.0)
    light = contended("det", "head", 10.0, 15.0)  # 15 < 20: overlapping pays, stays parallel
    decisions = policy.decide(obs([model("det", 20.0)], [light, heavy]), now_sec=10.0)
    assert [(d.block, d.kind, d.value) for d in decisions] == [("conv", "mode", SEQUENTIAL)]
    assert "frees throughput" in decisions[0].reason and "30.0 ms" in decisions[0].reason
    # one worker, or too few contended samples: no decision that could not change anything / is not measured
    one = DeviceObservation("cpu", workers=1, slots=2)
    assert Policy(cfg()).decide(obs([model("det", 20.0)], [heavy], one), now_sec=10.0) == []
    assert Policy(cfg()).decide(obs([model("det", 20.0)], [replace(heavy, contended_samples=2)]), 10.0) == []
    # a solo figure from another input size (crops per frame) than the contended one measures nothing
    assert Policy(cfg()).decide(obs([model("det", 20.0)], [replace(heavy, solo_at_input=False)]), 10.0) == []


def test_a_block_made_sequential_for_throughput_is_re_probed_in_parallel_and_not_relaxed_meanwhile() -> None:
    policy = Policy(cfg(parallel_reprobe_sec=20.0, relax_dwell_sec=0.0))
    heavy = contended("det", "conv", 10.0, 30.0)
    assert policy.decide(obs([model("det", 20.0)], [heavy]), now_sec=10.0)[0].value == SEQUENTIAL
    serialized = replace(heavy, mode=SEQUENTIAL)
    for now in (15.0, 25.0):  # comfortable, but the relax step leaves throughput decisions alone
        assert policy.decide(obs([model("det", 20.0)], [serialized]), now_sec=now) == []
    back = policy.decide(obs([model("det", 20.0)], [serialized]), now_sec=30.0)
    assert [(d.block, d.value) for d in back] == [("conv", PARALLEL)] and "re-measure" in back[0].reason


def test_a_model_whose_frames_are_not_computed_is_late_without_invented_latencies() -> None:
    """Only 30 % of the recent frames computed (on time): late by the dropped share, helped by a swap."""
    dropping = replace(model("det", 20.0), dropped_fraction=0.7)
    int8 = (VariantOption(ORIGINAL, 10.0, 1.0), VariantOption("int8", 5.0, 0.99))
    lagging = block("det", "b", lag_ms=8.0, options=int8)
    decisions = Policy(cfg()).decide(obs([dropping], [lagging]), now_sec=10.0)
    assert [(d.kind, d.value) for d in decisions] == [("variant", "int8")]  # an overload: swap, not serialize
    assert "70% of its recent frames not computed" in decisions[0].reason
    only_drops = replace(dropping, latency_ms=None, dropped_fraction=1.0)
    assert Policy(cfg()).decide(obs([only_drops], [lagging]), now_sec=10.0)  # informed although nothing ran
    few = replace(model("det", 20.0), dropped_fraction=0.05)  # 5 % < 10 %: the 90th percentile still holds
    assert Policy(cfg()).decide(obs([few], [lagging]), now_sec=10.0) == []
