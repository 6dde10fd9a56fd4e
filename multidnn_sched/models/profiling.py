"""Cost figures of a model: solo latency (median wall time) and multiply-accumulates (FlopCounterMode / 2)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class ModelCost:
    """Solo cost of one model on one input.

    Attributes:
        gmacs: multiply-accumulates per call, 1e9 (FLOPs counted by ``FlopCounterMode`` / 2).
        params_m: parameters, millions.
        solo_latency_ms: median wall time of one call with nothing else running in this process.
        p90_latency_ms: 90th percentile of the same runs.
        input_shape: the input used.
        threads: torch intra-op threads during the measurement.
    """

    gmacs: float
    params_m: float
    solo_latency_ms: float
    p90_latency_ms: float
    input_shape: list[int]
    threads: int


def count_gmacs(model: nn.Module, example: Tensor) -> float:
    """Multiply-accumulates (1e9) of ``model(example)``."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(example)
    return counter.get_total_flops() / 2e9


def measure_latency_ms(
    fn: Callable[[], object],
    warmup: int = 3,
    repeats: int = 20,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Wall time (ms) of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append((clock() - start) * 1e3)
    return times


def model_cost(model: nn.Module, example: Tensor, warmup: int = 3, repeats: int = 20) -> ModelCost:
    """Measure ``model`` on ``example`` (inference mode)."""
    model.eval()

    def run() -> None:
        with torch.inference_mode():
            model(example)

    times = sorted(measure_latency_ms(run, warmup, repeats))
    return ModelCost(
        gmacs=round(count_gmacs(model, example), 4),
        params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        solo_latency_ms=round(statistics.median(times), 2),
        p90_latency_ms=round(times[min(len(times) - 1, int(0.9 * len(times)))], 2),
        input_shape=list(example.shape),
        threads=torch.get_num_threads(),
    )


DEFAULT_CROPS_PER_FRAME: int = 6
"""Crops per frame used for the embedder / classifier cost figures (a typical scene has 3-8 objects)."""
