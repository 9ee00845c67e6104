"""Readers that turn dataset files into Flow records (dicts shaped like schemas/Flow.avsc).

Training, evaluation and `flowsentinel replay` all read files through `read_flows`, so the flows a
model is trained on are the flows the collector publishes.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.datasets import argus, cicids, netflow_csv, nfdump, unsw, zeek
from training.datasets.files import open_text
from training.datasets.rows import UnusableFileError
from training.flowcheck import flow_problem

Flow = dict[str, Any]


class UnknownFormatError(ValueError):
    """The file's header matches no reader; the message names the columns each reader expects."""


@dataclass
class ReadStats:
    """What a reader kept, what it dropped (by reason), and what it had to make up or correct (notes,
    each with the number of rows it applies to: synthesised times, placeholder addresses, ...)."""

    rows: int = 0
    flows: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def note(self, text: str) -> None:
        self.notes[text] += 1


# Each reader: (name, sniff(header lines) -> bool, read(path, stats) -> flows, expected columns).
# Tried in order; their required columns do not overlap, so at most one matches a header.
READERS = [
    ("zeek", zeek.sniff, zeek.read, zeek.EXPECTED),
    ("nf-csv", netflow_csv.sniff, netflow_csv.read, netflow_csv.EXPECTED),
    ("cicflowmeter", cicids.sniff, cicids.read, cicids.EXPECTED),
    ("unsw-nb15", unsw.sniff, unsw.read, unsw.EXPECTED),
    ("argus", argus.sniff, argus.read, argus.EXPECTED),
    ("nfdump", nfdump.sniff, nfdump.read, nfdump.EXPECTED),
]
__all__ = [
    "READERS", "ReadStats", "UnknownFormatError", "UnusableFileError", "detect_format", "load_flows", "read_flows",
]  # fmt: skip
# Detection reads at most this many lines of at most HEAD_CHARS each: never the whole file.
HEAD_LINES = 12
HEAD_CHARS = 1 << 16


def detect_format(path: Path) -> str:
    head = _head(path)
    for name, sniff, _, _ in READERS:
        if sniff(head):
            return name
    expected = "".join(f"\n  - {name}: {cols}" for name, _, _, cols in READERS)
    first = head[0][:200] if head else "(empty file)"
    raise UnknownFormatError(
        f"{path}: unrecognised flow file; its first line is {first!r}. The header must be one of:{expected}"
    )


def read_flows(path: Path | str, stats: ReadStats | None = None) -> Iterator[Flow]:
    """Yield the file's flows in file order; count dropped rows by reason in `stats`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such flow file")
    stats = stats if stats is not None else ReadStats()
    fmt = detect_format(path)
    reader = next(r for n, _, r, _ in READERS if n == fmt)
    try:
        for flow in reader(path, stats):
            problem = flow_problem(flow, check_addresses=True)
            if problem:
                stats.flows -= 1
                stats.drop(f"{fmt}: {problem}")
                continue
            yield flow
    except (EOFError, OSError, zlib.error) as exc:  # a cut or corrupt gzip, an unreadable device
        raise UnusableFileError(f"{path}: unreadable after {stats.rows} rows: {type(exc).__name__}: {exc}") from None


def load_flows(paths: list[Path] | list[str], sort: bool = True) -> tuple[list[Flow], ReadStats]:
    """All flows of several files, in event-time order (as a collector would see them)."""
    stats = ReadStats()
    flows: list[Flow] = []
    for p in paths:
        flows.extend(read_flows(p, stats))
    if sort:
        flows.sort(key=lambda f: f["first_seen"])
    return flows, stats


def _head(path: Path) -> list[str]:
    lines = []
    with open_text(path) as fh:
        for _ in range(HEAD_LINES):
            line = fh.readline(HEAD_CHARS)
            if not line:
                break
            lines.append(line.rstrip("\r\n"))
    return lines
