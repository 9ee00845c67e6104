"""Readers that turn dataset files into Flow records (dicts shaped like schemas/Flow.avsc).

Training, evaluation and `flowsentinel replay` all read files through `read_flows`, so the flows a
model is trained on are the flows the collector publishes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.datasets import zeek
from training.datasets.files import open_text

Flow = dict[str, Any]


class UnknownFormatError(ValueError):
    """The file's header matches no reader; the message names the columns each reader expects."""


@dataclass
class ReadStats:
    """What a reader kept and what it dropped, by reason."""

    rows: int = 0
    flows: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1


# Each reader: (name, sniff(header lines) -> bool, read(path, stats) -> flows, expected columns).
READERS = [
    ("zeek", zeek.sniff, zeek.read, zeek.EXPECTED),
]


def detect_format(path: Path) -> str:
    head = _head(path)
    for name, sniff, _, _ in READERS:
        if sniff(head):
            return name
    expected = "; ".join(f"{name}: {cols}" for name, _, _, cols in READERS)
    first = head[0][:200] if head else "(empty file)"
    raise UnknownFormatError(f"{path}: unrecognised flow file. First line: {first!r}. Expected one of: {expected}")


def read_flows(path: Path | str, stats: ReadStats | None = None) -> Iterator[Flow]:
    """Yield the file's flows in file order; count dropped rows by reason in `stats`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such flow file")
    stats = stats if stats is not None else ReadStats()
    fmt = detect_format(path)
    reader = next(r for n, _, r, _ in READERS if n == fmt)
    yield from reader(path, stats)


def load_flows(paths: list[Path] | list[str], sort: bool = True) -> tuple[list[Flow], ReadStats]:
    """All flows of several files, in event-time order (as a collector would see them)."""
    stats = ReadStats()
    flows: list[Flow] = []
    for p in paths:
        flows.extend(read_flows(p, stats))
    if sort:
        flows.sort(key=lambda f: f["first_seen"])
    return flows, stats


def _head(path: Path, lines: int = 12) -> list[str]:
    with open_text(path) as fh:
        return [line.rstrip("\n") for _, line in zip(range(lines), fh, strict=False)]
