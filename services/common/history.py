"""A host's window history in Redis: the featurizer appends each closed window's vector, the scorer
reads the last K ending at the window it scores (the LSTM's input). Members carry the window start
and the float64 vector, so reading by window start gives the same sequence however far the scorer lags."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import redis

from services.common.settings import Settings


def history_key(settings: Settings, role: str, host: str) -> str:
    return settings.key("hist", role, host)


def pack(start: float, vector: Sequence[float]) -> bytes:
    return struct.pack(f"<d{len(vector)}d", start, *vector)


def unpack(member: bytes) -> tuple[float, list[float]]:
    values = struct.unpack(f"<d{len(member) // 8 - 1}d", member)
    return values[0], list(values[1:])


def read_histories(
    client: redis.Redis, settings: Settings, windows: Sequence[tuple[str, str, float]]
) -> list[list[tuple[float, list[float]]]]:
    """For each (role, host, window_start): up to K (start, vector) ending at that window, oldest first."""
    k = settings.history_windows
    with client.pipeline(transaction=False) as pipe:
        for role, host, start in windows:
            pipe.zrevrangebyscore(history_key(settings, role, host), start, "-inf", start=0, num=k)
        replies = pipe.execute()
    return [[unpack(m) for m in reversed(members)] for members in replies]


def keep_last(settings: Settings) -> int:
    """Vectors kept per host: a few K, so a lagging scorer still finds its window's history."""
    return 4 * settings.history_windows
