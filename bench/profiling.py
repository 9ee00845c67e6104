"""Sampling profiles of running services with py-spy (root or ptrace rights needed), reduced to the
functions that take the most time, saved as small text files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

TOP = 15


def py_spy() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """py-spy sampling `pid` (and its children) for `seconds` without pausing it, writing collapsed stacks."""
    binary = py_spy()
    if binary is None:
        return None
    argv = [binary, "record", "--nonblocking", "--subprocesses", "--format", "raw", "--rate", "50"]
    argv += ["--duration", str(int(seconds)), "--pid", str(pid), "--output", str(out)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


Shares = list[tuple[str, float]]
OURS = ("services/", "training/")


def hot_spots(collapsed: str, top: int = TOP) -> tuple[int, Shares, Shares, Shares]:
    """(samples, top packages by own time, top functions by own time, top FlowSentinel functions by time
    including callees) from py-spy's raw format: one `frame;frame;...;leaf count` line per distinct stack.
    Shares are fractions of all samples."""
    own: Counter[str] = Counter()
    package: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_short(f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        own[frames[-1]] += n
        package[_package(frames[-1])] += n
        for frame in set(frames):
            if _where(frame).startswith(OURS):
                total[frame] += n

    def shares(counts: Counter[str]) -> Shares:
        return [(f, n / samples) for f, n in counts.most_common(top)]

    return samples, shares(package), shares(own), shares(total)


def _where(frame: str) -> str:
    return frame.partition(" (")[2]


def _package(frame: str) -> str:
    """Where a frame's time goes, coarsely: our modules by file, libraries by top-level package."""
    where = _where(frame).rstrip(")")
    if where.startswith(OURS):
        return where
    return where.split("/", 1)[0].removesuffix(".py") or "(native)"


def _short(frame: str) -> str:
    """'func (/long/path/site-packages/pkg/mod.py:12)' -> 'func (pkg/mod.py)': one entry per function,
    whichever of its lines was running."""
    name, _, where = frame.partition(" (")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({where})" if where else name


def summarise(raw: Path, out: Path, service: str) -> Shares:
    """Writes the hot spots of one service to `out`; returns its top packages by own time."""
    if not raw.exists():
        out.write_text(f"{service}: no profile (py-spy wrote nothing)\n")
        return []
    samples, packages, own, incl = hot_spots(raw.read_text(errors="replace"))
    lines = [f"{service}: {samples} samples (py-spy, 50 Hz, busy samples only)", "", "own time by package/module:"]
    lines += [f"  {share:6.1%}  {name}" for name, share in packages]
    lines += ["", "own time by function:"]
    lines += [f"  {share:6.1%}  {frame}" for frame, share in own]
    lines += ["", "FlowSentinel functions, including callees:"]
    lines += [f"  {share:6.1%}  {frame}" for frame, share in incl]
    out.write_text("\n".join(lines) + "\n")
    return packages
