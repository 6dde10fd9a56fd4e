"""Queueing of :class:`~multidnn_sched.runtime.executor.BlockExecutor`: ``submit`` (admission control, the
bounded per-model pending queue, newest wins), the ready heap's keys (EDF, LST or FIFO with the priority bias) and
the dispatch of a model's next frame. Mixed into the executor; the workers pop what this pushes.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import Future

from multidnn_sched.exceptions import ExecutorShutdownError, FrameDroppedError, FrameSkippedError
from multidnn_sched.runtime.block import Carry
from multidnn_sched.runtime.jobs import Frame, Job, Model, admit, fail
from multidnn_sched.runtime.state import ExecutorState


class QueueingMixin(ExecutorState):
    """Frame submission and dispatch of :class:`BlockExecutor` (see the module docstring)."""

    _ready: list[Job]
    _seq: itertools.count
    _stopping: bool
    _last_activity_sec: float
    queue_order: str
    priority_weight_ms: float
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
                if not model.busy:
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
        """Move the model's oldest pending frame to the ready heap (caller holds ``_cond``)."""
        while model.pending:
            frame = model.pending.popleft()
            if frame.future.set_running_or_notify_cancel():
                job = Job(self._job_key(model, frame.arrival_sec), next(self._seq), model, frame, 0, frame.carry)
                heapq.heappush(self._ready, job)
                model.busy = True
                self._cond.notify()
                return
        model.busy = False
