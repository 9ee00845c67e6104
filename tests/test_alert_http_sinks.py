"""HTTP sinks (Splunk HEC, Elasticsearch _bulk, JSON webhook) against loopback receivers that speak
their protocols, through the real delivery path: a durable spool per sink drained by its own thread."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from services.alerter.delivery import RetryPolicy, SinkWorker
from services.alerter.sinks import build_sink
from services.alerter.spool import Spool
from services.common.settings import Settings
from tests.alert_receivers import Receiver, serving
from tests.alert_samples import alerts

TOKEN = "0c9a3b52-7e3f-4a2d-9d9e-secret-hec-token"
FAST = RetryPolicy(base_s=0.02, max_s=0.2, max_attempts=50)


def sink_settings(kind: str, url: str, tmp_path: Path) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    token_file = tmp_path / "hec.token"
    token_file.write_text(TOKEN + "\n")  # as a mounted secret: trailing newline
    options = {
        "hec": {"sink_hec_url": url, "sink_hec_token_file": str(token_file)},
        "bulk": {"sink_elastic_url": url, "sink_elastic_index": "fs-alerts"},
        "webhook": {"sink_webhook_url": url + "/hooks/T000/B000/secret"},
    }[kind]
    return Settings(run_dir=tmp_path, **options)


def deliver(
    kind: str, receiver_url: str, batch: list[dict[str, Any]], tmp_path: Path, policy: RetryPolicy = FAST
) -> tuple[SinkWorker, list[tuple[str, dict[str, Any], str]]]:
    sink = build_sink({"bulk": "elastic"}.get(kind, kind), sink_settings(kind, receiver_url, tmp_path))
    dead: list[tuple[str, dict[str, Any], str]] = []
    worker = SinkWorker(sink, Spool(tmp_path / f"{kind}.sqlite", 10_000), policy, lambda *d: dead.append(d), batch=7)
    worker.start().enqueue(batch)
    return worker, dead


def wait_for(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.parametrize("kind", ["hec", "bulk", "webhook"])
def test_every_incident_arrives_after_the_receiver_recovers(kind: str, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    batch = alerts(40)
    receiver = Receiver(kind, fail_first=3, token=TOKEN)
    with serving(receiver) as url:
        worker, dead = deliver(kind, url, batch, tmp_path)
        wait_for(lambda: len(worker.spool) == 0, "the spool to drain")
        worker.stop()
    assert receiver.refused == 3 and worker.healthy and not dead
    # Every incident arrived, once per attempt that succeeded: batches are all-or-nothing for HEC, and
    # _bulk's refused item was re-sent alone (its accepted neighbours again too, idempotent by _id).
    assert set(receiver.accepted) == {a["alert_id"] for a in batch}
    if kind == "bulk":
        assert receiver.rejected_items == 1
    else:
        assert all(n == 1 for n in receiver.accepted.values()), receiver.accepted.most_common(3)
    assert "retried" in caplog.text and "recovered" in caplog.text
    assert TOKEN not in caplog.text and "secret" not in caplog.text  # neither the token nor the webhook URL


def test_slack_compatible_webhook_posts_text(tmp_path: Path) -> None:
    receiver = Receiver("webhook")
    batch = alerts(2)
    with serving(receiver) as url:
        settings = Settings(sink_webhook_url=url, sink_webhook_slack=True)
        build_sink("webhook", settings).send(batch)
    texts = list(receiver.accepted)
    assert len(texts) == 2
    assert all(a["incident_id"] in t and a["summary"] in t for a, t in zip(batch, texts, strict=True))


def test_after_the_attempt_limit_an_alert_is_dead_lettered_with_the_reason(tmp_path: Path) -> None:
    receiver = Receiver("hec", fail_first=10**9, token=TOKEN)
    batch = alerts(5)
    with serving(receiver) as url:
        worker, dead = deliver("hec", url, batch, tmp_path, RetryPolicy(0.01, 0.05, max_attempts=3))
        wait_for(lambda: len(dead) == len(batch), "the dead letters")
        worker.stop()
    assert len(worker.spool) == 0 and receiver.requests == 3 * 1  # one batch of 5, tried three times
    assert {d[1]["alert_id"] for d in dead} == {a["alert_id"] for a in batch}
    assert all(d[0] == "hec" and "3 attempts failed" in d[2] and "HTTP 503" in d[2] for d in dead)


def test_a_failing_sink_does_not_hold_up_another(tmp_path: Path) -> None:
    down, up = Receiver("webhook", fail_first=10**9), Receiver("hec", token=TOKEN)
    batch = alerts(20)
    with serving(down) as down_url, serving(up) as up_url:
        stuck, _ = deliver("webhook", down_url, batch, tmp_path / "a")
        fine, _ = deliver("hec", up_url, batch, tmp_path / "b")
        wait_for(lambda: len(fine.spool) == 0, "the healthy sink to deliver")
        assert len(up.accepted) == 20 and len(stuck.spool) == 20 and down.requests >= 1
        fine.stop()
        stuck.stop()


def test_the_spool_survives_a_restart_and_keeps_its_bound(tmp_path: Path) -> None:
    batch = alerts(6)
    spool = Spool(tmp_path / "s.sqlite", max_entries=4)
    assert [a["alert_id"] for a in spool.put(batch)] == [a["alert_id"] for a in batch[:2]]
    assert spool.put(batch[-1:]) == []  # an alert id already queued is not queued twice
    spool.close()
    reopened = Spool(tmp_path / "s.sqlite", max_entries=4)
    assert [e.alert for e in reopened.due(10, time.time())] == batch[2:]
