"""The LSTM sequence autoencoder on a host's last K windows (training/models.py), as a seed ensemble."""

from __future__ import annotations

import numpy as np

from training.detectors.neural import NeuralEnsemble
from training.models import Detector, build_lstm, fit_normalisation


class Lstm(NeuralEnsemble):
    name = "lstm"
    kind = (
        "LSTM encoder-decoder over the host's last K windows, benign-trained; score = reconstruction error of "
        "the newest window (unsupervised mode; no supervised head was used for any number here)"
    )
    uses_sequences = True

    def build(self, train_features: np.ndarray, seed: int) -> Detector:
        return build_lstm(fit_normalisation(train_features), self.config.history_windows, seed)
