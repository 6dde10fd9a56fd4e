"""Intra-op threads of the torch calls made on the ROS side of a container.

The nodes' pre-processing (resize, normalise, crops), post-processing (box decoding) and, in ``baseline`` mode,
the models themselves run in the ROS executor's threads. Each of those threads gets its own OpenMP team of
torch's default size (all cores) unless told otherwise, while the runtime's worker already sets its own team
per block: on a 2-core machine two 2-thread teams oversubscribe the cores and spin against each other (the
3-10x collapse measured in ``docs/runtime.md``). ``node_torch_threads`` (container parameter, default
:data:`NODE_TORCH_THREADS`) caps every ROS-side thread's team; ``0`` leaves torch's default.
"""

from __future__ import annotations

import threading

import torch

NODE_TORCH_THREADS: int = 1
"""Default intra-op threads per ROS-side thread: the runtime's worker owns the cores' OpenMP teams (measured
effect of the cap on `make demo` in docs/ros.md)."""

_state = threading.local()


def use_torch_threads(threads: int) -> None:
    """Set the CALLING thread's torch intra-op threads to ``threads`` (once per thread; ``0``: leave as is).

    ``torch.set_num_threads`` governs the calling thread's OpenMP team only (docs/runtime.md), so every
    callback thread sets it for itself; repeated calls with the same value cost a thread-local lookup."""
    if threads <= 0 or getattr(_state, "threads", None) == threads:
        return
    torch.set_num_threads(threads)
    _state.threads = threads
