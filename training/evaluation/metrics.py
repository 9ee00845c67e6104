"""Metrics per host window and per flow, and early detection per attack episode.

Flow-level labels come from the loaders (benign / malicious / unknown); unknown flows (Stratosphere's
"Background") are left out. A flow is flagged when the window of its source host that holds it is
flagged: detectors score windows, and an alert on a window is an alert on every flow in it. A window is
malicious when it holds a malicious flow, and is left out when it holds only unknown flows.
An alert is raised when a window is emitted, at its end (event time): early detection is measured from
an episode's first flow to the end of the first flagged window that holds one of its flows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from training.detectors.base import WindowData

# Malicious flows of one host and attack type further apart than this are separate episodes; the same gap
# as the alerter's incidents (settings.incident_gap_seconds default).
EPISODE_GAP_S = 600.0


def binary_metrics(y: np.ndarray, flagged: np.ndarray, scores: np.ndarray | None = None) -> dict[str, Any]:
    """Confusion counts, accuracy, precision, recall, F1, FPR, and ROC-AUC / PR-AUC when both classes exist."""
    y, flagged = np.asarray(y, dtype=bool), np.asarray(flagged, dtype=bool)
    tp, fp = int(np.sum(y & flagged)), int(np.sum(~y & flagged))
    fn, tn = int(np.sum(y & ~flagged)), int(np.sum(~y & ~flagged))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    both = 0 < y.sum() < len(y)
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "accuracy": (tp + tn) / len(y) if len(y) else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "roc_auc": float(roc_auc_score(y, scores)) if both and scores is not None else None,
        "pr_auc": float(average_precision_score(y, scores)) if both and scores is not None else None,
    }


@dataclass(frozen=True)
class FlowView:
    """Every labelled flow of some windows, with its window's index."""

    window: np.ndarray  # (M,) index into the windows
    malicious: np.ndarray  # (M,)
    attack_type: np.ndarray  # (M,) object: attack type or ""
    host: np.ndarray  # (M,) object: source host
    start: np.ndarray  # (M,) first_seen


def flow_view(data: WindowData) -> FlowView:
    window, malicious, attack, host, start = [], [], [], [], []
    for i, flows in enumerate(data.flows):
        for f in flows:
            if f.get("label") not in ("benign", "malicious"):
                continue  # unknown (Background) or unlabelled: no ground truth
            window.append(i)
            malicious.append(f["label"] == "malicious")
            attack.append(f.get("attack_type") or "" if f["label"] == "malicious" else "")
            host.append(f["src_addr"])
            start.append(f["first_seen"])
    return FlowView(
        np.asarray(window, dtype=np.int64),
        np.asarray(malicious, dtype=bool),
        np.asarray(attack, dtype=object),
        np.asarray(host, dtype=object),
        np.asarray(start, dtype=np.float64),
    )


def window_metrics(data: WindowData, scores: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    keep = data.labelled
    return binary_metrics(data.malicious[keep], flagged[keep], scores[keep])


def flow_metrics(view: FlowView, scores: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    return binary_metrics(view.malicious, flagged[view.window], scores[view.window])


def per_attack(view: FlowView, flagged: np.ndarray) -> dict[str, dict[str, float]]:
    """Flow-level recall per attack type."""
    out = {}
    for attack in sorted(set(view.attack_type[view.malicious].tolist())):
        sel = view.malicious & (view.attack_type == attack)
        out[attack or "(unnamed)"] = {"flows": int(sel.sum()), "recall": float(flagged[view.window[sel]].mean())}
    return out


def episodes(data: WindowData, view: FlowView, flagged: np.ndarray, fold: str) -> list[dict[str, Any]]:
    """Attack episodes (one host, one attack type, no gap above EPISODE_GAP_S) and when each was detected."""
    ends = np.array([w["window_end"] for w in data.windows], dtype=np.float64)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for j in np.flatnonzero(view.malicious):
        groups[(view.host[j], view.attack_type[j])].append(int(j))
    out = []
    for (host, attack), idx in sorted(groups.items()):
        idx.sort(key=lambda j: view.start[j])
        cuts = [0] + [n for n in range(1, len(idx)) if view.start[idx[n]] - view.start[idx[n - 1]] > EPISODE_GAP_S]
        for a, b in zip(cuts, [*cuts[1:], len(idx)], strict=True):
            ep = np.asarray(idx[a:b])
            starts = view.start[ep]
            hit = flagged[view.window[ep]]
            alert = float(ends[view.window[ep][hit]].min()) if hit.any() else None
            out.append(
                {
                    "fold": fold,
                    "host": host,
                    "attack_type": attack or "(unnamed)",
                    "start": float(starts.min()),
                    "end": float(starts.max()),
                    "flows": len(ep),
                    "detected": alert is not None,
                    "time_to_detect_s": None if alert is None else alert - float(starts.min()),
                    "share_flows_before_alert": None if alert is None else float(np.mean(starts < alert)),
                }
            )
    return out


def summarise_episodes(eps: list[dict[str, Any]]) -> dict[str, Any]:
    detected = [e for e in eps if e["detected"]]
    ttd = [e["time_to_detect_s"] for e in detected]
    share = [e["share_flows_before_alert"] for e in detected]
    return {
        "episodes": len(eps),
        "detected": len(detected),
        "time_to_detect_s_median": float(np.median(ttd)) if ttd else None,
        "share_flows_before_alert_median": float(np.median(share)) if share else None,
    }
