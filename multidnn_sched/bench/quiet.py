"""Is the machine quiet while the bench measures? CPU used by processes outside the bench's own process tree.

The bench's figures are only comparable when nothing else competes for the cores (``../shared/BENCHMARKING.md``):
on a 2-core machine one background job turns a run's on-time rates into noise. Every run and sweep probe records
``background_cores`` — the average number of cores that processes OUTSIDE the bench (this process and its
descendants, e.g. the ``multiprocess`` mode's workers) kept busy during it — and the report flags the runs above
:data:`QUIET_MAX_BACKGROUND_CORES`.

Linux only (``/proc``); elsewhere :func:`snapshot` returns ``None`` and nothing is recorded.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

QUIET_MAX_BACKGROUND_CORES: float = 0.1
"""A run is 'not quiet' when processes outside the bench used more than 0.1 core on average during it.

Measured here (2026-12-02, 2-core VM, nothing else started): the background (kernel threads, the VM's agent)
stayed below 0.02 core (``vmstat``: 0-1 % user). The same day a default-workload ``--repeats 3`` run during
which another job ran scene simulations in the background gave ``blocks`` a median on-time rate of 0.012 and
``sequential`` 0.368, against 0.661 and 0.641 on the quiet machine an hour earlier: 0.1 core is 5 % of this
machine, well above its idle noise and well below one competing job."""

_PROC = Path("/proc")


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU counters at one moment.

    Attributes:
        wall_sec: ``time.monotonic()``.
        busy_sec: CPU seconds all cores spent busy since boot (``/proc/stat``: everything but idle and iowait).
        own_tree_sec: CPU seconds of this process, its live descendants and its reaped children.
    """

    wall_sec: float
    busy_sec: float
    own_tree_sec: float


def _ticks_per_sec() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100.0


def _busy_sec(ticks: float) -> float:
    fields = (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]
    values = [float(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return (total - idle) / ticks


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the ``comm`` field (which may hold spaces): fields 3.. of proc(5)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _own_tree_sec(root: int, ticks: float) -> float:
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        pid = int(entry.name)
        stats[pid] = fields
        children.setdefault(int(fields[1]), []).append(pid)  # fields[1] is ppid (field 4 of proc(5))
    total = 0.0
    stack = [root]
    while stack:
        pid = stack.pop()
        fields = stats.get(pid)
        if fields is not None:
            total += float(fields[11]) + float(fields[12])  # utime, stime
            if pid == root:
                total += float(fields[13]) + float(fields[14])  # cutime, cstime: reaped children
        stack.extend(children.get(pid, []))
    return total / ticks


def snapshot() -> CpuSnapshot | None:
    """The counters now, or ``None`` where ``/proc`` cannot be read (not Linux)."""
    ticks = _ticks_per_sec()
    try:
        return CpuSnapshot(time.monotonic(), _busy_sec(ticks), _own_tree_sec(os.getpid(), ticks))
    except (OSError, ValueError, IndexError):
        return None


def background_cores(before: CpuSnapshot | None, after: CpuSnapshot | None) -> float | None:
    """Average cores kept busy by processes outside the bench between two snapshots (``None`` if unknown)."""
    if before is None or after is None or after.wall_sec <= before.wall_sec:
        return None
    other = (after.busy_sec - before.busy_sec) - (after.own_tree_sec - before.own_tree_sec)
    return max(0.0, other / (after.wall_sec - before.wall_sec))


def quiet_summary(values: Sequence[float | None]) -> dict[str, float | int] | None:
    """Median / max background cores over runs and how many runs exceeded the threshold (``None``: unknown)."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    return {"median": statistics.median(known), "max": max(known), "runs": len(known),
            "not_quiet_runs": sum(v > QUIET_MAX_BACKGROUND_CORES for v in known),
            "threshold": QUIET_MAX_BACKGROUND_CORES}


def format_quiet(summary: dict[str, float | int] | None, what: str = "runs") -> str | None:
    """One report line: quiet, or a warning that the figures are not comparable."""
    if not summary:
        return None
    figures = (f"processes outside the bench used {summary['median']:.2f} cores (median, max {summary['max']:.2f}) "
               f"during the {summary['runs']} {what}")
    if summary["not_quiet_runs"]:
        return (f"- **machine NOT quiet**: {figures}; {summary['not_quiet_runs']} of them above "
                f"{summary['threshold']:.2f} core — those figures are not comparable, re-run on a quiet machine.")
    return f"- machine quiet: {figures} (each ≤ {summary['threshold']:.2f} core)."
