"""Opening flow files the same way everywhere: plain or gzip-compressed text."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import TextIO


def open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="", errors="replace")
    return open(path, newline="", errors="replace")
