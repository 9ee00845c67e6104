"""Labelled captures as detector inputs, and the two leakage-free splits.

A capture is one flow file. Its windows are built by the featurizer's own code (training/windows.py) and
its LSTM sequences by training/sequences.py, over the whole capture: a window's history is its host's past,
never its future. Splitting happens on windows afterwards, so no test window is ever trained on:
- leave-one-capture-out: each capture in turn is the test; the detectors train on all the others;
- chronological: each capture's first TRAIN_SHARE of windows (by window start) train, the rest test.
Within the training part of every capture, the last VALIDATION_SHARE of its benign windows in time are the
benign validation windows: early stopping and thresholds are set on them, never on the test.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.datasets import ReadStats, load_flows
from training.detectors.base import Flow, WindowData
from training.sequences import host_sequences
from training.train_cli import VALIDATION_SHARE, history_flags, validation_mask
from training.windows import build_windows, window_start

TRAIN_SHARE = 0.7
SPLITS = ("leave-one-capture-out", "chronological")


@dataclass(frozen=True)
class Capture:
    name: str
    path: str
    data: WindowData
    stats: ReadStats
    labels: dict[str, int] = field(default_factory=dict)  # flows per label (benign / malicious / unknown)


def capture_name(path: Path) -> str:
    return path.name.split(".")[0].removesuffix("-labeled")


def windows_of(flows: Sequence[Flow], window_seconds: float, k: int) -> WindowData:
    windows = build_windows(flows, window_seconds)
    groups: dict[tuple[str, float], list[Flow]] = defaultdict(list)
    for f in flows:
        groups[(f["src_addr"], window_start(f["first_seen"], window_seconds))].append(f)
    malicious = np.array([w["malicious_flows"] > 0 for w in windows], dtype=bool)
    n_features = len(windows[0]["features"]) if windows else 0
    return WindowData(
        windows=windows,
        flows=[groups[(w["host"], w["window_start"])] for w in windows],
        features=np.asarray([w["features"] for w in windows], dtype=np.float32).reshape(len(windows), n_features),
        sequences=host_sequences(windows, k),
        malicious=malicious,
        malicious_history=history_flags(windows, malicious, k),
        labelled=np.array([w["labelled_flows"] > 0 for w in windows], dtype=bool),
    )


def load_capture(path: Path | str, window_seconds: float, k: int) -> Capture:
    path = Path(path)
    flows, stats = load_flows([path])
    labels: dict[str, int] = defaultdict(int)
    for f in flows:
        labels[f.get("label") or "none"] += 1
    return Capture(capture_name(path), str(path), windows_of(flows, window_seconds, k), stats, dict(labels))


@dataclass(frozen=True)
class Fold:
    """Training windows (with the benign validation mask) and test windows of one split."""

    name: str
    train: WindowData | None  # None: nothing is trained (`flowsentinel evaluate` scores exported models)
    validation: np.ndarray  # over train: benign validation windows
    test: WindowData
    test_captures: list[str]
    train_captures: list[str]


def _training_part(parts: list[WindowData]) -> tuple[WindowData, np.ndarray]:
    """Concatenated training windows and their validation mask, chosen per capture."""
    masks = [validation_mask(p.windows, ~p.malicious, VALIDATION_SHARE) for p in parts]
    return WindowData.concat(parts), np.concatenate([m for p, m in zip(parts, masks, strict=True) if len(p)])


def leave_one_capture_out(captures: Sequence[Capture]) -> list[Fold]:
    if len(captures) < 2:
        raise ValueError("leave-one-capture-out needs at least two captures")
    folds = []
    for held in captures:
        others = [c for c in captures if c is not held]
        train, val = _training_part([c.data for c in others])
        folds.append(Fold(held.name, train, val, held.data, [held.name], [c.name for c in others]))
    return folds


def chronological(captures: Sequence[Capture], share: float = TRAIN_SHARE) -> list[Fold]:
    trains, tests = [], []
    for c in captures:
        order = np.argsort([w["window_start"] for w in c.data.windows], kind="stable")
        early = np.zeros(len(c.data), dtype=bool)
        early[order[: int(len(order) * share)]] = True
        trains.append(c.data.subset(early))
        tests.append(c.data.subset(~early))
    train, val = _training_part(trains)
    names = [c.name for c in captures]
    return [
        Fold(
            f"chronological ({share:.0%} earliest windows of each capture train)",
            train,
            val,
            WindowData.concat(tests),
            names,
            names,
        )
    ]


SPLIT_FUNCTIONS: dict[str, Callable[[Sequence[Capture]], list[Fold]]] = {
    "leave-one-capture-out": leave_one_capture_out,
    "chronological": chronological,
}


def describe(captures: Sequence[Capture]) -> list[dict[str, Any]]:
    return [
        {
            "capture": c.name,
            "file": c.path,
            "rows": c.stats.rows,
            "flows": c.stats.flows,
            "dropped": dict(c.stats.dropped),
            "labels": c.labels,
            "windows": len(c.data),
            "malicious_windows": int(c.data.malicious.sum()),
            "hosts": len({w["host"] for w in c.data.windows}),
        }
        for c in captures
    ]
