"""Event-time tumbling windows per host, and the HostWindow record both training and the featurizer
build from a window's flows."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from training.features import FEATURE_SET, window_features

Flow = dict[str, Any]

HOST_FIELD = {"src": "src_addr", "dst": "dst_addr"}  # role -> the flow field naming the window's host


def window_start(ts: float, window_seconds: float) -> float:
    return math.floor(ts / window_seconds) * window_seconds


def window_id(role: str, host: str, start: float) -> str:
    return f"{role}|{host}|{start:.3f}"


def host_window(
    host: str, role: str, start: float, window_seconds: float, flows: Sequence[Flow], final: bool, emitted_at: float
) -> dict[str, Any]:
    """The HostWindow record (schemas/HostWindow.avsc) of one host's flows in one window."""
    labelled = [f for f in flows if f.get("label") in ("benign", "malicious")]
    return {
        "window_id": window_id(role, host, start),
        "host": host,
        "role": role,
        "window_start": start,
        "window_end": start + window_seconds,
        "final": final,
        "flow_count": len(flows),
        "first_flow_seen": min(f["first_seen"] for f in flows),
        "feature_set": FEATURE_SET,
        "features": window_features(flows, role),
        "emitted_at": emitted_at,
        "malicious_flows": sum(1 for f in labelled if f["label"] == "malicious"),
        "labelled_flows": len(labelled),
        "attack_types": sorted({f["attack_type"] for f in flows if f.get("attack_type") and f["label"] == "malicious"}),
    }


def build_windows(flows: Iterable[Flow], window_seconds: float, role: str = "src") -> list[dict[str, Any]]:
    """All closed host windows of a flow list in one role, ordered by host then time (offline twin of the
    featurizer)."""
    address = HOST_FIELD[role]
    groups: dict[tuple[str, float], list[Flow]] = defaultdict(list)
    for f in flows:
        host = f[address]
        groups[(host, window_start(f["first_seen"], window_seconds))].append(f)
    return [
        host_window(host, role, start, window_seconds, groups[(host, start)], True, 0.0)
        for host, start in sorted(groups)
    ]
