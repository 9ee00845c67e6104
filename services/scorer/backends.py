"""Model backends of the scorer: numpy in, numpy out, plus the model cards that say how to read it.

`ModelBackend` is transport-neutral so that the in-process SavedModel backend here and a TF-Serving
gRPC/REST backend are interchangeable: both call the `serving_default` signature of the same exported
models (models/<name>/<version>/, written by `flowsentinel train`) and return a BackendResult.
Reading that layout (versions, cards) lives here and needs no TensorFlow, so a tool that only asks
"is a model exported?" stays light; training.export writes the layout with the same names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from training.features import FEATURE_NAMES, FEATURE_SET

MODEL_NAMES = ("autoencoder", "lstm")
CARD_FILE = "model_card.json"
# Rows per signature call: bounds the memory of one call whatever the scorer's batch size.
CALL_BATCH = 4096


class ModelsNotFoundError(FileNotFoundError):
    """No exported model (or no card) where the scorer looks for one."""


@dataclass(frozen=True)
class BackendResult:
    autoencoder_scores: np.ndarray  # (N,)
    autoencoder_feature_errors: np.ndarray  # (N, F)
    lstm_scores: np.ndarray  # (N,)
    lstm_feature_errors: np.ndarray  # (N, F): of the last window of each sequence
    cards: dict[str, dict[str, Any]]  # model name -> model card (threshold, features, version, ...)
    versions: dict[str, int]


class ModelBackend(Protocol):
    def score(self, windows_features: np.ndarray, sequences: np.ndarray) -> BackendResult:
        """Score N window vectors (N, F) with the autoencoder and their sequences (N, K, F) with the LSTM."""
        ...


def version_numbers(model_dir: Path) -> list[int]:
    """The integer versions present under <models_dir>/<name>/ (TF-Serving ignores any other folder name)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def latest_version(models_dir: Path | str, name: str) -> int | None:
    """Highest integer version under <models_dir>/<name>/ that holds a SavedModel, or None."""
    model_dir = Path(models_dir) / name
    complete = [v for v in version_numbers(model_dir) if (model_dir / str(v) / "saved_model.pb").is_file()]
    return max(complete, default=None)


def load_card(path: Path | str) -> dict[str, Any]:
    """The model card of a version folder (or the path of the card file itself)."""
    path = Path(path)
    card_path = path / CARD_FILE if path.is_dir() else path
    try:
        return json.loads(card_path.read_text())
    except FileNotFoundError:
        raise ModelsNotFoundError(
            f"{card_path}: no model card; was this model exported by `flowsentinel train`?"
        ) from None
    except ValueError as exc:
        raise ValueError(f"{card_path}: unreadable model card: {exc}") from exc


def check_card(card: dict[str, Any], where: Path) -> None:
    """The scorer computes the current feature set: a model trained on another one would be read wrongly."""
    if card.get("feature_set") != FEATURE_SET or card.get("features") != FEATURE_NAMES:
        raise ValueError(
            f"{where}: trained on feature set {card.get('feature_set')!r} with features {card.get('features')}, "
            f"but this code computes feature set {FEATURE_SET!r} {FEATURE_NAMES}; retrain with `flowsentinel train`"
        )


def expected_shape(card: dict[str, Any]) -> tuple[int, ...]:
    """The input shape without the batch dimension, from the card's signature."""
    return tuple(card["signature"]["input"]["shape"][1:])


def check_inputs(windows_features: np.ndarray, sequences: np.ndarray, cards: dict[str, dict[str, Any]]) -> None:
    for name, x in (("autoencoder", windows_features), ("lstm", sequences)):
        if x.ndim < 1 or tuple(x.shape[1:]) != expected_shape(cards[name]):
            raise ValueError(
                f"{name}: input shape {x.shape} does not match the model's [N, *{expected_shape(cards[name])}]"
            )
    if len(windows_features) != len(sequences):
        raise ValueError(f"{len(windows_features)} window vectors but {len(sequences)} sequences")


class InProcessBackend:
    """The latest exported version of each model, loaded with tf.saved_model.load into this process."""

    def __init__(self, models_dir: Path | str) -> None:
        import tensorflow as tf  # here, not at import: the Protocol and helpers must not pay for TensorFlow

        self.models_dir = Path(models_dir)
        self.cards: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, int] = {}
        self._loaded: dict[str, Any] = {}  # keeps each SavedModel alive: its signature does not own the variables
        self._signatures: dict[str, Any] = {}
        for name in MODEL_NAMES:
            version = latest_version(self.models_dir, name)
            if version is None:
                raise ModelsNotFoundError(
                    f"no exported {name} model in {self.models_dir}/ (expected {self.models_dir}/{name}/<version>/): "
                    "run `flowsentinel train` first"
                )
            path = self.models_dir / name / str(version)
            card = load_card(path)
            check_card(card, path)
            self.cards[name], self.versions[name] = card, version
            self._loaded[name] = tf.saved_model.load(str(path))
            self._signatures[name] = self._loaded[name].signatures["serving_default"]

    def _call(self, name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, feature errors) in CALL_BATCH chunks; N = 0 needs no call at all."""
        n_features = len(self.cards[name]["features"])
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32), np.zeros((0, n_features), dtype=np.float32)
        key = self.cards[name]["signature"]["input"]["name"]
        fn = self._signatures[name]
        scores, errors = [], []
        for start in range(0, len(x), CALL_BATCH):
            out = fn(**{key: np.ascontiguousarray(x[start : start + CALL_BATCH], dtype=np.float32)})
            scores.append(out["score"].numpy())
            errors.append(out["feature_error"].numpy())
        return np.concatenate(scores), np.concatenate(errors)

    def score(self, windows_features: np.ndarray, sequences: np.ndarray) -> BackendResult:
        windows_features = np.asarray(windows_features, dtype=np.float32)
        sequences = np.asarray(sequences, dtype=np.float32)
        check_inputs(windows_features, sequences, self.cards)
        ae_scores, ae_errors = self._call("autoencoder", windows_features)
        lstm_scores, lstm_errors = self._call("lstm", sequences)
        return BackendResult(ae_scores, ae_errors, lstm_scores, lstm_errors, dict(self.cards), dict(self.versions))
