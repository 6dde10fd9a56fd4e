"""Node-side bookkeeping, free of rclpy: frame counters, drop causes, latency windows, output rates.

Every perception node owns one :class:`NodeStats`; the container reads :meth:`NodeStats.snapshot` once a
second to build ``/diagnostics``. All methods are thread-safe (callbacks run on a MultiThreadedExecutor and
runtime futures complete on executor worker threads).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from multidnn_sched.ros.timing import StageSummary, TimingLog

LATENCY_WINDOW_SIZE = 512
"""Latency samples kept per node for p50 / p99 (about 30 s at 15 Hz)."""

RATE_WINDOW_SEC = 5.0
"""Output rate is the number of outputs in the last this-many seconds divided by it."""


class LatencyWindow:
    """The last ``size`` latency samples (ms) and their percentiles."""

    def __init__(self, size: int = LATENCY_WINDOW_SIZE) -> None:
        if size < 1:
            raise ValueError(f"expected a window size >= 1, got {size}")
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, latency_ms: float) -> None:
        with self._lock:
            self._samples.append(float(latency_ms))

    def percentile_ms(self, q: float) -> float | None:
        """The ``q``-th percentile (0..100) of the window, ``None`` when empty."""
        with self._lock:
            if not self._samples:
                return None
            values = np.fromiter(self._samples, dtype=np.float64)
        return float(np.percentile(values, q))

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)


class RateMeter:
    """Events per second over a sliding window, with an injectable clock (seconds)."""

    def __init__(
        self, window_sec: float = RATE_WINDOW_SEC, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if window_sec <= 0.0:
            raise ValueError(f"expected window_sec > 0, got {window_sec}")
        self._window_sec = window_sec
        self._clock = clock
        self._times: deque[float] = deque()
        self._start = clock()
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._times.append(self._clock())

    def rate_hz(self) -> float:
        with self._lock:
            now = self._clock()
            while self._times and self._times[0] < now - self._window_sec:
                self._times.popleft()
            span = min(self._window_sec, max(now - self._start, 1e-9))
            return len(self._times) / span


class DropLog:
    """Counts dropped inputs per cause and says whether this cause should be logged (once per cause)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, cause: str) -> bool:
        """Count one drop; returns ``True`` the first time ``cause`` is seen (the caller logs it then)."""
        with self._lock:
            first = cause not in self._counts
            self._counts[cause] = self._counts.get(cause, 0) + 1
            return first

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


@dataclass
class NodeSnapshot:
    """What one node reports on ``/diagnostics``.

    Attributes:
        node: node name.
        model: the model the node runs (``"detector"``, ``"embedder"``, ``"classifier"``).
        received: input messages received.
        processed: outputs published.
        dropped: frames dropped after reception (queue full, runtime drop, no matching image...).
        bad_inputs: malformed inputs by cause (``unknown_encoding``, ``bad_step``, ``zero_size``,
            ``short_data``).
        rate_hz: output rate over the last :data:`RATE_WINDOW_SEC` seconds.
        latency_p50_ms: median input-to-output latency (``None``: no sample yet).
        latency_p99_ms: 99th percentile of the same.
        drop_causes: dropped frames by cause.
        breakdown: per stage (``transport``, ``decode``, ``queue``, ``model``, ``postprocess``, ``publish``,
            ``latency``) its p50 / p99 / mean over the timing window (:mod:`multidnn_sched.ros.timing`).
    """

    node: str
    model: str
    received: int
    processed: int
    dropped: int
    bad_inputs: dict[str, int]
    rate_hz: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    drop_causes: dict[str, int] = field(default_factory=dict)
    breakdown: dict[str, StageSummary] = field(default_factory=dict)

    @property
    def bad_input_total(self) -> int:
        return sum(self.bad_inputs.values())


class NodeStats:
    """Counters of one node: received / processed / dropped / bad inputs, latency window, output rate."""

    def __init__(self, node: str, model: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.model = model
        self.latency = LatencyWindow()
        self.rate = RateMeter(clock=clock)
        self.bad_inputs = DropLog()
        self.drops = DropLog()
        self.timing = TimingLog()
        self._received = 0
        self._processed = 0
        self._lock = threading.Lock()

    def on_received(self) -> None:
        with self._lock:
            self._received += 1

    def on_processed(self, latency_ms: float) -> None:
        with self._lock:
            self._processed += 1
        self.latency.add(latency_ms)
        self.rate.tick()

    def on_bad_input(self, cause: str) -> bool:
        """Count a malformed input; ``True`` when this cause is new (log it once)."""
        return self.bad_inputs.record(cause)

    def on_dropped(self, cause: str) -> bool:
        """Count a dropped frame; ``True`` when this cause is new (log it once)."""
        return self.drops.record(cause)

    def snapshot(self) -> NodeSnapshot:
        with self._lock:
            received, processed = self._received, self._processed
        return NodeSnapshot(
            node=self.node,
            model=self.model,
            received=received,
            processed=processed,
            dropped=self.drops.total(),
            bad_inputs=self.bad_inputs.counts(),
            rate_hz=self.rate.rate_hz(),
            latency_p50_ms=self.latency.percentile_ms(50.0),
            latency_p99_ms=self.latency.percentile_ms(99.0),
            drop_causes=self.drops.counts(),
            breakdown=self.timing.breakdown(),
        )


EVICTED_IMAGES_REMEMBERED = 1024
"""Stamps of evicted images a :class:`StampPairer` remembers, so late detections for them are dropped at once."""


class StampPairer:
    """Pairs an image with the detections computed from it, by header stamp (ns).

    There is no message_filters here. Both sides are kept in bounded caches (oldest evicted first); whichever
    arrives second completes the pair. Evicted detections (their image never came: the image subscription is
    best effort, keep last ``image_depth``) are counted and reported through ``on_evict(stamp_ns)``, and so
    are, at once, detections whose image came but was evicted before them (the detector lags more than
    ``capacity`` frames).
    """

    def __init__(self, capacity: int = 30, on_evict: Callable[[int], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"expected capacity >= 1, got {capacity}")
        self._capacity = capacity
        self._on_evict = on_evict
        self._images: OrderedDict[int, object] = OrderedDict()
        self._detections: OrderedDict[int, object] = OrderedDict()
        self._evicted_images: OrderedDict[int, None] = OrderedDict()
        self.evicted_detections = 0
        self._lock = threading.Lock()

    def add_image(self, stamp_ns: int, image: object) -> object | None:
        """Store ``image``; returns the detections waiting for it (then both are forgotten), else ``None``."""
        with self._lock:
            waiting = self._detections.pop(stamp_ns, None)
            if waiting is not None:
                return waiting
            self._images[stamp_ns] = image
            while len(self._images) > self._capacity:
                self._evicted_images[self._images.popitem(last=False)[0]] = None
            while len(self._evicted_images) > EVICTED_IMAGES_REMEMBERED:
                self._evicted_images.popitem(last=False)
            return None

    def add_detections(self, stamp_ns: int, detections: object) -> object | None:
        """Store ``detections``; returns their image when it came already (then both are forgotten)."""
        with self._lock:
            image = self._images.pop(stamp_ns, None)
            if image is not None:
                return image
            evicted = []
            if stamp_ns in self._evicted_images:  # its image came and was evicted: it will never pair
                del self._evicted_images[stamp_ns]
                evicted.append(stamp_ns)
                self.evicted_detections += 1
            else:
                self._detections[stamp_ns] = detections
            while len(self._detections) > self._capacity:
                evicted.append(self._detections.popitem(last=False)[0])
                self.evicted_detections += 1
        for stamp in evicted:
            if self._on_evict is not None:
                self._on_evict(stamp)
        return None

    def sizes(self) -> tuple[int, int]:
        """(images waiting, detections waiting)."""
        with self._lock:
            return len(self._images), len(self._detections)


class InOrder:
    """Runs per-frame completions in the order the frames were issued, whatever order they finish in.

    The tracker's state must be stepped frame by frame; frames with no detections skip the model and would
    otherwise overtake frames still in the runtime. ``ticket()`` when a frame starts; ``complete(ticket, fn)``
    when it finishes (``fn=None``: the frame was dropped). ``fn`` runs once all earlier tickets completed.
    """

    def __init__(self) -> None:
        self._issued = 0
        self._next = 0
        self._ready: dict[int, Callable[[], None] | None] = {}
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()

    def ticket(self) -> int:
        with self._lock:
            ticket = self._issued
            self._issued += 1
            return ticket

    def complete(self, ticket: int, fn: Callable[[], None] | None) -> None:
        with self._lock:
            self._ready[ticket] = fn
        with self._run_lock:
            while True:
                with self._lock:
                    if self._next not in self._ready:
                        return
                    runnable = self._ready.pop(self._next)
                    self._next += 1
                if runnable is not None:
                    runnable()

    def pending(self) -> int:
        with self._lock:
            return self._issued - self._next
