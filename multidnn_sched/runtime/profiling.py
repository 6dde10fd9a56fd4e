"""Solo profiling of the executor's blocks: at start-up and again when the executor has been idle.

Mixed into :class:`~multidnn_sched.runtime.executor.BlockExecutor`.
"""

from __future__ import annotations

import threading

from multidnn_sched.exceptions import ConfigError
from multidnn_sched.runtime.block import Carry
from multidnn_sched.runtime.device import SlotGate
from multidnn_sched.runtime.lag import bucket_carries, profile_model
from multidnn_sched.runtime.state import ExecutorState


class ProfilingMixin(ExecutorState):
    """Solo profiling of :class:`BlockExecutor` (see the module docstring)."""

    _gate: SlotGate
    _alone_threads: dict[tuple[str, str], int]
    _worker_threads: int | None
    _sequential_threads: int | None
    _profile_epoch: int
    _profiled_bucket: dict[tuple[str, str], int]
    _last_activity_sec: float
    reprofile_idle_sec: float | None
    reprofile_interval_sec: float

    def _idle(self) -> bool:
        with self._cond:
            return not any(m.in_flight or m.pending for m in self._models.values())

    def _maybe_reprofile(self) -> None:
        if self.reprofile_idle_sec is None or not self._idle():
            return
        now = self._clock()
        if now - self._last_activity_sec < self.reprofile_idle_sec:
            return
        for name, model in list(self._models.items()):
            stale = model.last_profile_sec is None or now - model.last_profile_sec >= self.reprofile_interval_sec
            if model.example_input is not None and stale and self._idle():
                self.log.info("re-profiling %s (idle %.1f s)", name, now - self._last_activity_sec)
                self.profile_solo(name, repeats=3)

    def profile_solo(
        self, model_name: str | None = None, example_input: Carry | None = None, *, repeats: int = 5, warmup: int = 2
    ) -> dict[tuple[str, str, str], float]:
        """Measure every block (and usable variant) alone with the whole device; returns median solo ms
        keyed ``(model, block, variant)``. Variants that raise or whose output signature differs from the
        original's are disabled. Each block runs under the exclusive slot, behind every queued frame.

        On CPU each block keeps all intra-op threads only if they pay (see :func:`lag.profile_model`); the
        caller's thread is left with all threads. In the partitioned pool every block is also timed at
        ``sequential_threads`` (the figures of its sequential mode, kept apart: ``_seq_solo_ms``)."""
        names = [model_name] if model_name is not None else list(self._models)
        measured: dict[tuple[str, str, str], float] = {}
        buckets: dict[tuple[str, str], int] = {}
        by_bucket: dict[tuple[str, str, str, int], float] = {}
        measured_seq: dict[tuple[str, str, str], float] = {}  # at sequential_threads (partitioned pool)
        by_bucket_seq: dict[tuple[str, str, str, int], float] = {}
        outcome: list[BaseException] = []

        def measure() -> None:
            try:
                for name in names:
                    model = self._model(name)
                    carry = example_input if example_input is not None else model.example_input
                    if carry is None:
                        raise ConfigError(f"profile_solo({name!r}): no example_input given or registered")
                    if example_input is not None and model.example_input is None:
                        model.example_input = example_input
                    profiles = profile_model(model.pm, carry, self.device, self._gate, self._registry,
                                             repeats=repeats, warmup=warmup,
                                             compare_threads=self._worker_count > 1,
                                             fixed_threads=self._worker_threads,
                                             sequential_threads=self._sequential_threads)
                    for block_name, profile in profiles.items():
                        if profile.threads_alone is not None:
                            self._alone_threads[(name, block_name)] = profile.threads_alone
                        buckets[(name, block_name)] = profile.bucket
                        for variant, solo_ms in profile.solo_ms.items():
                            measured[(name, block_name, variant)] = solo_ms
                        for variant, solo_ms in profile.sequential_solo_ms.items():
                            measured_seq[(name, block_name, variant)] = solo_ms
                    # The other input sizes a crops model meets (1-32 crops a frame): their own solo figures,
                    # so that a frame's LAG is measured against its own size (the LAG tracker's key), never
                    # against the example's. Fewer repeats: they only seed figures that alone runs refine.
                    for bucket_carry in bucket_carries(carry):
                        for block_name, profile in profile_model(
                            model.pm, bucket_carry, self.device, self._gate, self._registry,
                            repeats=max(1, repeats // 2), warmup=1, compare_threads=self._worker_count > 1,
                            fixed_threads=self._worker_threads, set_variant_solo=False,
                            sequential_threads=self._sequential_threads,
                        ).items():
                            for variant, solo_ms in profile.solo_ms.items():
                                by_bucket[(name, block_name, variant, profile.bucket)] = solo_ms
                            for variant, solo_ms in profile.sequential_solo_ms.items():
                                by_bucket_seq[(name, block_name, variant, profile.bucket)] = solo_ms
                    model.last_profile_sec = self._clock()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
                outcome.append(exc)

        # Measured in a short-lived thread: its OpenMP team dies with it (see ONE_OPENMP_TEAM_NOTE), so profiling
        # never leaves a second multi-threaded team behind in the caller's (main or decision) thread.
        profiler = threading.Thread(target=measure, name="blockexec-profile", daemon=True)
        profiler.start()
        profiler.join()
        if outcome:
            raise outcome[0]
        with self._stats_lock:
            self._solo_ms.update(measured)
            self._profiled_bucket.update(buckets)
            for (name, block_name, variant), solo_ms in measured.items():
                bucket = buckets.get((name, block_name), 1)
                self._lag.set_solo((name, block_name, variant, bucket), solo_ms)
            for lag_key, solo_ms in by_bucket.items():
                self._lag.set_solo(lag_key, solo_ms)
            self._seq_solo_ms.update(measured_seq)
            for (name, block_name, variant), solo_ms in measured_seq.items():
                self._seq_lag.set_solo((name, block_name, variant, buckets.get((name, block_name), 1)), solo_ms)
            for lag_key, solo_ms in by_bucket_seq.items():
                self._seq_lag.set_solo(lag_key, solo_ms)
            self._profile_epoch += 1
        return measured
