"""Offline compression: per-block variants (pruned, int8, Tucker, TensorRT) with a manifest and a report."""
