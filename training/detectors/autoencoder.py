"""The autoencoder on host-window vectors (training/models.py), as a seed ensemble."""

from __future__ import annotations

import numpy as np

from training.detectors.neural import NeuralEnsemble
from training.models import Detector, build_autoencoder, fit_normalisation


class Autoencoder(NeuralEnsemble):
    name = "autoencoder"
    kind = "dense autoencoder on the window vector, benign-trained; score = reconstruction error (unsupervised)"
    uses_sequences = False

    def build(self, train_features: np.ndarray, seed: int) -> Detector:
        return build_autoencoder(fit_normalisation(train_features), seed)
