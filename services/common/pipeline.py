"""Consume -> decode -> transform -> produce -> commit: the loop the scorer and the alerter share.

A batch moves on only after its side effects are done: outputs are produced and acknowledged by the
broker (and a service's own side effects, such as sink writes, happen inside `transform`) before the
offsets are committed, so a crash replays the batch instead of losing it (at-least-once). Records
that do not decode go to `<input topic>.dlq` with the reason.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.common import kafka, log, serde
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
    try:
        while not stop.is_set():
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
            outputs = transform(records) if records else []
            for out in outputs:
                while True:
                    try:
                        producer.produce(out.topic, out.value, out.key)
                        break
                    except BufferError:
                        producer.poll(0.05)
            kafka.drain(producer)
            redis.hincrby(stats_key, "consumed", len(records))
            if rejected:
                redis.hincrby(stats_key, "dlq", rejected)
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
        kafka.drain(producer)
