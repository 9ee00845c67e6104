"""Turns Flow records into messages: Avro single-object values on `flows` keyed by source address and,
when destination-host windows are on, the same bytes on `flows-by-dst` keyed by destination address. Each
host's flows stay in order in one partition of each topic, in the order they arrived, so the featurizer
needs no repartition (which would interleave partitions and make in-time flows look late)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message

from services.common import kafka, serde
from services.common.settings import ROLE_TOPICS, Settings
from training.windows import HOST_FIELD


@dataclass
class PublishStats:
    published: int = 0
    delivered: int = 0
    delivery_errors: int = 0
    errors: list[str] = field(default_factory=list)


class FlowPublisher:
    """Asynchronous produce with delivery reports; never a flush per message."""

    def __init__(self, settings: Settings) -> None:
        # (topic, the flow field that keys it) per windowed role
        self.routes = [(settings.topic(ROLE_TOPICS[role]), HOST_FIELD[role]) for role in settings.roles()]
        self.producer = kafka.producer(settings)
        self.stats = PublishStats()

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.stats.delivered += msg.topic() == self.routes[0][0]  # flows, not copies, are counted
        else:
            self.stats.delivery_errors += 1
            if len(self.stats.errors) < 10:
                self.stats.errors.append(str(err))

    def publish(self, flows: Iterable[dict[str, Any]]) -> int:
        n = 0
        for flow in flows:
            value = serde.encode("Flow", flow)
            for topic, host in self.routes:
                while True:
                    try:
                        self.producer.produce(topic, value, flow[host].encode(), on_delivery=self._delivered)
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
