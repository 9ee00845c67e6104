"""Consume -> decode -> transform -> produce -> commit: the loop the scorer and the alerter share.

A batch moves on only after its side effects are done: outputs are produced and acknowledged by the
broker (and a service's own side effects, such as sink writes, happen inside `transform`) before the
offsets are committed, so a crash replays the batch instead of losing it (at-least-once). Records
that do not decode go to `<input topic>.dlq` with the reason.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer

from services.common import kafka, log, metrics, serde
from services.common.redis_client import sync_redis
from services.common.settings import Settings


@dataclass(frozen=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes


Transform = Callable[[list[dict[str, Any]]], list[Output]]


class StopFlag:
    """Set by SIGTERM/SIGINT so the loop finishes its batch and commits before exiting."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.event.set())
        return self

    def is_set(self) -> bool:
        return self.event.is_set()


LAG_EVERY_S = 5.0  # a watermark query per partition: cheap, but not per batch


def consumer_lag(consumer: Consumer) -> int:
    """Messages between the committed offsets and the ends of the assigned partitions."""
    assigned = consumer.assignment()
    if not assigned:
        return 0
    lag = 0
    for tp in consumer.committed(assigned, timeout=5):
        _, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        lag += max(0, high - tp.offset) if tp.offset >= 0 else high
    return lag


def run_loop(
    settings: Settings,
    service: str,
    input_topic: str,
    schema: str,
    transform: Transform,
    batch_size: int,
    batch_wait_s: float,
    stop: StopFlag,
) -> None:
    logger = log.setup(service)
    consumer = kafka.consumer(settings, service, [settings.topic(input_topic)])
    producer = kafka.producer(settings)
    redis = sync_redis(settings)
    stats_key = settings.key(service, "stats")
    dlq = settings.topic(f"{input_topic}.dlq")
    logger.info("consuming %s", settings.topic(input_topic))
    lag_checked = 0.0
    try:
        while not stop.is_set():
            if time.monotonic() - lag_checked >= LAG_EVERY_S:
                metrics.LAG.labels(service).set(consumer_lag(consumer))
                lag_checked = time.monotonic()
            messages = consumer.consume(batch_size, batch_wait_s)
            if not messages:
                continue
            records, rejected = [], 0
            for m in messages:
                if m.error():
                    logger.warning("consumer error: %s", m.error())
                    continue
                try:
                    records.append(serde.decode_as(m.value(), schema))
                except serde.DecodeError as exc:
                    rejected += 1
                    reason = f"undecodable {schema}: {exc}"
                    record = kafka.dlq_record(service, reason, m.value(), m.topic(), m.partition(), m.offset())
                    producer.produce(dlq, record)
                    metrics.DLQ.labels(service, "undecodable").inc()
            outputs = transform(records) if records else []
            kafka.produce_all(producer, [(out.topic, out.key, out.value, None) for out in outputs])
            for out in outputs:
                metrics.PRODUCED.labels(service, out.topic).inc()
            redis.hincrby(stats_key, "consumed", len(records))
            metrics.CONSUMED.labels(service).inc(len(records))
            if rejected:
                redis.hincrby(stats_key, "dlq", rejected)
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
        kafka.drain(producer)
