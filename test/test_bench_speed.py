"""The bench records whether the machine kept its speed: a fixed convolution timed before every run."""

from __future__ import annotations

import pytest
import torch

from multidnn_sched.bench.report import format_report
from multidnn_sched.bench.speed import (
    MACHINE_SPEED_MAX_SPREAD,
    format_speed,
    speed_probe_ms,
    speed_summary,
)


def test_the_probe_times_the_kernel_and_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    one = speed_probe_ms(1, repeats=3)
    assert one > 0.0 and torch.get_num_threads() == before
    assert speed_probe_ms(repeats=1) > 0.0
    with pytest.raises(ValueError, match="repeats"):
        speed_probe_ms(repeats=0)


def test_a_spread_above_the_limit_is_flagged_and_the_report_says_so() -> None:
    drifted = speed_summary([2.0, None, 3.4, 2.1])
    assert drifted is not None and drifted["probes"] == 3 and not drifted["steady"]
    assert drifted["spread"] == pytest.approx(1.7) and drifted["median_ms"] == pytest.approx(2.1)
    line = format_speed(drifted)
    assert line is not None and "NOT steady" in line and "1.70x" in line
    assert "machine speed NOT steady" in format_report({"machine_speed": drifted})
    steady = speed_summary([2.0, 2.0 * MACHINE_SPEED_MAX_SPREAD])
    assert steady is not None and steady["steady"]
    assert (format_speed(steady) or "").startswith("- machine speed steady")
    assert speed_summary([None]) is None and format_speed(None) is None
