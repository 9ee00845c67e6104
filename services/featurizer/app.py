"""The featurizer: flows -> per-host event-time windows -> host-windows.

One loop, read top to bottom: consume a batch from `flows` (src windows: the flows a host started) and
`flows-by-dst` (dst windows: the flows it received); apply each partition's flows to its open windows,
held in memory (services.featurizer.windowing); checkpoint the batch's effect to Redis in one
transaction with the partition's offset; publish the windows it emitted and the flows it rejected; commit.
Partitions that went quiet (the end of a replay, a quiet network) have their windows closed after
idle_flush_seconds. Redis and broker outages are waited out without committing; a partition whose
checkpoint failed is reloaded from Redis, so memory never runs ahead of what a successor would see.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaException, TopicPartition
from redis.exceptions import RedisError

from services.common import kafka, log, metrics, preflight, serde
from services.common.pipeline import LAG_EVERY_S, StopFlag, consumer_lag
from services.common.redis_client import sync_redis
from services.common.settings import ROLE_TOPICS, Settings, load_settings
from services.featurizer.store import WindowStore
from services.featurizer.windowing import BatchOutcome, Event, PartitionWindows

# Outages worth waiting out; anything else is a bug and must not be committed.
TRANSIENT = (RedisError, KafkaException, OSError)
T = TypeVar("T")
Slot = tuple[str, int]  # (role, partition)


class Stopping(Exception):
    """SIGTERM arrived while a step was waiting out an outage."""


class Featurizer:
    def __init__(self, settings: Settings, health: metrics.Health, logger: logging.Logger, stop: StopFlag) -> None:
        self.s = settings
        self.stop = stop
        self.health = health
        self.logger = logger
        self.roles = {settings.topic(ROLE_TOPICS[role]): role for role in settings.roles()}
        self.store = WindowStore(sync_redis(settings), settings)
        self.producer = kafka.producer(settings)
        self.consumer = kafka.consumer(
            settings, "featurizer", list(self.roles), on_assign=self._assigned, on_revoke=self._revoked
        )
        self.assigned: set[Slot] = set()
        self.state: dict[Slot, PartitionWindows] = {}  # loaded lazily, after assignment, with retries
        self.last_input: dict[Slot, float] = {}

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        now = time.monotonic()
        for tp in partitions:
            slot = (self.roles[tp.topic], tp.partition)
            self.assigned.add(slot)
            self.last_input[slot] = now

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            slot = (self.roles[tp.topic], tp.partition)
            self.assigned.discard(slot)
            self.state.pop(slot, None)  # every applied batch is checkpointed: nothing to save

    def run(self) -> None:
        self.logger.info("consuming %s", ", ".join(self.roles))
        lag_checked = 0.0
        try:
            while not self.stop.is_set():
                if time.monotonic() - lag_checked >= LAG_EVERY_S:
                    metrics.LAG.labels("featurizer").set(self._persistently("lag", lambda: consumer_lag(self.consumer)))
                    lag_checked = time.monotonic()
                messages = self.consumer.consume(self.s.featurizer_batch, self.s.featurizer_batch_wait_s)
                started = time.perf_counter()
                batches: dict[Slot, list[Event]] = defaultdict(list)
                for m in messages:
                    if m.error():
                        self.logger.warning("consumer error: %s", m.error())
                        continue
                    batches[(self.roles[m.topic()], m.partition())].append((m.offset(), m.value(), m.key()))
                for slot, events in batches.items():
                    self._persistently(f"{slot[0]} partition {slot[1]}", lambda s=slot, e=events: self._step(s, e))
                    self.last_input[slot] = time.monotonic()
                self._close_idle()
                metrics.OPEN_WINDOWS.set(sum(len(state.open) for state in self.state.values()))
                if batches:
                    self._commit()
                    n = sum(len(e) for e in batches.values())
                    metrics.CONSUMED.labels("featurizer").inc(n)
                    metrics.BATCH_SIZE.labels("featurizer").observe(n)
                    metrics.BATCH_SECONDS.labels("featurizer").observe(time.perf_counter() - started)
        except Stopping:
            self.logger.info("stopped while waiting out an outage; the batch in hand is replayed on restart")
        finally:
            self.consumer.close()
            self.producer.flush(5)

    def _step(self, slot: Slot, events: list[Event], idle: bool = False) -> BatchOutcome:
        """Apply, checkpoint, publish. On failure the slot's memory is dropped and reloaded on retry: offsets
        already checkpointed are then recognised and skipped."""
        state = self._load(slot)
        base_hwm = state.hwm
        try:
            batch = state.apply(events, time.time(), idle)
            frames = self.store.checkpoint(state, slot[1], batch, base_hwm)
        except TRANSIENT:
            self.state.pop(slot, None)
            raise
        self._record(slot, batch)
        self._publish(slot, frames)
        return batch

    def _load(self, slot: Slot) -> PartitionWindows:
        if slot not in self.state:
            role, partition = slot
            state = self.store.load(role, partition)
            self._publish(slot, self.store.outbox(role, partition))  # what a crash left queued
            self.state[slot] = state
        return self.state[slot]

    def _publish(self, slot: Slot, frames: list[bytes]) -> None:
        try:
            entries = [serde.unpack_frame(f) for f in frames]
            kafka.produce_all(self.producer, [(topic, key or None, value, None) for topic, key, value in entries])
            self.store.delivered(*slot, len(frames))
        except TRANSIENT:
            self.state.pop(slot, None)  # the outbox still holds them: published again when the slot reloads
            raise
        for topic, _, _ in entries:
            metrics.PRODUCED.labels("featurizer", topic).inc()

    def _close_idle(self) -> None:
        """Partitions that got no flow for idle_flush_seconds and have nothing waiting on the broker are
        idle: close what their silence ends (PartitionWindows._closing)."""
        now = time.monotonic()
        for slot in sorted(self.assigned):
            if now - self.last_input.get(slot, now) < self.s.idle_flush_seconds:
                continue
            self.last_input[slot] = now
            state = self._persistently(f"loading {slot[0]} partition {slot[1]}", lambda s=slot: self._load(s))
            if not state.open or self._backlog(slot):
                continue
            batch = self._persistently("idle close", lambda s=slot: self._step(s, [], idle=True))
            if batch.closed:
                self.logger.info("%s partition %d idle: closed %d windows", *slot, len(batch.closed))

    def _backlog(self, slot: Slot) -> bool:
        """Whether the partition has messages this worker has not read (or that cannot be told): a backlog
        or an outage elsewhere in the loop is not silence."""
        role, partition = slot
        tp = TopicPartition(self.s.topic(ROLE_TOPICS[role]), partition)
        try:
            position = self.consumer.position([tp])[0].offset
            if position < 0:  # nothing read since the assignment: start from the committed offset
                position = self.consumer.committed([tp], timeout=5)[0].offset
            _, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        except KafkaException:
            return True
        return position < high if position >= 0 else high > 0

    def _commit(self) -> None:
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:  # a rebalance or an outage: the successor skips what was checkpointed
            self.logger.warning("offset commit failed (%s); checkpointed offsets make the replay harmless", exc)

    def _record(self, slot: Slot, batch: BatchOutcome) -> None:
        role = slot[0]
        metrics.WINDOWS_EMITTED.labels("closed").inc(len(batch.closed))
        metrics.WINDOWS_EMITTED.labels("early").inc(batch.early)
        for rejected in batch.rejected:
            metrics.DLQ.labels("featurizer", rejected.kind).inc()
        if batch.rejected:
            self.logger.warning("%d %s flows sent to the DLQ", len(batch.rejected), role)

    def _persistently(self, what: str, step: Callable[[], T]) -> T:
        """Run a step until Redis and the broker let it through. Nothing is committed meanwhile, so an
        outage delays flows and loses none; a stop request ends the wait (raises Stopping)."""
        delay = 0.5
        while True:
            try:
                result = step()
                self.health.set_ready(True)
                return result
            except TRANSIENT as exc:
                self.health.set_ready(False, f"{what}: {exc}")
                metrics.ERRORS.labels("featurizer", type(exc).__name__).inc()
                self.logger.error("%s failed (%s); retrying in %.1f s", what, exc, delay)
                if self.stop.event.wait(delay):
                    raise Stopping from exc
                delay = min(delay * 2, 30.0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    del p  # configured through FLOWSENTINEL_* settings only


def run(args: argparse.Namespace) -> int:
    del args
    settings = load_settings()
    preflight.check(settings)
    logger = log.setup("featurizer")
    health = metrics.Health()
    metrics.serve(settings.metrics_port, health)
    Featurizer(settings, health, logger, StopFlag().install()).run()
    return 0
