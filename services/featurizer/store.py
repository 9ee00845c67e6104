"""Featurizer state in Redis, so a restarted or rebalanced worker resumes where the last one stopped.

The worker keeps its partitions' open windows in memory and checkpoints each batch here. Per role and
partition: the last applied offset and the watermark, the open windows (a sorted set scored by close
deadline), when each last emitted early, and an outbox of messages to publish. Per open window: its raw
flows. Per host: its last window vectors (the LSTM's history, read by the scorer). A batch's whole
effect lands in one MULTI/EXEC transaction, so a flow replayed after a crash is recognised by its offset
and never counted twice. Messages leave the outbox only after the broker acknowledged them: at-least-
once downstream, exactly-once in state. Redis is read only when a partition is assigned.
"""

from __future__ import annotations

import os
import socket
import struct
from collections import defaultdict
from collections.abc import Iterator

import redis

from services.common import history, kafka, serde
from services.common.settings import ROLE_TOPICS, Settings
from services.featurizer.windowing import (
    BatchOutcome,
    EarlyState,
    OpenWindow,
    PartitionWindows,
    Rejected,
    WindowKey,
    WindowRules,
)
from training.windows import HOST_FIELD

WORKER = f"{socket.gethostname()}:{os.getpid()}"  # recorded per partition: which worker applied it last
FLOW_COUNTERS = ("late", "undecodable", "invalid")


def pack_flows(raws: list[bytes]) -> bytes:
    """Raw flow messages as one Redis value: each prefixed by its length."""
    return b"".join(struct.pack("!I", len(raw)) + raw for raw in raws)


def unpack_flows(blob: bytes) -> Iterator[bytes]:
    at = 0
    while at < len(blob):
        (size,) = struct.unpack_from("!I", blob, at)
        yield blob[at + 4 : at + 4 + size]
        at += 4 + size


def stats_field(role: str, name: str) -> str:
    """Counter name in the featurizer's stats hash: src counters keep their plain names."""
    return name if role == "src" else f"{role}_{name}"


def rules(settings: Settings) -> WindowRules:
    return WindowRules(
        settings.window_seconds,
        settings.lateness_seconds,
        settings.early_emit_flows,
        settings.early_emit_seconds,
        settings.future_tolerance_s,
        settings.early_emit_min_flows,
    )


class WindowStore:
    def __init__(self, client: redis.Redis, settings: Settings, service: str = "featurizer") -> None:
        self.redis = client
        self.s = settings
        self.service = service
        self.windows_topic = settings.topic("host-windows")
        self.dlq_topic = settings.topic("flows.dlq")
        self.stats_key = settings.key("featurizer", "stats")

    def _k(self, role: str, *parts: str | int) -> str:
        return self.s.key("feat", role, *parts)

    def load(self, role: str, partition: int) -> PartitionWindows:
        """A partition's state as the last checkpoint left it."""
        hwm, watermark = self.redis.hmget(self._k(role, "p", partition), "hwm", "watermark")
        state = PartitionWindows(
            role,
            rules(self.s),
            hwm=int(hwm) if hwm is not None else -1,
            watermark=float(watermark) if watermark is not None else float("-inf"),
        )
        members = self.redis.zrange(self._k(role, "open", partition), 0, -1, withscores=True)
        early = self.redis.hgetall(self._k(role, "early", partition))
        for member, deadline in members:
            key = WindowKey.parse(member)
            state.open[key] = OpenWindow(deadline, [], EarlyState.decode(early.get(member), key.start))
        starts = sorted({key.start for key in state.open})
        with self.redis.pipeline(transaction=False) as pipe:
            for start in starts:
                pipe.lrange(self._flows_key(role, partition, start), 0, -1)
            stored = pipe.execute()
        for start, blobs in zip(starts, stored, strict=True):
            for raw in (raw for blob in blobs for raw in unpack_flows(blob)):
                flow = serde.decode_as(raw, "Flow")
                state.open[WindowKey(flow[HOST_FIELD[role]], start)].flows.append(flow)
        return state

    def _flows_key(self, role: str, partition: int, start: float) -> str:
        """The raw flows of every open window of one start: they all close together (same deadline)."""
        return self._k(role, "flows", partition, repr(start))

    def checkpoint(self, state: PartitionWindows, partition: int, batch: BatchOutcome, base_hwm: int) -> list[bytes]:
        """Store a batch's effect atomically, on top of the checkpoint at `base_hwm` (the offset the state had
        before the batch); returns the outbox frames it queued (publish, then `delivered`). Raises
        redis.WatchError when the partition's checkpoint is no longer that one: another worker took the
        partition over meanwhile, and this state is stale (reload it)."""
        role = state.role
        meta_key = self._k(role, "p", partition)
        open_key, early_key = self._k(role, "open", partition), self._k(role, "early", partition)
        frames = [self._window_frame(w) for w in batch.windows]
        frames += [self._dlq_frame(role, partition, r) for r in batch.rejected]
        keep = history.keep_last(self.s)
        closed = set(batch.closed)  # opened, filled and closed within the batch: nothing of them to store
        by_start: dict[float, list[bytes]] = defaultdict(list)
        for key, raws in batch.appended.items():
            if key not in closed:
                by_start[key.start] += raws
        with self.redis.pipeline(transaction=True) as tx:
            tx.watch(meta_key)  # fencing: a worker that lost the partition must not write over its successor
            stored = tx.hget(meta_key, "hwm")
            if (int(stored) if stored is not None else -1) != base_hwm:
                raise redis.WatchError(f"{role} partition {partition} was checkpointed by another worker")
            tx.multi()
            for start, raws in by_start.items():  # one packed entry per start and batch: few, large commands
                tx.rpush(self._flows_key(role, partition, start), pack_flows(raws))
            if opened := {k.member(): d for k, d in batch.opened.items() if k not in closed}:
                tx.zadd(open_key, opened)
            if early := {k.member(): s.encode() for k, s in batch.early_states.items() if k not in closed}:
                tx.hset(early_key, mapping=early)
            for record in batch.windows:
                if record["final"]:
                    hist = history.history_key(self.s, role, record["host"])
                    tx.zadd(hist, {history.pack(record["window_start"], record["features"]): record["window_start"]})
                    tx.zremrangebyrank(hist, 0, -keep - 1)
                    tx.expire(hist, self.s.host_ttl_seconds)
            if batch.closed:
                members = [k.member() for k in batch.closed]
                tx.delete(*{self._flows_key(role, partition, k.start) for k in batch.closed})
                tx.zrem(open_key, *members)
                tx.hdel(early_key, *members)
            if frames:
                tx.rpush(self._k(role, "outbox", partition), *frames)
            meta = {"hwm": state.hwm, "watermark": state.watermark, "worker": WORKER}
            tx.hset(meta_key, mapping=meta)
            self._count(tx, role, batch)
            tx.execute()
        return frames

    def _window_frame(self, record: dict) -> bytes:
        return serde.pack_frame(self.windows_topic, record["host"].encode(), serde.encode("HostWindow", record))

    def _dlq_frame(self, role: str, partition: int, rejected: Rejected) -> bytes:
        topic = self.s.topic(ROLE_TOPICS[role])
        value = kafka.dlq_record(self.service, rejected.reason, rejected.value, topic, partition, rejected.offset)
        return serde.pack_frame(self.dlq_topic, b"", value)

    def _count(self, tx: redis.client.Pipeline, role: str, batch: BatchOutcome) -> None:
        closed = len(batch.closed)
        counts = {
            "flows_featurized": batch.accepted,
            "flows_replayed_skipped": batch.duplicates,
            "windows_emitted": closed,
            "windows_early": batch.early,
            **{f"flows_{kind}": batch.count(kind) for kind in FLOW_COUNTERS},
        }
        for name, n in counts.items():
            if n:
                tx.hincrby(self.stats_key, stats_field(role, name), n)

    def outbox(self, role: str, partition: int) -> list[bytes]:
        """What a crash left queued: published before the partition's next batch."""
        return self.redis.lrange(self._k(role, "outbox", partition), 0, -1)

    def delivered(self, role: str, partition: int, count: int) -> None:
        """Drop the first `count` outbox entries, now acknowledged by the broker."""
        if count:
            self.redis.ltrim(self._k(role, "outbox", partition), count, -1)

    def open_windows(self, role: str, partition: int) -> int:
        return int(self.redis.zcard(self._k(role, "open", partition)))
