"""The benign-trained neural detectors as seed ensembles (training/models.py builds and fits each member).

One seed's model ranks attacks well but its 1 %-FPR threshold is fragile: recall on the same held-out
capture moved from 0.47 to 0.87 with the seed alone. The ensemble trains one member per seed and scores
with the mean of the members' log scale-free scores, log(score / median benign validation score): dividing
by the median puts the members on one scale (their raw errors differ by a factor), the log makes the mean
a geometric mean, so one member's outlier cannot carry a window over the threshold on its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from training.detectors.base import DetectorConfig, WindowData, WindowDetector
from training.models import Detector, fit

# A median of zero (a degenerate member) must not divide by zero; errors are O(0.01..1) in normalised units.
SCALE_FLOOR = 1e-6
# Training inputs per member, drawn at random (seeded) when there are more: an LSTM epoch over 5,000 host
# sequences costs seconds on a shared 2-core machine, and one fold trains a member per seed.
MAX_TRAIN = 1500


class NeuralEnsemble(WindowDetector):
    """A seed ensemble of one of training/models.py's detectors; subclasses say which and what input."""

    uses_sequences: bool = False

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.members: dict[int, Detector] = {}
        self.scales: dict[int, float] = {}
        self.epochs_run: dict[int, int] = {}

    def build(self, train_features: np.ndarray, seed: int) -> Detector:
        raise NotImplementedError

    def inputs(self, data: WindowData) -> np.ndarray:
        return data.sequences if self.uses_sequences else data.features

    def training_mask(self, data: WindowData) -> np.ndarray:
        """The LSTM learns only from sequences whose K windows are all benign."""
        return ~data.malicious_history if self.uses_sequences else ~data.malicious

    def fit(self, train: WindowData, validation: WindowData) -> None:
        x_train = self.inputs(train)[self.training_mask(train)]
        x_val = self.inputs(validation)[self.training_mask(validation)]
        if len(x_train) == 0 or len(x_val) == 0:
            raise ValueError(f"{self.name}: {len(x_train)} training and {len(x_val)} validation inputs")
        for seed in self.config.seeds:
            member = self.build(train.features[~train.malicious], seed)
            rows = np.random.default_rng(seed).permutation(len(x_train))[:MAX_TRAIN]
            report = fit(member, x_train[np.sort(rows)], x_val, self.config.epochs, seed)
            val_scores = self._call(member, x_val)[0]
            self.members[seed] = member
            self.scales[seed] = max(float(np.median(val_scores)), SCALE_FLOOR)
            self.epochs_run[seed] = report.epochs_run

    @staticmethod
    def _call(member: Detector, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, per-feature errors) in one eager call: Keras' predict() retraces its function for every
        new input length, which cost more than the scoring itself in the harness's many small calls."""
        if len(x) == 0:
            return np.zeros(0), np.zeros((0, x.shape[-1]))
        out = member.score_model(tf.constant(x, dtype=tf.float32), training=False)
        return np.asarray(out["score"]), np.asarray(out["feature_error"])

    def member_scores(self, data: WindowData) -> dict[int, np.ndarray]:
        return {seed: self._call(m, self.inputs(data))[0] for seed, m in self.members.items()}

    def score(self, data: WindowData) -> np.ndarray:
        per_member = self.member_scores(data)
        logs = [np.log(np.maximum(s, SCALE_FLOOR) / self.scales[seed]) for seed, s in per_member.items()]
        return np.mean(logs, axis=0)

    def feature_errors(self, data: WindowData) -> np.ndarray:
        """(N, F) per-feature squared reconstruction error, averaged over members (for the report)."""
        return np.mean([self._call(m, self.inputs(data))[1] for m in self.members.values()], axis=0)

    def params(self) -> dict[str, Any]:
        return {
            "seeds": list(self.config.seeds),
            "epochs_max": self.config.epochs,
            "epochs_run": self.epochs_run,
            "max_training_inputs_per_member": MAX_TRAIN,
            "ensemble_score": "mean over seeds of log(score / median benign validation score)",
        }
