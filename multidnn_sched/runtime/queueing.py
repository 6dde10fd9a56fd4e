"""Queueing of :class:`~multidnn_sched.runtime.executor.BlockExecutor`: ``submit`` (admission control, the
bounded per-model pending queue, newest wins), the ready heap's keys (EDF, LST or FIFO with the priority bias),
the dispatch of a model's next frame, and which ready job a worker may take (``placement``: any, or only its
pinned models', see :mod:`multidnn_sched.runtime.placement`). Mixed into the executor; the workers take what
this pushes.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import Future

from multidnn_sched.exceptions import ExecutorShutdownError, FrameDroppedError, FrameSkippedError
from multidnn_sched.runtime.block import Carry
from multidnn_sched.runtime.jobs import Frame, Job, Model, admit, fail
from multidnn_sched.runtime.placement import place_models
from multidnn_sched.runtime.state import ExecutorState


class QueueingMixin(ExecutorState):
    """Frame submission and dispatch of :class:`BlockExecutor` (see the module docstring)."""

    _ready: list[Job]
    _seq: itertools.count
    _stopping: bool
    _last_activity_sec: float
    queue_order: str
    placement: str
    priority_weight_ms: float
    _homes: dict[str, int]
    _fixed_workers: int | None
    _predicted_run_ms: Callable[..., tuple[float, float] | None]

    def submit(self, model_name: str, carry: Carry, *, arrival_time: float | None = None) -> Future:
        """Queue one frame; the future's result is the model output (or the frame's exception).

        While admission control admits only a fraction of the model's frames (an ``admit`` decision of the
        policy on an overloaded device) the other frames fail at once with :class:`FrameSkippedError` (a
        :class:`FrameDroppedError`)."""
        model = self._model(model_name)
        frame = Frame(Future(), carry, self._clock() if arrival_time is None else arrival_time)
        dropped: Frame | None = None
        reason = ""
        error_type: type[FrameDroppedError] = FrameDroppedError
        with self._cond:
            if self._stopping:
                raise ExecutorShutdownError(f"cannot submit to {model_name!r}: BlockExecutor is shut down")
            model.stats.submitted += 1
            self._last_activity_sec = self._clock()
            model.arrivals.append(frame.arrival_sec)
            if not admit(model):
                dropped, error_type = frame, FrameSkippedError
                model.stats.dropped += 1
                model.stats.skipped += 1
                reason = (f"model {model_name!r}: frame skipped by admission control (device overloaded, "
                          f"admitting {model.admit_fraction:.0%} of frames)")
            else:
                model.pending.append(frame)
                if len(model.in_flight) < model.max_in_flight:
                    self._dispatch_next(model)
                elif len(model.pending) > model.queue_depth:
                    dropped = model.pending.popleft()
                    model.stats.dropped += 1
                    model.recent.append(None)  # not computed: the policy sees the share of such frames
                    reason = (f"model {model_name!r}: frame dropped, pending queue full "
                              f"(depth {model.queue_depth}, newest wins)")
        if dropped is not None:
            fail(dropped, error_type(reason))
        return frame.future

    def _job_key(self, model: Model, arrival_sec: float) -> tuple[float, int]:
        """Heap key: absolute deadline (EDF), latest start time (LST: deadline minus the predicted run time) or
        arrival (FIFO), minus the optional priority bias; equal keys go to the higher priority. Caller holds
        ``_cond`` (LST then takes the stats lock inside it: the only nesting order of the two locks)."""
        key = arrival_sec
        if self.queue_order != "fifo":
            key += model.deadline_ms / 1000.0
        if self.queue_order == "lst":
            predicted = self._predicted_run_ms(model)
            if predicted is not None:
                key -= predicted[0] / 1000.0
        return key - model.priority * self.priority_weight_ms / 1000.0, -model.priority

    def _dispatch_next(self, model: Model) -> None:
        """Move the model's oldest pending frames to the ready heap while fewer than ``max_in_flight`` of its
        frames are dispatched (caller holds ``_cond``)."""
        while model.pending and len(model.in_flight) < model.max_in_flight:
            frame = model.pending.popleft()
            if frame.future.set_running_or_notify_cancel():
                job = Job(self._job_key(model, frame.arrival_sec), next(self._seq), model, frame, 0, frame.carry)
                heapq.heappush(self._ready, job)
                model.in_flight.append(frame)
                if self.placement == "pinned":
                    self._update_homes()
                self._wake_workers()

    # -- which worker takes what (placement) -----------------------------------------------------------------

    def _wake_workers(self) -> None:
        """A job was pushed (caller holds ``_cond``): wake one worker, or every worker when only the job's home
        worker may take it (a plain ``notify`` could wake another one, which would go back to sleep)."""
        if self.placement == "pinned":
            self._cond.notify_all()
        else:
            self._cond.notify()

    def _may_run(self, job: Job, worker: int) -> bool:
        home = self._homes.get(job.model.pm.name)
        return home is None or home == worker

    def _head(self, worker: int) -> Job | None:
        """The most urgent ready job ``worker`` may run, left in the heap (read under ``_cond``, or as a racy
        peek that the caller re-checks under it)."""
        if self.placement != "pinned":
            return self._ready[0] if self._ready else None
        mine = [job for job in list(self._ready) if self._may_run(job, worker)]
        return min(mine) if mine else None

    def _take_job(self, worker: int) -> Job | None:
        """Remove and return the most urgent ready job ``worker`` may run; None if there is none (caller holds
        ``_cond``). Shared placement: the heap's top. Pinned: a scan of at most one job per model."""
        if self.placement != "pinned":
            return heapq.heappop(self._ready) if self._ready else None
        job = self._head(worker)
        if job is not None:
            index = next(i for i, ready in enumerate(self._ready) if ready is job)
            self._ready[index] = self._ready[-1]
            self._ready.pop()
            heapq.heapify(self._ready)
        return job

    def _update_homes(self) -> None:
        """Re-place every model that has figures on the workers (caller holds ``_cond``; ``placement="pinned"``).

        A model's load is its predicted run time (the blocks' EMA-observed latencies, the shedding figures) over
        its mean arrival period (the last frames' arrivals; its deadline while fewer than two arrived). Models
        without figures have no home and run anywhere until they have."""
        loads: dict[str, float] = {}
        for name, model in self._models.items():
            predicted = self._predicted_run_ms(model)
            if predicted is None:
                continue
            loads[name] = predicted[0] / arrival_period_ms(model)
        homes = place_models(loads, self._fixed_workers or 1)
        if homes != self._homes:
            self.log.debug("placement: home workers %s (loads %s)", homes,
                          {name: round(load, 2) for name, load in loads.items()})
            self._homes = homes

    def homes(self) -> dict[str, int]:
        """``placement="pinned"``: each placed model's home worker (empty under ``"shared"``)."""
        with self._cond:
            return dict(self._homes)


def arrival_period_ms(model: Model) -> float:
    """Mean time between the model's recent frame arrivals, ms; its deadline while fewer than two arrived."""
    arrivals = model.arrivals
    if len(arrivals) >= 2 and arrivals[-1] > arrivals[0]:
        return (arrivals[-1] - arrivals[0]) * 1000.0 / (len(arrivals) - 1)
    return model.deadline_ms
