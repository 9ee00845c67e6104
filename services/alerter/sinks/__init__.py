"""Alert sinks: one module each behind one small interface, registered by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from services.common.settings import Settings


class Sink(Protocol):
    name: str

    def send(self, alerts: list[dict[str, Any]]) -> None:
        """Deliver the alerts or raise; the caller retries and commits nothing until this returns."""

    def close(self) -> None: ...


def build_sinks(settings: Settings) -> list[Sink]:
    from services.alerter.sinks import jsonl, stdout

    registry: dict[str, Callable[[Settings], Sink]] = {"jsonl": jsonl.JsonlSink, "stdout": stdout.StdoutSink}
    names = ["jsonl"] + (["stdout"] if settings.alerts_stdout else [])
    return [registry[n](settings) for n in names]
