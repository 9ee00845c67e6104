"""Isolation Forest (scikit-learn) on log-scaled window vectors, fitted on benign training windows."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest as SkIsolationForest

from training.detectors.base import DetectorConfig, WindowData, WindowDetector

N_TREES = 200


def log_features(x: np.ndarray) -> np.ndarray:
    """log1p(max(x, 0)), the models' own scaling: counts and bytes span orders of magnitude, and random
    split points drawn uniformly between a feature's min and max would otherwise all land in its tail."""
    return np.log1p(np.maximum(np.asarray(x, dtype=np.float64), 0.0))


class IsolationForest(WindowDetector):
    name = "isolation_forest"
    kind = f"Isolation Forest ({N_TREES} trees) on log1p window features, benign-trained (unsupervised)"

    def __init__(self, config: DetectorConfig) -> None:
        self.seed = config.seeds[0]
        self.model = SkIsolationForest(n_estimators=N_TREES, random_state=self.seed, n_jobs=1)

    def fit(self, train: WindowData, validation: WindowData) -> None:
        self.model.fit(log_features(train.features[~train.malicious]))

    def score(self, data: WindowData) -> np.ndarray:
        if len(data) == 0:
            return np.zeros(0)
        return -self.model.score_samples(log_features(data.features))  # sklearn: lower = more abnormal

    def params(self) -> dict[str, Any]:
        return {"n_estimators": N_TREES, "random_state": self.seed}
