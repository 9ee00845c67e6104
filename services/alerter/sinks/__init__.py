"""Alert sinks: one module each behind one small interface, registered by name and chosen by the
`alert_sinks` setting; each reads its own `sink_<name>_*` settings."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

from services.common.settings import Settings

# name -> module:class; modules are imported only when their sink is configured.
REGISTRY = {
    "jsonl": "services.alerter.sinks.jsonl:JsonlSink",
    "stdout": "services.alerter.sinks.stdout:StdoutSink",
    "syslog": "services.alerter.sinks.syslog:SyslogSink",
    "hec": "services.alerter.sinks.hec:HecSink",
    "elastic": "services.alerter.sinks.elastic:ElasticSink",
    "webhook": "services.alerter.sinks.webhook:WebhookSink",
}


class Sink(Protocol):
    name: str

    def send(self, alerts: list[dict[str, Any]]) -> None:
        """Deliver every alert or raise; the caller retries the whole batch, so delivery must be
        safe to repeat (receivers see each alert once per successful attempt)."""

    def close(self) -> None: ...


class SinkError(Exception):
    """A delivery that failed; the message is safe to log (no tokens, no secret URLs)."""


def sink_names(settings: Settings) -> list[str]:
    names = [n.strip() for n in settings.alert_sinks.split(",") if n.strip()]
    if settings.alerts_stdout and "stdout" not in names:
        names.append("stdout")
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown alert sink(s) {unknown}; known: {sorted(REGISTRY)}")
    return list(dict.fromkeys(names))


def build_sink(name: str, settings: Settings) -> Sink:
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)(settings)  # type: ignore[no-any-return]


def build_sinks(settings: Settings) -> list[Sink]:
    return [build_sink(n, settings) for n in sink_names(settings)]


def secret(settings: Settings, name: str) -> str:
    """A secret setting's value: the file named by `<name>_file` when set (mounted secrets), else the
    setting itself (env or YAML). Never log the result."""
    path = getattr(settings, f"{name}_file")
    if path:
        return Path(path).read_text().strip()
    value = getattr(settings, name)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
