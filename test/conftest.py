"""Shared pytest setup: tests marked ``needs_cuda`` are skipped when no CUDA GPU is available."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)
