"""Executor overhead: one model alone, the ``blocks`` executor vs a direct forward, same threads, warm.

    .venv/bin/python scripts/executor_overhead.py [--model detector|embedder|classifier] [--runs 40] [--gap-ms 20]

Both paths run in a worker thread with every core (the executor's exclusive-block budget); the runs are
interleaved (direct, executor, direct, ...) after the executor's solo profiling. Prints one JSON line:
``{"model", "runs", "cores", "gap_ms", "direct_ms", "executor_ms", "ratio", "paired_ratio"}``: ``ratio`` compares
the two medians, ``paired_ratio`` is the median of each pair's executor / direct, which cancels the slow drifts
of a shared machine (the direct classifier's median moved between 43 and 57 ms from one run to the next here).

``--gap-ms``: idle time after every run. The direct forward and the executor's worker are two threads with an
OpenMP team each; back to back, the team that just finished still spin-waits on the cores while the other one
starts, a contention that one model alone in the executor (one team) never has. A 20 ms gap lets the spinning
end; both paths pay the same wake-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

import torch

from multidnn_sched.bench.tasks import build_model, build_task_inputs, render_truth_and_frames
from multidnn_sched.bench.workload import SceneSource
from multidnn_sched.runtime.device import usable_cores
from multidnn_sched.runtime.executor import BlockExecutor
from multidnn_sched.runtime.partition import partition_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="detector", choices=["detector", "embedder", "classifier"])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--gap-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    images, truth = render_truth_and_frames(SceneSource(unique_frames=8), 15.0)
    task = build_task_inputs(args.model, images, truth)
    model = build_model(args.model)
    x = task.inputs[0]
    cores = usable_cores()
    executor = BlockExecutor("cpu", reprofile_idle_sec=None)
    direct_ms: list[float] = []
    executor_ms: list[float] = []
    try:
        executor.register_model(partition_model(model, args.model), deadline_ms=1e6, example_input=x)
        executor.profile_solo()

        def direct() -> None:
            torch.set_num_threads(cores)
            with torch.inference_mode():
                for _ in range(3):
                    model(x)
                for _ in range(args.runs):
                    t = time.perf_counter()
                    model(x)
                    direct_ms.append((time.perf_counter() - t) * 1e3)
                    time.sleep(args.gap_ms / 1e3)
                    t = time.perf_counter()
                    executor.submit(args.model, x).result(timeout=30)
                    executor_ms.append((time.perf_counter() - t) * 1e3)
                    time.sleep(args.gap_ms / 1e3)

        worker = threading.Thread(target=direct, name="overhead")
        worker.start()
        worker.join()
    finally:
        executor.shutdown(timeout_sec=5.0)
    d, e = statistics.median(direct_ms), statistics.median(executor_ms)
    paired = statistics.median(b / a for a, b in zip(direct_ms, executor_ms, strict=True))
    print(json.dumps({"model": args.model, "runs": args.runs, "cores": cores, "gap_ms": args.gap_ms,
                      "direct_ms": round(d, 3), "executor_ms": round(e, 3), "ratio": round(e / d, 4),
                      "paired_ratio": round(paired, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
