"""River's HalfSpaceTrees, an online detector: it learns the benign training windows one at a time."""

from __future__ import annotations

from typing import Any

import numpy as np
from river.anomaly import HalfSpaceTrees as RiverHST

from training.detectors.base import DetectorConfig, WindowData, WindowDetector
from training.detectors.isolation_forest import log_features
from training.features import FEATURE_NAMES

# River defaults to height 15: there, every window_size-th window swaps the mass of 2^16 nodes per tree and
# learning took ~27 ms per window on this machine (a minute per fold); height 8 learns ~200x faster.
N_TREES, HEIGHT = 25, 8
# River's default window_size is 250; our benign training sets hold hundreds to a few thousand windows.
WINDOW_SIZE = 250


class HalfSpaceTrees(WindowDetector):
    name = "half_space_trees"
    kind = f"River HalfSpaceTrees ({N_TREES} trees, height {HEIGHT}), online on min-max scaled log1p features"

    def __init__(self, config: DetectorConfig) -> None:
        self.seed = config.seeds[0]
        self.model = RiverHST(n_trees=N_TREES, height=HEIGHT, window_size=WINDOW_SIZE, seed=self.seed)
        self.low = self.span = np.zeros(0)

    def _rows(self, x: np.ndarray) -> list[dict[str, float]]:
        # HalfSpaceTrees expects features in [0, 1]: min-max from the training windows, clipped for new ones.
        scaled = np.clip((log_features(x) - self.low) / self.span, 0.0, 1.0)
        names = FEATURE_NAMES if scaled.shape[1] == len(FEATURE_NAMES) else [f"f{i}" for i in range(scaled.shape[1])]
        return [dict(zip(names, row.tolist(), strict=True)) for row in scaled]

    def fit(self, train: WindowData, validation: WindowData) -> None:
        x = log_features(train.features[~train.malicious])
        self.low = x.min(axis=0)
        self.span = np.maximum(x.max(axis=0) - self.low, 1e-9)
        for row in self._rows(train.features[~train.malicious]):
            self.model.learn_one(row)

    def score(self, data: WindowData) -> np.ndarray:
        return np.array([self.model.score_one(row) for row in self._rows(data.features)], dtype=np.float64)

    def params(self) -> dict[str, Any]:
        return {"n_trees": N_TREES, "height": HEIGHT, "window_size": WINDOW_SIZE, "seed": self.seed}
