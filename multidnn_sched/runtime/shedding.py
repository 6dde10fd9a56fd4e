"""The one "can this frame still make its deadline?" rule (firm deadlines).

The BlockExecutor applies it before a frame starts and at every block boundary; the tuned static baselines of
``multidnn-bench`` apply it before a frame starts (they have no block boundaries). A late result is a miss
either way, so computing a frame that cannot make its deadline only steals the device from frames that can.
"""

from __future__ import annotations


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
