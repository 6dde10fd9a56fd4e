"""Heap trimming: freed arena pages go back to the OS (glibc), a no-op elsewhere."""

from __future__ import annotations

import pytest

from multidnn_sched.ros.heap import _libc, release_free_heap


def test_release_free_heap_returns_the_pages_of_freed_chunks() -> None:
    if _libc() is None:
        pytest.skip("not glibc: release_free_heap is a no-op")
    # 64 KiB buffers come from a malloc arena (below the 128 KiB mmap threshold); freeing every other one
    # leaves page-sized holes between live chunks that only malloc_trim gives back.
    buffers = [bytearray(64 * 1024) for _ in range(256)]
    del buffers[::2]
    try:
        assert release_free_heap() is True
    finally:
        del buffers
