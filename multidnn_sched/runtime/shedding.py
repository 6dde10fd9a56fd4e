"""The one "can this frame still make its deadline?" rule (firm deadlines).

The BlockExecutor applies it before a frame starts and at every block boundary; the tuned static baselines of
``multidnn-bench`` apply it before a frame starts (they have no block boundaries). A late result is a miss
either way, so computing a frame that cannot make its deadline only steals the device from frames that can.
"""

from __future__ import annotations

SHED_PROBE_FRAMES = 32
"""After this many frames of a model in a row were shed before they started, the next frame that can still make
its deadline by the model's solo figure runs unshed (a *probe*; the executor counts them in
``ModelStats.shed_probes``). The executor and the bench's static modes apply it alike (:func:`probe_due`).

Why: a frame shed before its first block refreshes none of the predictions that condemned it, so a figure can
seal the model out for good, right or wrong. Measured on the 2-core VM (2026-12-07, slow host: reference
convolution 2.1 ms), ``multidnn-bench`` default workload, ``blocks`` fp32, partitioned pool 2 x 1: in one 20 s
run all 900 frames of the three models were shed, so the device idled while every model's solo run time fitted
its deadline (detector 104-112 ms of 120, embedder 24-28 of 60, classifier 52-62 of 90, at 2 / 1 threads). In a
10 s debug run the classifier's prediction had settled at 89.99 ms against its 90 ms deadline during the
warm-up, so every frame that had waited more than 0.01 ms was shed (one waited 1.1 ms) and none of 150 ran.

Why 32: the executor's ``latency_window`` (the policy's observation window), so a frozen prediction lasts at most
one window and a model that truly cannot make its deadline costs at most 1 frame in 32 of its demand (~3 %). A
probe that waited too long to make it even by solo figures is not worth its device time: that frame is shed
and the next one probes. The earlier rule that judged EVERY frame after a shed by its solo figures (``2749443``,
reverted in ``7d1912c``) let a hopeless detector's frames run late one after another (187 late in the 25 Hz
tight workload); this one probes once per window."""


def is_hopeless(waited_ms: float, remaining_ms: float, total_ms: float, deadline_ms: float) -> bool:
    """True when a frame can no longer meet its deadline but a fresh frame of the same model could.

    Args:
        waited_ms: time since the frame's arrival, ms.
        remaining_ms: predicted latency of the work the frame still needs (its remaining blocks), ms.
        total_ms: predicted latency of the whole model for a fresh frame, ms.
        deadline_ms: the model's deadline, relative to arrival, ms.

    A model whose fresh frames cannot make the deadline either (``total_ms >= deadline_ms``) is never shed:
    shedding would then drop every frame, and a late answer is still an answer.
    """
    if total_ms >= deadline_ms:
        return False
    return waited_ms + remaining_ms > deadline_ms


def probe_due(unrefuted_sheds: int, limit: int | None, waited_ms: float, solo_ms: float | None,
              deadline_ms: float) -> bool:
    """True when a frame that the predictions call hopeless runs anyway, as a probe that refreshes them.

    Args:
        unrefuted_sheds: frames of the model shed in a row before they started, since it last ran.
        limit: :data:`SHED_PROBE_FRAMES`, or ``None`` for never.
        waited_ms: time since this frame's arrival, ms.
        solo_ms: the model's run time alone (profiled solo figures, or the best measured forward), ms.
        deadline_ms: the model's deadline, relative to arrival, ms.

    A probe that could not make its deadline even by ``solo_ms`` would spend device time on a certain miss, so
    that frame is shed and the next one is considered.
    """
    if limit is None or unrefuted_sheds < limit or solo_ms is None:
        return False
    return waited_ms + solo_ms <= deadline_ms
