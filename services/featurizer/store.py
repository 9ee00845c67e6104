"""Featurizer state in Redis, so a restarted or rebalanced worker resumes where the last one stopped.

Per partition: the last applied offset and the watermark, the open windows (a sorted set scored by
close deadline) and an outbox of messages to publish. Per open window: its raw flows. Per host: its
last window vectors (the LSTM's history, read by the scorer). A batch's whole effect (flows added,
windows closed, their messages queued, counters, offset) lands in one MULTI/EXEC transaction, so a
flow replayed after a crash is recognised by its offset and never counted twice. Messages leave the
outbox only after the broker acknowledged them: at-least-once downstream, exactly-once in state.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from services.common import history, kafka, serde
from services.common.settings import Settings
from services.featurizer.windowing import (
    BatchPlan,
    EarlyState,
    Rejected,
    WindowKey,
    closing_in_batch,
    early_emissions,
    plan_batch,
)
from training.windows import host_window

ROLE = "src"
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # recorded per partition: which worker applied it last


@dataclass
class BatchResult:
    accepted: int
    late: int
    undecodable: int
    duplicates: int
    windows_closed: int
    windows_early: int


class WindowStore:
    def __init__(self, redis: aioredis.Redis, settings: Settings, service: str = "featurizer") -> None:
        self.redis = redis
        self.s = settings
        self.service = service
        self.flows_topic = settings.topic("flows")
        self.windows_topic = settings.topic("host-windows")
        self.dlq_topic = settings.topic("flows.dlq")
        self.stats_key = settings.key("featurizer", "stats")

    def _k(self, *parts: str | int) -> str:
        return self.s.key("feat", *parts)

    async def apply(
        self, partition: int, events: list[tuple[int, bytes | None]], close_all: bool = False
    ) -> BatchResult:
        """Apply one partition's batch (offset order); with close_all, also close every open window
        (the partition went idle). The resulting messages wait in the outbox: call publish_outbox."""
        meta = self._k("p", partition)
        open_key = self._k("open", partition)
        hwm_raw, wm_raw = await self.redis.hmget(meta, "hwm", "watermark")
        hwm = int(hwm_raw) if hwm_raw is not None else -1
        watermark = float(wm_raw) if wm_raw is not None else float("-inf")
        plan = plan_batch(
            events,
            hwm,
            watermark,
            self.s.window_seconds,
            self.s.lateness_seconds,
            time.time(),
            self.s.future_tolerance_s,
        )

        stored_closing = (
            await self.redis.zrange(open_key, 0, -1)
            if close_all
            else await self.redis.zrangebyscore(open_key, "-inf", plan.watermark)
        )
        closing = {WindowKey.parse(m) for m in stored_closing}
        closing.update(plan.appends if close_all else closing_in_batch(plan))
        ordered = sorted(closing, key=lambda k: (k.start, k.host))
        stored_flows = await self._stored_flows(ordered)
        if close_all and ordered:  # later flows for these windows are late, not a second copy of them
            end = max(k.start for k in ordered) + self.s.window_seconds + self.s.lateness_seconds
            plan.watermark = max(plan.watermark, end)

        staying = [k for k in plan.appends if k not in closing]
        early = await self._early(partition, plan, staying)
        early_flows = await self._stored_flows([k for k, (points, _) in early.items() if points])

        now = time.time()
        outbox = self._k("outbox", partition)
        partial_key = self._k("early", partition)
        emitted, width = 0, self.s.window_seconds
        async with self.redis.pipeline(transaction=True) as tx:
            for key in staying:
                tx.rpush(self._k("win", key.member()), *[raw for raw, _ in plan.appends[key]])
                tx.zadd(open_key, {key.member(): plan.deadlines[key]}, nx=True)
                points, state = early[key]
                if points:
                    flows = early_flows[key] + [f for _, f in plan.appends[key]]
                    for count in points:
                        record = host_window(key.host, ROLE, key.start, width, flows[:count], False, now)
                        record["window_id"] += f"#{count}"
                        self._emit(tx, outbox, record)
                    emitted += len(points)
                    tx.hset(partial_key, key.member(), state.encode())
            for key in ordered:
                flows = stored_flows[key] + [f for _, f in plan.appends.get(key, [])]
                record = host_window(key.host, ROLE, key.start, self.s.window_seconds, flows, True, now)
                self._emit(tx, outbox, record)
                hist = history.history_key(self.s, ROLE, key.host)
                tx.zadd(hist, {history.pack(key.start, record["features"]): key.start})
                tx.zremrangebyrank(hist, 0, -history.keep_last(self.s) - 1)
                tx.expire(hist, self.s.host_ttl_seconds)
                tx.delete(self._k("win", key.member()))
            if ordered:
                tx.zrem(open_key, *[k.member() for k in ordered])
                tx.hdel(partial_key, *[k.member() for k in ordered])
            for rejected in plan.late + plan.undecodable + plan.invalid:
                tx.rpush(outbox, self._dlq_frame(partition, rejected))
            tx.hset(meta, mapping={"hwm": plan.hwm, "watermark": plan.watermark, "worker": WORKER})
            self._count(tx, plan, len(ordered), emitted)
            await tx.execute()
        rejected = len(plan.undecodable) + len(plan.invalid)
        return BatchResult(plan.accepted, len(plan.late), rejected, plan.duplicates, len(ordered), emitted)

    def _emit(self, tx: aioredis.client.Pipeline, outbox: str, record: dict) -> None:
        message = serde.encode("HostWindow", record)
        tx.rpush(outbox, serde.pack_frame(self.windows_topic, record["host"].encode(), message))

    async def _early(
        self, partition: int, plan: BatchPlan, keys: list[WindowKey]
    ) -> dict[WindowKey, tuple[list[int], EarlyState]]:
        """Which open windows this batch makes due for an early emission, and at which flow counts."""
        if not keys:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.llen(self._k("win", key.member()))
            pipe.hmget(self._k("early", partition), [k.member() for k in keys])
            *lengths, states = await pipe.execute()
        return {
            key: early_emissions(
                int(stored),
                [f for _, f in plan.appends[key]],
                EarlyState.decode(raw, key.start),
                self.s.early_emit_flows,
                self.s.early_emit_seconds,
            )
            for key, stored, raw in zip(keys, lengths, states, strict=True)
        }

    async def _stored_flows(self, keys: list[WindowKey]) -> dict[WindowKey, list[dict]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.lrange(self._k("win", key.member()), 0, -1)
            replies = await pipe.execute()
        return {key: [serde.decode_as(raw, "Flow") for raw in raws] for key, raws in zip(keys, replies, strict=True)}

    def _dlq_frame(self, partition: int, rejected: Rejected) -> bytes:
        value = kafka.dlq_record(
            self.service, rejected.reason, rejected.value, self.flows_topic, partition, rejected.offset
        )
        return serde.pack_frame(self.dlq_topic, b"", value)

    def _count(self, tx: aioredis.client.Pipeline, plan: BatchPlan, closed: int, early: int) -> None:
        for field, n in (
            ("flows_featurized", plan.accepted),
            ("flows_late", len(plan.late)),
            ("flows_undecodable", len(plan.undecodable)),
            ("flows_invalid", len(plan.invalid)),
            ("windows_emitted", closed),
            ("windows_early", early),
        ):
            if n:
                tx.hincrby(self.stats_key, field, n)
        if plan.duplicates:
            tx.hincrby(self.stats_key, "flows_replayed_skipped", plan.duplicates)

    async def outbox(self, partition: int) -> list[tuple[str, bytes, bytes]]:
        return [serde.unpack_frame(f) for f in await self.redis.lrange(self._k("outbox", partition), 0, -1)]

    async def outbox_delivered(self, partition: int, count: int) -> None:
        """Drop the first `count` entries, now acknowledged by the broker."""
        if count:
            await self.redis.ltrim(self._k("outbox", partition), count, -1)

    async def open_windows(self, partition: int) -> int:
        return int(await self.redis.zcard(self._k("open", partition)))
