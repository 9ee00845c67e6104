"""The alerter against the real broker and Redis: killed mid-stream (SIGKILL) while one of its sinks is
down, restarted, it loses no incident: every one reaches the JSONL file, the Kafka `alerts` topic and,
once it is back, the webhook, whose alerts waited in the alerter's on-disk spool across the restart."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from services import runner
from services.common import kafka, serde
from services.common.redis_client import sync_redis
from services.common.settings import Settings
from services.common.stack import free_port
from tests.alert_receivers import Receiver, serving
from tests.alert_samples import anomaly

HOSTS = [f"172.16.{i // 200}.{i % 200 + 1}" for i in range(300)]
START = 1_700_000_000.0


def produce(settings: Settings, records: list[dict]) -> None:
    producer = kafka.producer(settings)
    for a in records:
        producer.produce(settings.topic("anomalies"), serde.encode("Anomaly", a), a["score"]["host"].encode())
    kafka.drain(producer)


def consumed(settings: Settings) -> int:
    return int(sync_redis(settings).hget(settings.key("alerter", "stats"), "consumed") or 0)


def wait_until(predicate, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def final_alerts(alerts: list[dict]) -> dict[str, dict]:
    """Each host's latest alert (the one with the most anomalies counted)."""
    latest: dict[str, dict] = {}
    for a in alerts:
        if a["host"] not in latest or a["anomaly_count"] > latest[a["host"]]["anomaly_count"]:
            latest[a["host"]] = a
    return latest


def test_alerter_killed_mid_stream_loses_no_incident(settings: Settings, run_service) -> None:
    # Each host: a low anomaly (opens an incident), then a high one a window later (escalates it).
    opening = [anomaly(h, START, "low") for h in HOSTS]
    escalation = [anomaly(h, START + 60, "high") for h in HOSTS]
    webhook = Receiver("webhook", fail_first=10**9)  # down until the restart
    with serving(webhook) as url:
        settings = settings.model_copy(
            update={
                "alert_sinks": "jsonl,webhook",
                "alerts_stdout": False,
                "sink_webhook_url": url,
                "alert_retry_base_s": 0.2,
                "alert_retry_max_s": 1.0,
                "alert_max_attempts": 10_000,
                "metrics_port": free_port(),
            }
        )
        produce(settings, opening[:100])
        with run_service(settings, "alerter") as first:
            wait_until(lambda: consumed(settings) >= 100, "the first alerter to consume")
            produce(settings, opening[100:] + escalation[:100])  # in flight when the kill lands
            runner.stop_process(first, kill=True)
        killed_at = consumed(settings)
        assert 100 <= killed_at < 2 * len(HOSTS), "the kill must land mid-stream"
        produce(settings, escalation[100:])  # while the alerter is down

        webhook.fail_first = 0  # the webhook is back
        with run_service(settings, "alerter"):
            wait_until(lambda: set(final_alerts(jsonl(settings))) == set(HOSTS), "every incident in the JSONL file")
            everything = {(h, s) for h in HOSTS for s in ("low", "high")}
            wait_until(lambda: webhook_alerts(webhook) == everything, "every alert at the webhook")
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics_port}/metrics").read().decode()
            ready = urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics_port}/readyz").status

    for alerts in (jsonl(settings), runner.read_topic(settings, "alerts", "Alert")):
        latest = final_alerts(alerts)
        assert set(latest) == set(HOSTS)
        # one incident per host holding both of its anomalies, none counted twice by the replay
        assert all(a["severity"] == "high" and a["anomaly_count"] == 2 for a in latest.values())
        assert len({a["incident_id"] for a in alerts}) == len(HOSTS)
    assert webhook.refused >= 1, "the webhook was tried while down"
    assert 'flowsentinel_alerts_sent_total{sink="webhook"}' in metrics and ready == 200
    print(
        f"\nkilled after {killed_at} of {2 * len(HOSTS)} anomalies consumed; webhook refused {webhook.refused} requests"
    )


def jsonl(settings: Settings) -> list[dict]:
    return [json.loads(line) for line in settings.alerts_file.read_text().splitlines()]


def webhook_alerts(receiver: Receiver) -> set[tuple[str, str]]:
    """(host, severity) of the alerts the webhook accepted: the openings spooled before the kill included."""
    return {(a["host"], a["severity"]) for a in map(json.loads, list(receiver.bodies))}
