"""Stdout sink: one readable line per alert, for an operator watching the terminal."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

from services.common.settings import Settings


class StdoutSink:
    name = "stdout"

    def __init__(self, settings: Settings) -> None:
        self.out = sys.stdout

    def send(self, alerts: list[dict[str, Any]]) -> None:
        for a in alerts:
            when = datetime.fromtimestamp(a["first_seen"], UTC).strftime("%Y-%m-%d %H:%M:%S")
            self.out.write(f"ALERT {when}Z incident={a['incident_id']} {a['summary']}\n")
        self.out.flush()

    def close(self) -> None:
        self.out.flush()
