"""Elasticsearch / OpenSearch sink: the _bulk API (NDJSON), checking every item of the answer.

Each alert is indexed under its alert id, so a retried batch overwrites instead of duplicating."""

from __future__ import annotations

import base64
import json
from typing import Any

from services.alerter.sinks import SinkError, secret
from services.alerter.sinks.http import HttpClient
from services.common.settings import Settings


def bulk_body(alerts: list[dict[str, Any]], index: str) -> bytes:
    lines = []
    for a in alerts:
        lines.append(json.dumps({"index": {"_index": index, "_id": a["alert_id"]}}))
        lines.append(json.dumps({**a, "@timestamp": int(a["created_at"] * 1000)}))
    return ("\n".join(lines) + "\n").encode()


def failed_items(answer: dict[str, Any]) -> list[str]:
    """Reasons of the bulk items that failed (an answer with errors=false has none)."""
    if not answer.get("errors"):
        return []
    reasons = []
    for item in answer.get("items", []):
        result = next(iter(item.values()), {})
        if result.get("error"):
            error = result["error"]
            reasons.append(f"{result.get('_id')}: {error.get('type', error) if isinstance(error, dict) else error}")
    return reasons


class ElasticSink:
    name = "elastic"

    def __init__(self, settings: Settings) -> None:
        if not settings.sink_elastic_url:
            raise ValueError("the elastic sink needs FLOWSENTINEL_SINK_ELASTIC_URL")
        self.url = settings.sink_elastic_url.rstrip("/") + "/_bulk"
        self.index = settings.sink_elastic_index
        self.headers = {"Content-Type": "application/x-ndjson"}
        if settings.sink_elastic_username:
            pair = f"{settings.sink_elastic_username}:{secret(settings, 'sink_elastic_password')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        self.http = HttpClient(settings)

    def send(self, alerts: list[dict[str, Any]]) -> None:
        answer = self.http.post(self.url, bulk_body(alerts, self.index), self.headers)
        try:
            failed = failed_items(json.loads(answer))
        except ValueError:
            raise SinkError(f"_bulk answered something that is not JSON: {answer[:200]!r}") from None
        if failed:
            raise SinkError(f"{len(failed)} of {len(alerts)} bulk items failed, e.g. {failed[0]}")

    def close(self) -> None:
        return None
