"""Executor overhead: one model alone, the ``blocks`` executor vs a direct forward, same threads, warm.

    .venv/bin/python scripts/executor_overhead.py [--model detector|embedder|classifier] [--runs 100]
        [--direct-in worker|thread] [--gap-ms 20]

The executor path is ``submit(model, x).result()`` on the model cut into its blocks (submit to result: queue,
hand-off, gate, timing, LAG update, future). The direct path is ``model(x)`` with every core, timed around the
call only. The two alternate (direct, executor, direct, ...) after the executor's solo profiling, each followed
by ``--gap-ms`` of idle time.

``--direct-in worker`` (default): the direct forward runs on the executor's own worker thread, as the only
block of a one-block model that times the call inside itself. Both paths then use the same thread and the same
OpenMP team, which is what "same threads" means: in a process where a second thread runs multi-threaded torch
ops, every thread owns an OpenMP team, libgomp throttles its spin-wait once the process has more OpenMP threads
than cores, and every parallel region pays a wake-up (the classifier's direct forward took 43-57 ms in a second
thread here against 25 ms in the only one). ``--direct-in thread``: the direct forward in a thread of its own
(the earlier measurement, two teams).

``--gap-ms``: idle time after every run, so a team that just finished stops spinning before the next run.

Prints one JSON line: ``{"model", "runs", "cores", "direct_in", "gap_ms", "direct_ms", "executor_ms", "ratio",
"paired_ratio"}``: ``ratio`` compares the two medians, ``paired_ratio`` is the median of each pair's executor /
direct, which cancels the slow drifts of a shared machine; ``blocks_ema_sum_ms`` is the sum of the blocks'
EMA-observed latencies (inside the blocks: executor_ms minus it is the executor's own bookkeeping and hand-off,
it minus direct_ms is what cutting the model costs); with ``--direct-in worker``, ``handoff_ms`` is the median
of (the one-block forward timed from the caller - the same forward timed inside its block): the thread hand-off
every frame pays in a worker-thread executor whatever its blocks (submit, worker wake-up, one block's
bookkeeping, the result back), and ``handoff_share`` that over ``direct_ms``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from typing import Any

import torch
from torch import nn

from multidnn_sched.bench.tasks import build_model, build_task_inputs, render_truth_and_frames
from multidnn_sched.bench.workload import SceneSource
from multidnn_sched.runtime.block import Block, PartitionedModel
from multidnn_sched.runtime.device import usable_cores
from multidnn_sched.runtime.executor import BlockExecutor
from multidnn_sched.runtime.partition import partition_model


class TimedForward(nn.Module):
    """``model(x)``, its duration appended to ``times_ms`` while ``recording`` is set."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.times_ms: list[float] = []
        self.recording = False

    def forward(self, x: Any) -> Any:
        start = time.perf_counter()
        out = self.model(x)
        if self.recording:
            self.times_ms.append((time.perf_counter() - start) * 1e3)
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="detector", choices=["detector", "embedder", "classifier"])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--direct-in", choices=["worker", "thread"], default="worker")
    parser.add_argument("--gap-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    images, truth = render_truth_and_frames(SceneSource(unique_frames=8), 15.0)
    task = build_task_inputs(args.model, images, truth)
    model = build_model(args.model)
    x = task.inputs[0]
    cores = usable_cores()
    gap_sec = args.gap_ms / 1e3
    executor = BlockExecutor("cpu", reprofile_idle_sec=None)
    timed = TimedForward(model)
    whole = f"{args.model}_whole"
    direct_ms: list[float] = []
    executor_ms: list[float] = []
    whole_ms: list[float] = []
    try:
        executor.register_model(partition_model(model, args.model), deadline_ms=1e6, example_input=x)
        if args.direct_in == "worker":
            executor.register_model(PartitionedModel(whole, [Block("whole", timed)]), deadline_ms=1e6,
                                    example_input=x)
        executor.profile_solo()

        def direct_forward() -> None:
            if args.direct_in == "worker":
                t = time.perf_counter()
                executor.submit(whole, x).result(timeout=30)
                whole_ms.append((time.perf_counter() - t) * 1e3)
                return
            t = time.perf_counter()
            model(x)
            direct_ms.append((time.perf_counter() - t) * 1e3)

        def measure() -> None:
            if args.direct_in == "thread":
                torch.set_num_threads(cores)
            with torch.inference_mode():
                for _ in range(3):
                    direct_forward()
                    executor.submit(args.model, x).result(timeout=30)
                timed.recording = True
                whole_ms.clear()
                for _ in range(args.runs):
                    direct_forward()
                    time.sleep(gap_sec)
                    t = time.perf_counter()
                    executor.submit(args.model, x).result(timeout=30)
                    executor_ms.append((time.perf_counter() - t) * 1e3)
                    time.sleep(gap_sec)

        caller = threading.Thread(target=measure, name="overhead")
        caller.start()
        caller.join()
        blocks = executor.stats().blocks
        blocks_ms = sum(b.ema_observed_ms or 0.0 for (m, _), b in blocks.items() if m == args.model)
    finally:
        executor.shutdown(timeout_sec=5.0)
    if args.direct_in == "worker":
        direct_ms = timed.times_ms
    d, e = statistics.median(direct_ms), statistics.median(executor_ms)
    paired = statistics.median(b / a for a, b in zip(direct_ms, executor_ms, strict=True))
    report = {"model": args.model, "runs": args.runs, "cores": cores, "direct_in": args.direct_in,
              "gap_ms": args.gap_ms, "direct_ms": round(d, 3), "executor_ms": round(e, 3),
              "ratio": round(e / d, 4), "paired_ratio": round(paired, 4), "blocks_ema_sum_ms": round(blocks_ms, 3)}
    if whole_ms:
        # The same forward submitted as ONE block, timed from the caller: what the thread hand-off alone costs
        # (submit, worker wake-up, one block's bookkeeping, result back), the floor of any worker-thread design.
        handoff = statistics.median(w - a for a, w in zip(direct_ms, whole_ms, strict=True))
        report["handoff_ms"] = round(handoff, 3)
        report["handoff_share"] = round(handoff / d, 4)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
