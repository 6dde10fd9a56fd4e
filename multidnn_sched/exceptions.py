"""Public exceptions of multidnn_sched. Messages say what was expected and what came, and name the file."""

from __future__ import annotations


class MultiDnnError(Exception):
    """Raised when: base class of every error this package raises on purpose."""


class ConfigError(MultiDnnError, ValueError):
    """Raised when a configuration value (YAML workload, parameter, CLI option) is missing or out of range."""


class BagError(MultiDnnError):
    """Raised when a rosbag2 cannot be read: unreadable, truncated, or lacking a required topic."""


class CheckpointError(MultiDnnError):
    """Raised when a model or variant file is missing, fails its sha256 check, or has the wrong shapes."""


class PartitionError(MultiDnnError):
    """Raised when a model cannot be cut into blocks (unknown family and the FX fallback fails)."""


class VariantError(MultiDnnError):
    """Raised when a block variant cannot be registered or loaded (wrong block, wrong output shape...)."""


class ImageConversionError(MultiDnnError, ValueError):
    """Raised when a sensor_msgs/Image cannot be converted: unknown encoding, bad step, zero size, short data."""


class ExecutorShutdownError(MultiDnnError, RuntimeError):
    """Raised when work is submitted to a BlockExecutor that is shut down or shutting down."""


class FrameDroppedError(MultiDnnError):
    """Raised (set on the frame's future) when a queued frame is dropped by the queue's drop policy.

    ``cause`` names why, for per-cause drop counts: ``"queue"`` here, ``"admission"`` / ``"shed"`` in the
    subclasses."""

    cause = "queue"


class FrameSkippedError(FrameDroppedError):
    """A frame dropped on arrival by admission control (the device is overloaded; see ``docs/runtime.md``)."""

    cause = "admission"


class FrameShedError(FrameDroppedError):
    """A frame dropped before or between its blocks because it could no longer meet its deadline (firm
    deadlines, :func:`multidnn_sched.runtime.shedding.is_hopeless`)."""

    cause = "shed"
