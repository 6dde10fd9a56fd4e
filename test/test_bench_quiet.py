"""The bench records how quiet the machine was: CPU used by processes outside its own process tree."""

from __future__ import annotations

import subprocess
import sys

import pytest

from multidnn_sched.bench.quiet import (
    QUIET_MAX_BACKGROUND_CORES,
    CpuSnapshot,
    background_cores,
    format_quiet,
    quiet_summary,
    snapshot,
)
from multidnn_sched.bench.report import format_report

LINUX = sys.platform.startswith("linux")
BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {sec}: pass\n"


def test_background_is_busy_time_minus_the_bench_tree_per_wall_second() -> None:
    before = CpuSnapshot(wall_sec=100.0, busy_sec=50.0, own_tree_sec=10.0)
    after = CpuSnapshot(wall_sec=110.0, busy_sec=70.0, own_tree_sec=25.0)
    assert background_cores(before, after) == pytest.approx(0.5)  # 20 s busy, 15 s ours, over 10 s
    assert background_cores(before, CpuSnapshot(110.0, 60.0, 25.0)) == 0.0  # tick rounding never goes negative
    assert background_cores(None, after) is None and background_cores(after, before) is None


def test_summary_flags_runs_above_the_threshold_and_the_report_says_so() -> None:
    noisy = quiet_summary([0.01, None, 1.02, 0.02])
    assert noisy is not None and noisy["runs"] == 3 and noisy["not_quiet_runs"] == 1
    assert noisy["max"] == pytest.approx(1.02) and noisy["median"] == pytest.approx(0.02)
    line = format_quiet(noisy)
    assert line is not None and "NOT quiet" in line and "1 of them" in line
    calm = format_quiet(quiet_summary([0.01, QUIET_MAX_BACKGROUND_CORES]))
    assert calm is not None and calm.startswith("- machine quiet")
    assert quiet_summary([None, None]) is None and format_quiet(None) is None
    assert "machine NOT quiet" in format_report({"background_cores": noisy})


@pytest.mark.skipif(not LINUX, reason="/proc is Linux only")
def test_a_child_process_counts_as_the_bench_not_as_background() -> None:
    before = snapshot()
    assert before is not None
    subprocess.run([sys.executable, "-c", BURN.format(sec=0.4)], check=True)  # reaped: cutime of this process
    child = subprocess.Popen([sys.executable, "-c", BURN.format(sec=0.4) + "print('x', flush=True)\n"
                              "time.sleep(30)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "x"
        after = snapshot()  # the second child is alive: found by walking /proc for descendants
    finally:
        child.kill()
        child.wait()
    assert after is not None
    assert after.own_tree_sec - before.own_tree_sec >= 0.7
    assert after.busy_sec - before.busy_sec >= 0.7
