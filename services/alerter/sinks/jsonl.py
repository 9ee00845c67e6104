"""JSONL file sink: one alert per line, fsynced, rotated by size (alerts.jsonl -> alerts.jsonl.1 ...)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from services.common.settings import Settings


def rotate(path: Path, backups: int) -> None:
    """Shift path.N-1 -> path.N ... path -> path.1, dropping the oldest beyond `backups`."""
    if backups == 0:
        path.unlink(missing_ok=True)
        return
    for n in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n + 1}"))
    path.replace(path.with_name(f"{path.name}.1"))


class JsonlSink:
    name = "jsonl"

    def __init__(self, settings: Settings) -> None:
        self.path = settings.alerts_file
        self.max_bytes = settings.alerts_file_max_bytes
        self.backups = settings.alerts_file_backups
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the sink's life

    def send(self, alerts: list[dict[str, Any]]) -> None:
        for alert in alerts:
            if self.max_bytes and self.fh.tell() >= self.max_bytes:
                self.fh.close()
                rotate(self.path, self.backups)
                self.fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            self.fh.write(json.dumps(alert, sort_keys=True) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()
