"""CPU time and peak memory of a process group, read from /proc (Linux): what a service cost, children included."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class GroupUsage:
    cpu_s: float  # user + system seconds of the live members (and their reaped children)
    peak_rss_mb: float  # the largest VmHWM among the members


def _stat_fields(pid: str) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2, the command name, is in parentheses and may hold spaces: split after the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def _hwm_mb(pid: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def group_usage(pgid: int) -> GroupUsage:
    """Usage of every process whose process group is `pgid`: a service, the broker or Redis (each started
    in a session of its own, so its pid is its group)."""
    cpu_ticks, peak = 0, 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fields = _stat_fields(pid)
        if fields is None or int(fields[2]) != pgid:  # field 5 of proc(5): pgrp
            continue
        # utime, stime, cutime, cstime: fields 14-17 of proc(5)
        cpu_ticks += sum(int(f) for f in fields[11:15])
        peak = max(peak, _hwm_mb(pid))
    return GroupUsage(cpu_ticks / TICKS, peak)
