"""Hand the process's freed heap memory back to the OS, so the container's RSS stays flat over long runs.

The nodes and the runtime free frame-sized buffers (0.9 MB ``Image`` data, decoded frames, input tensors) on
several threads. Once glibc has raised its dynamic mmap threshold, these come from per-thread malloc arenas,
and the freed chunks stay resident, scattered between live ones. In a 90 s ``blocks+swap`` replay with
malloc's in-use bytes flat at ~750 MB, arena free space grew 160 -> 340 MB and RSS grew 230 MB. Calling
``malloc_trim(0)`` once a second kept RSS flat (1532 -> 1525 MB), at 23 ms median (50 ms max) per call, off
the inference path. Pinning ``M_MMAP_THRESHOLD`` to 128 KiB kept RSS flat too, but made the detector's forward
pass ~50 % slower (46-51 -> 76-78 ms: every large activation is then mmapped and faulted in).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

HEAP_TRIM_PERIOD_SEC = 5.0
"""The container trims the heap this often: RSS then drifts by at most ~15 MB between trims (the soak's
untrimmed growth was ~3 MB/s), for ~5 ms of one core per second."""


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "malloc_trim") else None


def release_free_heap() -> bool:
    """Return the free pages of every malloc arena to the OS (glibc ``malloc_trim(0)``).

    Returns:
        ``True`` when memory was released; ``False`` when there was none to release or outside glibc (no-op).
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))
