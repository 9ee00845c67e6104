"""Generic JSON webhook sink: one POST per alert, the alert itself or, for Slack and the chat tools that
copy its incoming-webhook format, {"text": ...}."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from services.alerter.sinks import secret
from services.alerter.sinks.http import HttpClient
from services.common.settings import Settings


def slack_message(alert: dict[str, Any]) -> dict[str, str]:
    since = datetime.fromtimestamp(alert["first_seen"], UTC).strftime("%Y-%m-%d %H:%M UTC")
    return {
        "text": f"*FlowSentinel {alert['severity'].upper()}* incident `{alert['incident_id']}` since {since}\n"
        f"{alert['summary']}"
    }


class WebhookSink:
    name = "webhook"

    def __init__(self, settings: Settings) -> None:
        self.url = secret(settings, "sink_webhook_url")
        if not self.url:
            raise ValueError("the webhook sink needs FLOWSENTINEL_SINK_WEBHOOK_URL or _URL_FILE")
        self.slack = settings.sink_webhook_slack
        self.http = HttpClient(settings)

    def send(self, alerts: list[dict[str, Any]]) -> None:
        # A batch that fails part-way is retried whole: receivers see an alert again only when an
        # earlier attempt at it succeeded (at-least-once); alert_id lets them drop the repeat.
        for alert in alerts:
            body = slack_message(alert) if self.slack else alert
            self.http.post(self.url, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def close(self) -> None:
        return None
