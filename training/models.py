"""The two benign-trained detectors: a dense autoencoder on host-window vectors and an LSTM sequence
autoencoder on a host's last K windows, plus the threshold and the metrics that describe them.

Both models take RAW feature vectors: the normalisation z = (log1p(max(x, 0)) - mean) / std is the first
step of their graph, so the exported SavedModel needs no side files. A model's anomaly score is the mean
squared reconstruction error in that normalised space; the per-feature squared error explains it. The
LSTM scores the LAST step of its sequence: the window being scored, read in the context of its history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

# In log1p units a std below 0.1 (a count changing by ~10 %, a share by 0.1) is noise, not a scale:
# features that are constant in benign training data would otherwise turn any change into an error of
# millions and drown every other feature in the score.
STD_FLOOR = 0.1
AE_HIDDEN, AE_BOTTLENECK = 32, 8
LSTM_UNITS = 64
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
PATIENCE = 5

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class Normalisation:
    """Per-feature mean and std of log1p(max(x, 0)) over benign training windows."""

    mean: np.ndarray
    std: np.ndarray


def fit_normalisation(features: np.ndarray, std_floor: float = STD_FLOOR) -> Normalisation:
    """From benign training window vectors (N, F); negative values (none expected) count as 0."""
    logged = np.log1p(np.maximum(np.asarray(features, dtype=np.float64), 0.0))
    return Normalisation(
        mean=logged.mean(axis=0).astype(np.float32),
        std=np.maximum(logged.std(axis=0), std_floor).astype(np.float32),
    )


def normalise(x: Any, norm: Normalisation) -> Any:
    """The one normalisation code path: inside the Keras graphs and for the training targets alike."""
    return (ops.log1p(ops.maximum(x, 0.0)) - norm.mean) / norm.std


@dataclass
class Detector:
    """A trained (or trainable) model: `train_model` maps raw input to its reconstruction in the normalised
    space (fitted against `targets(x)`); `score_model` shares its layers and returns score and feature_error."""

    name: str
    input_name: str
    input_shape: tuple[int, ...]  # without the batch dimension: (F,) or (K, F)
    norm: Normalisation
    train_model: keras.Model
    score_model: keras.Model

    def targets(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(normalise(np.asarray(x, dtype=np.float32), self.norm))

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores (N,), per-feature squared errors (N, F)) of raw inputs."""
        out = self.score_model.predict(np.asarray(x, dtype=np.float32), batch_size=4096, verbose=0)
        return np.asarray(out["score"]), np.asarray(out["feature_error"])


def build_autoencoder(norm: Normalisation, seed: int) -> Detector:
    keras.utils.set_random_seed(seed)  # initial weights: seeded here, not by whatever ran before
    n = len(norm.mean)
    x = keras.Input((n,), name="features")
    z = normalise(x, norm)
    h = keras.layers.Dense(AE_HIDDEN, activation="relu")(z)
    h = keras.layers.Dense(AE_BOTTLENECK, activation="relu", name="bottleneck")(h)
    h = keras.layers.Dense(AE_HIDDEN, activation="relu")(h)
    z_hat = keras.layers.Dense(n, name="reconstruction")(h)
    err = ops.square(z - z_hat)
    return Detector(
        name="autoencoder",
        input_name="features",
        input_shape=(n,),
        norm=norm,
        train_model=keras.Model(x, z_hat, name="autoencoder"),
        score_model=keras.Model(x, {"score": ops.mean(err, axis=-1), "feature_error": err}, name="autoencoder_score"),
    )


def build_lstm(norm: Normalisation, k: int, seed: int) -> Detector:
    keras.utils.set_random_seed(seed)
    n = len(norm.mean)
    x = keras.Input((k, n), name="sequence")
    z = normalise(x, norm)
    code = keras.layers.LSTM(LSTM_UNITS, name="encoder")(z)
    h = keras.layers.RepeatVector(k)(code)
    h = keras.layers.LSTM(LSTM_UNITS, return_sequences=True, name="decoder")(h)
    # The decoder emits the sequence newest first (then flipped back): the window being scored is rebuilt
    # first, straight from the code, as in LSTM encoder-decoders for anomaly detection (Malhotra et al.,
    # 2016). On benign validation windows this lowered the last-step error and its tail.
    z_hat = ops.flip(keras.layers.Dense(n, name="reconstruction")(h), axis=1)
    err = ops.square(z[:, -1, :] - z_hat[:, -1, :])
    return Detector(
        name="lstm",
        input_name="sequence",
        input_shape=(k, n),
        norm=norm,
        train_model=keras.Model(x, z_hat, name="lstm"),
        score_model=keras.Model(x, {"score": ops.mean(err, axis=-1), "feature_error": err}, name="lstm_score"),
    )


@dataclass(frozen=True)
class FitReport:
    epochs_run: int
    best_epoch: int  # 1-based; its weights are the ones kept
    best_val_loss: float


def fit(
    detector: Detector,
    x_train: np.ndarray,
    x_val: np.ndarray,
    epochs: int,
    seed: int,
    on_epoch: EpochCallback | None = None,
) -> FitReport:
    """Fit on benign training inputs, stopping early on the benign validation loss (best weights kept)."""
    keras.utils.set_random_seed(seed)  # again: the shuffling must not depend on what was built in between
    detector.train_model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse")
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE, restore_best_weights=True)
    ]
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(e, logs or {})))
    history = detector.train_model.fit(
        x_train,
        detector.targets(x_train),
        validation_data=(x_val, detector.targets(x_val)),
        epochs=epochs,
        batch_size=BATCH_SIZE,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    val_loss = history.history["val_loss"]
    best = int(np.argmin(val_loss))
    return FitReport(epochs_run=len(val_loss), best_epoch=best + 1, best_val_loss=float(val_loss[best]))


def threshold_at_fpr(benign_scores: np.ndarray, fpr: float) -> float:
    """The (1 - fpr) quantile of benign validation scores. method="higher" takes an observed score, so at
    most a share `fpr` of those windows scores strictly above it (an anomaly is score > threshold)."""
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"target false-positive rate must be in (0, 1), got {fpr}")
    if len(benign_scores) == 0:
        raise ValueError("no benign validation scores to set a threshold on")
    return float(np.quantile(np.asarray(benign_scores, dtype=np.float64), 1.0 - fpr, method="higher"))


def roc_auc(benign_scores: np.ndarray, malicious_scores: np.ndarray) -> float:
    """P(malicious score > benign score), ties counting one half (Mann-Whitney U / (n_b * n_m))."""
    b, m = np.asarray(benign_scores, dtype=np.float64), np.asarray(malicious_scores, dtype=np.float64)
    if len(b) == 0 or len(m) == 0:
        raise ValueError("ROC-AUC needs benign and malicious scores")
    ranks = _average_ranks(np.concatenate([b, m]))
    u = ranks[len(b) :].sum() - len(m) * (len(m) + 1) / 2.0
    return float(u / (len(b) * len(m)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    return ranks


def detection_metrics(benign_scores: np.ndarray, malicious_scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Window-level confusion counts, precision, recall, F1 and false-positive rate at `threshold`."""
    tp = int(np.sum(np.asarray(malicious_scores) > threshold))
    fp = int(np.sum(np.asarray(benign_scores) > threshold))
    fn, tn = len(malicious_scores) - tp, len(benign_scores) - fp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
    }
