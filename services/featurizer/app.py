"""The featurizer: flows -> per-host event-time windows -> host-windows, as a Faust app.

Read top to bottom: the app, its input topic, the agent that applies batches of flows to the window
state in Redis and publishes what closed, and a timer that closes the windows of partitions that
went quiet (the end of a replay, a quiet network) and re-publishes anything a crash left queued.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from services.common import log, metrics, preflight
from services.common.redis_client import async_redis
from services.common.settings import Settings, load_settings
from services.featurizer.store import BatchResult, WindowStore

# Outages worth waiting out; anything else is a bug and must not be acked.
TRANSIENT = (RedisError, KafkaError, OSError, asyncio.TimeoutError)


def build_app(settings: Settings) -> tuple[faust.App, metrics.Health]:
    logger = log.setup("featurizer")
    datadir = settings.run_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.group("featurizer"),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(datadir),  # Faust's own files stay in the run folder, not the working directory
        web_enabled=False,
        topic_disable_leader=True,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 3),
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    flows = app.topic(settings.topic("flows"), **raw)
    outputs: dict[str, faust.TopicT] = {}
    store = WindowStore(async_redis(settings), settings)
    lock = asyncio.Lock()  # the agent and the timer both move a partition's state
    last_activity: dict[int, float] = {}

    health = metrics.Health()

    async def persistently(what: str, step: Callable[[], Awaitable[Any]]) -> Any:
        """Run a step until Redis and the broker let it through. The batch is neither acked nor committed
        meanwhile, so an outage delays flows and loses none."""
        delay = 0.5
        while True:
            try:
                result = await step()
                health.set_ready(True)
                return result
            except TRANSIENT as exc:
                health.set_ready(False, f"{what}: {exc}")
                metrics.ERRORS.labels("featurizer", type(exc).__name__).inc()
                logger.error("%s failed (%s); retrying in %.1f s", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def publish(partition: int) -> None:
        entries = await store.outbox(partition)
        pending = []
        for topic, key, value in entries:
            out = outputs.setdefault(topic, app.topic(topic, **raw))
            pending.append(await out.send(key=key or None, value=value))
            metrics.PRODUCED.labels("featurizer", topic).inc()
        await asyncio.gather(*pending)
        await store.outbox_delivered(partition, len(entries))

    @app.agent(flows)
    async def featurize(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.featurizer_batch, within=settings.featurizer_batch_wait_s):
            try:
                await featurize_batch(events)
            except Exception:  # a bug, not an outage: exit before Faust acks the batch, so it is replayed
                logger.exception("unexpected error; exiting without committing this batch")
                os._exit(70)

    async def featurize_batch(events: list[Any]) -> None:
        started = time.perf_counter()
        by_partition: dict[int, list[tuple[int, bytes | None]]] = defaultdict(list)
        for event in events:
            by_partition[event.message.partition].append((event.message.offset, event.message.value))
        async with lock:
            for partition, batch in by_partition.items():
                result = await persistently(f"partition {partition}", lambda p=partition, b=batch: store.apply(p, b))
                await persistently(f"publishing partition {partition}", lambda p=partition: publish(p))
                last_activity[partition] = time.monotonic()
                record(result)
        metrics.CONSUMED.labels("featurizer").inc(len(events))
        metrics.BATCH_SIZE.labels("featurizer").observe(len(events))
        metrics.BATCH_SECONDS.labels("featurizer").observe(time.perf_counter() - started)

    def record(result: BatchResult) -> None:
        metrics.WINDOWS_EMITTED.labels("closed").inc(result.windows_closed)
        metrics.WINDOWS_EMITTED.labels("early").inc(result.windows_early)
        for reason, n in (("late", result.late), ("rejected", result.undecodable)):
            if n:
                metrics.DLQ.labels("featurizer", reason).inc(n)
                logger.warning("%d %s flows sent to the DLQ", n, reason)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        now = time.monotonic()
        for tp in assigned:
            if tp.topic == flows.get_topic_name():
                last_activity.setdefault(tp.partition, now)

    @app.timer(interval=min(1.0, settings.idle_flush_seconds))
    async def close_idle_partitions() -> None:
        now = time.monotonic()
        mine = [tp.partition for tp in app.consumer.assignment() if tp.topic == flows.get_topic_name()]
        for partition in mine:
            idle = now - last_activity.get(partition, now) >= settings.idle_flush_seconds
            async with lock:
                if idle and await persistently("idle check", lambda p=partition: store.open_windows(p)):
                    result = await persistently("idle close", lambda p=partition: store.apply(p, [], close_all=True))
                    logger.info("partition %d idle: closed %d windows", partition, result.windows_closed)
                    record(result)
                await persistently(f"publishing partition {partition}", lambda p=partition: publish(p))

    return app, health


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="warning", help="Faust worker log level")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    preflight.check(settings)
    app, health = build_app(settings)
    metrics.serve(settings.metrics_port, health)
    faust.Worker(app, loglevel=args.log_level.upper(), quiet=True).execute_from_commandline()
    return 0
