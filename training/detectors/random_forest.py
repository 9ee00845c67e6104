"""A supervised Random Forest (scikit-learn): the upper reference, since it sees labelled attacks in training.

It alerts at probability 0.5, its own operating point, not at a benign-validation quantile: with labels a
classifier needs no false-positive budget to pick a threshold, and most benign windows score exactly 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from training.detectors.base import DetectorConfig, WindowData, WindowDetector
from training.detectors.isolation_forest import log_features

N_TREES = 200


class RandomForest(WindowDetector):
    name = "random_forest"
    kind = f"Random Forest ({N_TREES} trees, balanced class weights), SUPERVISED upper reference, alerts at p > 0.5"
    supervised = True
    fixed_threshold = 0.5

    def __init__(self, config: DetectorConfig) -> None:
        self.seed = config.seeds[0]
        self.model = RandomForestClassifier(
            n_estimators=N_TREES, class_weight="balanced", min_samples_leaf=2, random_state=self.seed, n_jobs=1
        )
        self.constant: float | None = None

    def fit(self, train: WindowData, validation: WindowData) -> None:
        y = train.malicious[train.labelled]
        x = log_features(train.features[train.labelled])
        # A training fold without any malicious window (or none benign) leaves nothing to learn apart.
        self.constant = None if len(set(y.tolist())) == 2 else float(y[0]) if len(y) else 0.0
        if self.constant is None:
            self.model.fit(x, y)

    def score(self, data: WindowData) -> np.ndarray:
        if self.constant is not None or len(data) == 0:
            return np.full(len(data), self.constant or 0.0)
        return self.model.predict_proba(log_features(data.features))[:, 1]

    def params(self) -> dict[str, Any]:
        return {"n_estimators": N_TREES, "class_weight": "balanced", "min_samples_leaf": 2, "random_state": self.seed}
