"""Which worker runs which model under ``placement="pinned"`` (partitioned scheduling).

With ``placement="shared"`` (the default) every worker takes the most urgent ready job of any model: *global*
EDF. Global EDF has a known failure on a few processors (Dhall & Liu 1978, "Dhall's effect"): one long model
beside short ones with nearer deadlines loses every contest for a worker, and when its slack is smaller than the
short models' block lengths it never finds a free worker in time and is shed frame after frame. Measured here on
the held-out 25 Hz tight workload in the partitioned CPU pool (2 workers x 1 thread, 2026-12-06,
``docs/bench/pool_heldout_25hz_tight_w2t1.json``): the detector's ~71 ms forward with an 80 ms deadline got 0 of
500 frames under EDF, and 0 of 500 under latest-start-time order as well (``..._lst.json``): ordering alone
cannot help a job whose slack is shorter than the wait for a block boundary.

``placement="pinned"`` gives every model a *home* worker and each worker runs EDF over the models it hosts
(*partitioned* EDF, the other classic multiprocessor discipline): a worker that hosts only the heavy model is
free when its next frame arrives, because nothing else is ever started there. The assignment is worst-fit
decreasing bin packing of the models' measured utilizations (predicted run time x arrival rate), so the
heaviest model gets a worker to itself whenever its load is the largest share, and the rest balance: no tuned
constant, only measured costs. It is recomputed from the live figures at every dispatch (cheap: a handful of
models), so it follows swaps and rate changes. A model without figures yet has no home: any worker may run it.

Measured on the 2-core machine (partitioned pool, 2 workers x 1 thread, ``--repeats 3``, docs/results.md): no
win there, so it is opt-in. On the 25 Hz tight workload the detector, alone on its worker, still met 0 of 500:
beside the other worker its one-thread forward took ~80 ms, its deadline. On the default workload the
classifier fell to 0.303 (``threads``: 0.643): embedder and classifier overload the worker they share while
the detector's worker may not help (partitioned scheduling is not work-conserving).
"""

from __future__ import annotations

from collections.abc import Mapping

PLACEMENTS = ("shared", "pinned")
"""``shared``: any worker runs any model's block (global EDF/LST/FIFO over one ready heap). ``pinned``: each
model runs on its home worker only, from :func:`place_models` (partitioned scheduling); needs ``num_workers``
>= 2."""


def place_models(loads: Mapping[str, float], workers: int) -> dict[str, int]:
    """Home worker (0 .. ``workers`` - 1) of every model: worst-fit decreasing on ``loads``.

    Args:
        loads: per model, its utilization of one worker (predicted run ms x arrivals per ms; > 1 means it
            alone overloads a worker). Models are placed heaviest first (ties by name, so the result is
            deterministic), each on the worker with the least load so far (ties: the lowest index).
        workers: number of workers, >= 1.

    Returns:
        ``{model: worker index}`` for every model of ``loads``.
    """
    if workers < 1:
        raise ValueError(f"place_models needs workers >= 1, got {workers!r}")
    bad = {name: load for name, load in loads.items() if not load >= 0.0}
    if bad:
        raise ValueError(f"place_models: loads must be finite and >= 0, got {bad}")
    totals = [0.0] * workers
    homes: dict[str, int] = {}
    for name in sorted(loads, key=lambda n: (-loads[n], n)):
        worker = min(range(workers), key=lambda w: (totals[w], w))
        homes[name] = worker
        totals[worker] += loads[name]
    return homes
