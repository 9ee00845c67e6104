"""Kafka clients configured from settings, and the dead-letter record every service writes."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from services.common.settings import Settings


def producer(settings: Settings, **overrides: Any) -> Producer:
    conf = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
        "enable.idempotence": False,
        "acks": "all",
    }
    conf.update(overrides)
    return Producer(conf)


def consumer(
    settings: Settings,
    service: str,
    topics: list[str],
    on_assign: Callable[[Consumer, list[TopicPartition]], None] | None = None,
    on_revoke: Callable[[Consumer, list[TopicPartition]], None] | None = None,
    **overrides: Any,
) -> Consumer:
    conf = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": settings.group(service),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "heartbeat.interval.ms": max(500, int(settings.session_timeout_s * 1000) // 3),
    }
    conf.update(overrides)
    c = Consumer(conf)
    callbacks = {"on_assign": on_assign, "on_revoke": on_revoke, "on_lost": on_revoke}
    c.subscribe(topics, **{name: fn for name, fn in callbacks.items() if fn is not None})
    return c


def ensure_topics(settings: Settings, topics: list[str] | None = None, timeout: float = 15.0) -> list[str]:
    """Create missing topics with the configured partition count; return those created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    wanted = topics or settings.all_topics()
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=settings.partitions, replication_factor=1) for t in missing],
        operation_timeout=timeout,
    )
    created = []
    for topic, fut in futures.items():
        try:
            fut.result()
            created.append(topic)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created


DLQ_VALUE_MAX = 64 * 1024


def dlq_record(
    service: str, reason: str, value: bytes | None, topic: str = "", partition: int = -1, offset: int = -1, **extra: Any
) -> bytes:
    """A dead-letter record: JSON with the reason and the original bytes, readable by an operator. The bytes
    are cut at DLQ_VALUE_MAX (the original is still at topic/partition/offset): base64 of a message near the
    broker's size limit would exceed it, and a DLQ record that cannot be produced would stall the service."""
    raw = value or b""
    return json.dumps(
        {
            "service": service,
            "reason": reason,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "at": time.time(),
            "value_b64": base64.b64encode(raw[:DLQ_VALUE_MAX]).decode(),
            "value_bytes": len(raw),
            **extra,
        }
    ).encode()


def drain(p: Producer, timeout: float = 30.0) -> None:
    """Wait until every queued message is delivered, or raise."""
    remaining = p.flush(timeout)
    if remaining:
        raise KafkaException(f"{remaining} messages not delivered within {timeout}s")


Message = tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]  # topic, key, value, headers


def produce_all(p: Producer, messages: Iterable[Message], timeout: float = 30.0) -> int:
    """Produce messages and wait until the broker acknowledged every one; raise KafkaException if any
    failed, so the caller retries its batch instead of moving on. Returns how many were sent."""
    failures: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    sent = 0
    for topic, key, value, headers in messages:
        while True:
            try:
                p.produce(topic, value, key, headers=headers, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                p.poll(0.05)
        sent += 1
    drain(p, timeout)
    if failures:
        raise KafkaException(f"{len(failures)} of {sent} messages failed: {failures[0]}")
    return sent
