"""The alerter: anomalies -> suppression -> incidents (state in Redis) -> each sink's durable spool ->
commit. Each sink drains its own spool in its own thread (services/alerter/delivery.py).

At-least-once across restarts: a batch's offsets are committed only after its alerts are in every
sink's spool on disk and the incident state is saved; a crash before that replays the batch, which
rebuilds the same alert ids (the spool keeps one of each). Kafka `alerts` is this loop's own output,
produced and acknowledged by the broker before the commit, so it needs no spool.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from services.alerter.delivery import RetryPolicy, SinkWorker
from services.alerter.incidents import anomaly_problem, apply_anomaly, to_alert
from services.alerter.sinks import build_sinks
from services.alerter.spool import Spool
from services.alerter.suppression import Rule, RuleError, first_match, load_rules
from services.common import kafka, log, preflight, serde
from services.common.metrics import ERRORS, INCIDENTS, SUPPRESSED, Health, serve
from services.common.pipeline import Output, StopFlag, run_loop
from services.common.redis_client import sync_redis
from services.common.settings import Settings, load_settings

logger = logging.getLogger("alerter")


class RuleFile:
    """The suppression rules, re-read when the file changes, so operators need no restart."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self.mtime = -1.0
        self.rules: list[Rule] = []

    def current(self) -> list[Rule]:
        if self.path is None:
            return []
        try:
            mtime = self.path.stat().st_mtime
            if mtime != self.mtime:
                self.rules, self.mtime = load_rules(self.path), mtime
                logger.info("loaded %d suppression rule(s) from %s", len(self.rules), self.path)
        except (OSError, RuleError) as exc:
            if self.mtime < 0:  # at start-up a broken file is an error the operator must fix first
                raise
            # A bad edit while running keeps the last good rules rather than stopping alerting.
            ERRORS.labels("alerter", "suppression_file").inc()
            logger.error("keeping %d earlier suppression rule(s): %s", len(self.rules), exc)
        return self.rules


def spool_dir(settings: Settings) -> Path:
    return settings.run_dir / f"{settings.namespace}alerter-spool"


def start_workers(settings: Settings) -> list[SinkWorker]:
    producer = kafka.producer(settings)
    redis = sync_redis(settings)
    dlq, stats = settings.topic("alerts.dlq"), settings.key("alerter", "stats")

    def dead_letter(sink: str, alert: dict[str, Any], reason: str) -> None:
        record = kafka.dlq_record("alerter", reason, json.dumps(alert).encode(), sink=sink, alert_id=alert["alert_id"])
        producer.produce(dlq, record, alert["host"].encode())
        kafka.drain(producer)
        redis.hincrby(stats, f"dead:{sink}", 1)
        logger.error("alert %s dead-lettered for sink %s: %s", alert["alert_id"], sink, reason)

    policy = RetryPolicy(settings.alert_retry_base_s, settings.alert_retry_max_s, settings.alert_max_attempts)
    return [
        SinkWorker(
            sink, Spool(spool_dir(settings) / f"{sink.name}.sqlite", settings.alert_queue_max), policy, dead_letter
        )
        for sink in build_sinks(settings)
    ]


def make_transform(settings: Settings, workers: list[SinkWorker]) -> Any:
    redis = sync_redis(settings)
    rules = RuleFile(settings.suppression_file)
    rules.current()  # a broken file stops start-up, before any anomaly is consumed
    alerts_topic = settings.topic("alerts")
    stats = settings.key("alerter", "stats")

    def incident_key(role: str, host: str) -> str:
        return settings.key("incident", role, host)

    dlq_topic = settings.topic("anomalies.dlq")

    def transform(anomalies: list[dict[str, Any]]) -> list[Output]:
        live_rules, now = rules.current(), time.time()
        suppressed: dict[str, int] = {}
        kept, dead = [], []
        for anomaly in anomalies:
            problem = anomaly_problem(anomaly)
            if problem:
                value = kafka.dlq_record("alerter", problem, serde.encode("Anomaly", anomaly))
                dead.append(Output(dlq_topic, None, value))
                continue
            rule = first_match(live_rules, anomaly, now)
            if rule is None:
                kept.append(anomaly)
            else:
                suppressed[rule.id] = suppressed.get(rule.id, 0) + 1
        keys = sorted({incident_key(a["score"]["role"], a["score"]["host"]) for a in kept})
        incidents = {k: json.loads(v) if v else None for k, v in zip(keys, redis.mget(keys), strict=True)}
        alerts, opened = [], 0
        for anomaly in sorted(kept, key=lambda a: a["score"]["window_start"]):
            key = incident_key(anomaly["score"]["role"], anomaly["score"]["host"])
            incident, send = apply_anomaly(
                incidents[key], anomaly, settings.incident_gap_seconds, settings.alert_digest_seconds
            )
            if send:
                opened += incident["alerts_sent"] == 0
                alerts.append(to_alert(incident))
                incident = {**incident, "alerts_sent": incident["alerts_sent"] + 1}
            incidents[key] = incident
        for worker in workers:  # on disk before the state is saved and the offsets committed
            worker.enqueue(alerts)
        with redis.pipeline(transaction=True) as tx:
            tx.mset({k: json.dumps(v) for k, v in incidents.items() if v is not None})
            tx.hincrby(stats, "alerts", len(alerts))
            tx.hincrby(stats, "incidents", opened)
            tx.hincrby(stats, "invalid", len(dead))
            for rule_id, n in suppressed.items():
                tx.hincrby(stats, "suppressed", n)
                tx.hincrby(stats, f"suppressed:{rule_id}", n)
            tx.execute()
        INCIDENTS.inc(opened)
        for rule_id, n in suppressed.items():
            SUPPRESSED.labels(rule_id).inc(n)
        # Healthy sinks usually deliver within milliseconds: waiting keeps "consumed" meaning "delivered"
        # in the normal case. A failing sink is not waited for; its spool holds the alerts.
        for worker in workers:
            worker.wait_idle(settings.alert_sink_wait_s)
        return dead + [Output(alerts_topic, a["host"].encode(), serde.encode("Alert", a)) for a in alerts]

    return transform


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults()


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    log.setup("alerter")
    preflight.check(settings)
    stop = StopFlag().install()
    health = Health()
    serve(settings.metrics_port, health)
    workers = [w.start() for w in start_workers(settings)]
    health.alive = lambda: all(w.thread.is_alive() for w in workers)
    transform = make_transform(settings, workers)
    logger.info("alerter (pid %d): sinks %s", os.getpid(), ", ".join(w.sink.name for w in workers))
    health.set_ready(True)
    try:
        run_loop(settings, "alerter", "anomalies", "Anomaly", transform, 500, 0.5, stop)
    finally:
        health.set_ready(False, "stopping")
        for worker in workers:
            worker.stop()
            worker.sink.close()
            worker.spool.close()
    return 0
