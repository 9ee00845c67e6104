"""The alerter's transform in-process against the real Redis and broker: suppression counted in Redis
and in metrics, incidents and digests through the durable sink queues, dead letters on `alerts.dlq`, JSONL rotation."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from services import runner
from services.alerter.service import make_transform, start_workers
from services.alerter.sinks.jsonl import JsonlSink
from services.common.metrics import SUPPRESSED
from services.common.redis_client import sync_redis
from services.common.settings import Settings
from services.common.stack import free_port
from tests.alert_samples import alerts, anomaly

RULES = """
- id: scanner
  comment: the vulnerability scanner, asset VS-1
  expires: 2999-01-01
  hosts: [10.9.9.0/24]
  direction: src
"""


def test_suppressed_anomalies_are_counted_and_open_no_incident(settings: Settings, tmp_path: Path) -> None:
    rules = tmp_path / "suppress.yaml"
    rules.write_text(RULES)
    settings = settings.model_copy(
        update={"suppression_file": str(rules), "alerts_stdout": False, "alert_digest_seconds": 600}
    )
    workers = [w.start() for w in start_workers(settings)]
    transform = make_transform(settings, workers)
    before = SUPPRESSED.labels("scanner")._value.get()
    batch = [anomaly("10.9.9.7", 1000.0 + 60 * i) for i in range(5)]  # suppressed
    batch += [anomaly("10.9.9.7", 1000.0, role="dst")]  # same host, other direction: not suppressed
    batch += [anomaly("10.0.0.1", 1000.0 + 60 * i, severity="low") for i in range(12)]  # one incident, a digest
    outputs = transform(batch)
    for w in workers:
        w.stop()

    stats = {k.decode(): int(v) for k, v in sync_redis(settings).hgetall(settings.key("alerter", "stats")).items()}
    assert stats["suppressed"] == stats["suppressed:scanner"] == 5
    assert SUPPRESSED.labels("scanner")._value.get() - before == 5
    sent = [json.loads(line) for line in settings.alerts_file.read_text().splitlines()]
    assert [(a["host"], a["role"], a["anomaly_count"]) for a in sent] == [
        ("10.9.9.7", "dst", 1),
        ("10.0.0.1", "src", 1),
        ("10.0.0.1", "src", 11),  # the digest: last seen 600 s after the first alert's window ended
    ]
    assert stats["alerts"] == len(outputs) == 3 and stats["incidents"] == 2


def test_jsonl_rotates_by_size_and_keeps_the_configured_backups(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    sink = JsonlSink(Settings(alerts_file=path, alerts_file_max_bytes=2000, alerts_file_backups=2))
    batch = alerts(30)
    for a in batch:
        sink.send([a])
    sink.close()
    files = [path, path.with_name("alerts.jsonl.1"), path.with_name("alerts.jsonl.2")]
    assert not path.with_name("alerts.jsonl.3").exists()
    kept = [json.loads(line) for f in reversed(files) for line in f.read_text().splitlines()]
    assert all(f.stat().st_size < 2000 + 1000 for f in files)
    assert kept == batch[-len(kept) :] and len(kept) < len(batch)  # newest kept, in order; oldest rotated out


def test_an_undeliverable_alert_is_dead_lettered_to_the_alerts_dlq_topic(settings: Settings) -> None:
    settings = settings.model_copy(
        update={
            "alert_sinks": "webhook",
            "alerts_stdout": False,
            "sink_webhook_url": f"http://127.0.0.1:{free_port()}/nobody-listens",
            "alert_retry_base_s": 0.01,
            "alert_max_attempts": 2,
        }
    )
    workers = [w.start() for w in start_workers(settings)]
    make_transform(settings, workers)([anomaly("10.0.0.9", 1000.0)])
    stats_key = settings.key("alerter", "stats")
    redis = sync_redis(settings)
    deadline = time.monotonic() + 30
    while not redis.hget(stats_key, "dead:webhook") and time.monotonic() < deadline:
        time.sleep(0.05)
    for w in workers:
        w.stop()
    [record] = [json.loads(r) for r in runner.read_topic(settings, "alerts.dlq", None)]
    assert record["sink"] == "webhook" and "2 attempts failed" in record["reason"]
    assert "connection failed" in record["reason"] and "nobody-listens" not in record["reason"]
    assert json.loads(base64.b64decode(record["value_b64"]))["host"] == "10.0.0.9"
    assert int(redis.hget(stats_key, "dead:webhook")) == 1
