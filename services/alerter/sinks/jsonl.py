"""JSONL file sink: one alert per line, appended and fsynced before the offsets are committed."""

from __future__ import annotations

import json
import os
from typing import Any

from services.common.settings import Settings


class JsonlSink:
    name = "jsonl"

    def __init__(self, settings: Settings) -> None:
        self.path = settings.alerts_file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the sink's life

    def send(self, alerts: list[dict[str, Any]]) -> None:
        for alert in alerts:
            self.fh.write(json.dumps(alert, sort_keys=True) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()
