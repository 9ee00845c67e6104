"""Turns Flow records into messages on the flows topic: Avro single-object values keyed by source
address, so each host's flows stay in order in one partition and no repartition is needed downstream."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message

from services.common import kafka, serde
from services.common.settings import Settings


@dataclass
class PublishStats:
    published: int = 0
    delivered: int = 0
    delivery_errors: int = 0
    errors: list[str] = field(default_factory=list)


class FlowPublisher:
    """Asynchronous produce with delivery reports; never a flush per message."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic("flows")
        self.producer = kafka.producer(settings)
        self.stats = PublishStats()

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.stats.delivered += 1
        else:
            self.stats.delivery_errors += 1
            if len(self.stats.errors) < 10:
                self.stats.errors.append(str(err))

    def publish(self, flows: Iterable[dict[str, Any]]) -> int:
        n = 0
        for flow in flows:
            value = serde.encode("Flow", flow)
            while True:
                try:
                    self.producer.produce(self.topic, value, flow["src_addr"].encode(), on_delivery=self._delivered)
                    break
                except BufferError:  # local queue full: let deliveries drain, then retry
                    self.producer.poll(0.05)
            n += 1
            if n % 1000 == 0:
                self.producer.poll(0)
        self.producer.poll(0)
        self.stats.published += n
        return n

    def close(self, timeout: float = 60.0) -> PublishStats:
        kafka.drain(self.producer, timeout)
        return self.stats
