"""Splunk HTTP Event Collector sink: batched JSON events to /services/collector/event."""

from __future__ import annotations

import json
from typing import Any

from services.alerter.sinks import SinkError, secret
from services.alerter.sinks.http import HttpClient
from services.common.settings import Settings

ENDPOINT = "/services/collector/event"


def hec_event(alert: dict[str, Any], index: str) -> dict[str, Any]:
    event = {
        "time": alert["created_at"],
        "host": alert["host"],
        "source": "flowsentinel",
        "sourcetype": "flowsentinel:alert",
        "event": alert,
    }
    return {**event, "index": index} if index else event


class HecSink:
    name = "hec"

    def __init__(self, settings: Settings) -> None:
        if not settings.sink_hec_url:
            raise ValueError("the hec sink needs FLOWSENTINEL_SINK_HEC_URL")
        base = settings.sink_hec_url.rstrip("/")
        self.url = base if base.endswith(ENDPOINT) else base + ENDPOINT
        self.index = settings.sink_hec_index
        self.headers = {
            "Authorization": f"Splunk {secret(settings, 'sink_hec_token')}",
            "Content-Type": "application/json",
        }
        self.http = HttpClient(settings)

    def send(self, alerts: list[dict[str, Any]]) -> None:
        # HEC takes several events in one request as concatenated JSON objects.
        body = "".join(json.dumps(hec_event(a, self.index), separators=(",", ":")) for a in alerts).encode()
        answer = self.http.post(self.url, body, self.headers)
        try:
            code = json.loads(answer).get("code", 0)
        except ValueError:
            raise SinkError(f"HEC answered something that is not JSON: {answer[:200]!r}") from None
        if code != 0:
            raise SinkError(f"HEC refused the events: {answer[:200].decode(errors='replace')}")

    def close(self) -> None:
        return None
