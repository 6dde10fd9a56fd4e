"""Did the machine keep its speed while the bench measured? A fixed reference kernel timed before every run.

:mod:`multidnn_sched.bench.quiet` sees CPU that other processes of *this* machine use. It cannot see a virtual
machine whose host is busy: the guest's ``/proc/stat`` shows neither steal time nor other processes, yet the
same forward pass takes much longer. Every timed run and sweep probe therefore first times a fixed convolution
(:func:`speed_probe_ms`) with every core, and the report flags a bench whose probes spread by more than
:data:`MACHINE_SPEED_MAX_SPREAD` (slowest / fastest): its modes were not measured on the same machine.
It compares the runs of one bench with each other; a host that is slow for the whole bench is not flagged (the
report's solo latencies and capacity bound show that).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

MACHINE_SPEED_MAX_SPREAD: float = 1.5
"""A bench is 'speed NOT steady' when its slowest probe took more than 1.5x its fastest.

Measured here (2026-12-02, 2-core VM, nothing else running in the guest, ``/proc/stat`` steal 0): the default
detector's solo forward with 2 threads took 51.8-54.3 ms in one run and 83.8-89.7 ms a minute later (1.65x); in
the previous sessions' quiet benches it took 42-49 ms. In the same hour 25 probes of this module one second
apart took 2.01-3.19 ms (median 2.46, spread 1.59), 30 probes back to back 3.41-5.88 ms (spread 1.73): the host
itself changed speed from second to second. A steady host was not available to measure the probe's own spread;
1.5 flags a machine that drifted as much as this one did, and errs on the side of not flagging milder drift —
re-measure it on a steady host and lower it if its probes stay well inside."""

PROBE_SHAPE = (1, 64, 56, 56)
"""Input of the reference 3x3 convolution (64 -> 64 channels): ~116 M multiply-adds, ~2-4 ms on 2 cores —
a stage of a ResNet-style backbone, the kind of kernel the default models spend their time in."""
PROBE_REPEATS = 60
"""Timed forwards per probe (median): ~0.2 s per probe, ~4 s for a 21-run ``--repeats 3`` bench."""

PROBE_WARMUP = 5
"""Untimed forwards first: the OpenMP team wakes up from its sleep (the first forward after a pause of a second
or more took up to 2x the others here)."""

_WEIGHT: torch.Tensor | None = None


def speed_probe_ms(threads: int | None = None, repeats: int = PROBE_REPEATS) -> float:
    """Median wall time of the reference convolution, ms, with ``threads`` intra-op threads (default: the
    calling thread's current count, which is restored afterwards)."""
    global _WEIGHT
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    if _WEIGHT is None:
        generator = torch.Generator().manual_seed(0)
        _WEIGHT = torch.randn(64, 64, 3, 3, generator=generator) * 0.05
    x = torch.ones(PROBE_SHAPE)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        times: list[float] = []
        with torch.inference_mode():
            for _ in range(PROBE_WARMUP):
                torch.nn.functional.conv2d(x, _WEIGHT, padding=1)
            for _ in range(repeats):
                start = time.perf_counter()
                torch.nn.functional.conv2d(x, _WEIGHT, padding=1)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        if threads is not None:
            torch.set_num_threads(previous)
    return statistics.median(times)


def speed_summary(values: Sequence[float | None]) -> dict[str, float | int | bool] | None:
    """Median / fastest / slowest probe, their spread (slowest / fastest) and whether it stayed within
    :data:`MACHINE_SPEED_MAX_SPREAD` (``None`` when no probe was taken)."""
    known = [v for v in values if v is not None and v > 0]
    if not known:
        return None
    spread = max(known) / min(known)
    return {"median_ms": statistics.median(known), "min_ms": min(known), "max_ms": max(known),
            "spread": spread, "probes": len(known), "steady": spread <= MACHINE_SPEED_MAX_SPREAD,
            "max_spread": MACHINE_SPEED_MAX_SPREAD}


def format_speed(summary: dict[str, float | int | bool] | None, what: str = "runs") -> str | None:
    """One report line: the machine kept its speed, or a warning that the modes are not comparable."""
    if not summary:
        return None
    figures = (f"the reference convolution took {summary['median_ms']:.2f} ms (median; {summary['min_ms']:.2f}–"
               f"{summary['max_ms']:.2f}, spread {summary['spread']:.2f}x) before the {summary['probes']} {what}")
    if not summary["steady"]:
        return (f"- **machine speed NOT steady**: {figures}, above {summary['max_spread']:.2f}x — the host slowed "
                f"or sped up between runs (a busy VM host shows no load inside the guest); modes measured at "
                f"different speeds are not comparable, re-run.")
    return f"- machine speed steady: {figures} (≤ {summary['max_spread']:.2f}x)."
