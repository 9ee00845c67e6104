"""The alerter: anomalies -> incidents (state in Redis) -> sinks -> commit."""

from __future__ import annotations

import argparse
import json
from typing import Any

from services.alerter.incidents import apply_anomaly, to_alert
from services.alerter.sinks import build_sinks
from services.common import serde
from services.common.pipeline import Output, StopFlag, run_loop
from services.common.redis_client import sync_redis
from services.common.settings import Settings, load_settings


def make_transform(settings: Settings) -> Any:
    redis = sync_redis(settings)
    sinks = build_sinks(settings)
    alerts_topic = settings.topic("alerts")
    stats = settings.key("alerter", "stats")

    def incident_key(role: str, host: str) -> str:
        return settings.key("incident", role, host)

    def transform(anomalies: list[dict[str, Any]]) -> list[Output]:
        keys = sorted({incident_key(a["score"]["role"], a["score"]["host"]) for a in anomalies})
        incidents = {k: json.loads(v) if v else None for k, v in zip(keys, redis.mget(keys), strict=True)}
        alerts = []
        for anomaly in sorted(anomalies, key=lambda a: a["score"]["window_start"]):
            key = incident_key(anomaly["score"]["role"], anomaly["score"]["host"])
            incident, send = apply_anomaly(incidents[key], anomaly, settings.incident_gap_seconds)
            if send:
                alerts.append(to_alert(incident))
                incident = {**incident, "alerts_sent": incident["alerts_sent"] + 1}
            incidents[key] = incident
        for sink in sinks:  # delivered before the state is saved and the offsets committed
            sink.send(alerts)
        with redis.pipeline(transaction=True) as tx:
            tx.mset({k: json.dumps(v) for k, v in incidents.items() if v is not None})
            tx.hincrby(stats, "alerts", len(alerts))
            tx.execute()
        return [Output(alerts_topic, a["host"].encode(), serde.encode("Alert", a)) for a in alerts]

    return transform


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults()


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    stop = StopFlag().install()
    run_loop(settings, "alerter", "anomalies", "Anomaly", make_transform(settings), 500, 0.5, stop)
    return 0
