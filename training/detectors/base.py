"""The one detector interface every model and baseline implements, and the window data they read.

River-style: a detector is fitted once on training windows and then scores windows; a higher score is
more anomalous. Unsupervised detectors are fitted on benign windows only; a supervised one also sees the
malicious training windows. A detector either defines its own alert threshold (`fixed_threshold`: the
rule IDS alerts at 1.0, the Random Forest at probability 0.5) or leaves it to the harness, which sets it
on benign validation windows of the training data at a target false-positive rate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

Flow = dict[str, Any]


@dataclass(frozen=True)
class WindowData:
    """Host windows with everything a detector may read: the feature vectors, each window's host history
    (the LSTM's input), the window's own flows (the rule IDS reads flows), and what the labels say."""

    windows: list[dict[str, Any]]  # HostWindow records (training/windows.py)
    flows: list[list[Flow]]  # each window's flows
    features: np.ndarray  # (N, F) raw window features
    sequences: np.ndarray  # (N, K, F) each window's host history ending at it
    malicious: np.ndarray  # (N,) the window holds a malicious flow
    malicious_history: np.ndarray  # (N,) some window of its K-sequence holds one
    labelled: np.ndarray  # (N,) the window holds a benign or malicious flow (not only unknown ones)

    def __len__(self) -> int:
        return len(self.windows)

    def subset(self, mask: np.ndarray) -> WindowData:
        idx = np.flatnonzero(mask)
        return WindowData(
            windows=[self.windows[i] for i in idx],
            flows=[self.flows[i] for i in idx],
            features=self.features[idx],
            sequences=self.sequences[idx],
            malicious=self.malicious[idx],
            malicious_history=self.malicious_history[idx],
            labelled=self.labelled[idx],
        )

    @staticmethod
    def concat(parts: list[WindowData]) -> WindowData:
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("no windows to concatenate")
        return WindowData(
            windows=[w for p in parts for w in p.windows],
            flows=[f for p in parts for f in p.flows],
            features=np.concatenate([p.features for p in parts]),
            sequences=np.concatenate([p.sequences for p in parts]),
            malicious=np.concatenate([p.malicious for p in parts]),
            malicious_history=np.concatenate([p.malicious_history for p in parts]),
            labelled=np.concatenate([p.labelled for p in parts]),
        )


@dataclass(frozen=True)
class DetectorConfig:
    """What every detector is built with; each takes the parts it needs."""

    seeds: tuple[int, ...] = (0,)
    epochs: int = 40
    history_windows: int = 8


class WindowDetector(ABC):
    """fit once, then score: higher = more anomalous."""

    name: ClassVar[str]
    kind: ClassVar[str]  # one line for the report: what it is and how it was trained
    supervised: ClassVar[bool] = False
    fixed_threshold: ClassVar[float | None] = None

    @abstractmethod
    def fit(self, train: WindowData, validation: WindowData) -> None:
        """`train`: benign training windows (plus malicious ones when `supervised`); `validation`: benign
        windows later in time than `train`, for early stopping and calibration, never for the test."""

    @abstractmethod
    def score(self, data: WindowData) -> np.ndarray:
        """(N,) anomaly scores."""

    def member_scores(self, data: WindowData) -> dict[int, np.ndarray]:
        """Per-seed scores of an ensemble's members (seed -> (N,)), so the report can show the seed spread;
        empty for a detector that is not a seed ensemble."""
        return {}

    def params(self) -> dict[str, Any]:
        """What the report records about how this detector was configured."""
        return {}
