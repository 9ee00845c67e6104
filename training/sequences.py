"""The LSTM's input: a host's last K window vectors, oldest first, ending at the window being scored.

Training builds them from a capture's windows; the scorer from the history the featurizer keeps in
Redis. Both pad the same way: a host with fewer than K windows has its earliest window repeated at
the front, so the model never sees a made-up all-zero window.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np


def pad_history(history: Sequence[Sequence[float]], k: int) -> np.ndarray:
    """(K, F) float32 from up to K vectors, oldest first; edge-padded at the front."""
    if not history:
        raise ValueError("a sequence needs at least the window being scored")
    recent = list(history)[-k:]
    rows = [recent[0]] * (k - len(recent)) + recent
    return np.asarray(rows, dtype=np.float32)


def host_sequences(windows: Sequence[dict[str, Any]], k: int) -> np.ndarray:
    """(N, K, F): for each window (in the given order), its host's last K windows ending at it."""
    by_host: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
    for i, w in enumerate(windows):
        by_host[(w["role"], w["host"])].append((w["window_start"], i))
    out = np.zeros((len(windows), k, len(windows[0]["features"]) if windows else 0), dtype=np.float32)
    for items in by_host.values():
        items.sort()
        vectors = [windows[i]["features"] for _, i in items]
        for pos, (_, i) in enumerate(items):
            out[i] = pad_history(vectors[max(0, pos - k + 1) : pos + 1], k)
    return out
