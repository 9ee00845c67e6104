"""An exported SavedModel (models/<name>/<version>/, see training/export.py) as a detector: for evaluating
trained models without retraining. Its threshold is the one in its model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from services.scorer.backends import latest_version, load_card
from training.detectors.base import WindowData, WindowDetector

BATCH = 4096


class ExportedModel(WindowDetector):
    kind = "exported SavedModel, scored as trained (threshold from its model card)"

    def __init__(self, models_dir: Path | str, name: str) -> None:
        version = latest_version(models_dir, name)
        if version is None:
            raise FileNotFoundError(f"{models_dir}: no exported {name} model; run `flowsentinel train` first")
        self.path = Path(models_dir) / name / str(version)
        self.card: dict[str, Any] = load_card(self.path)
        self.name = name  # type: ignore[misc] - per instance: the model's own name
        self.fixed_threshold = float(self.card["threshold"])  # type: ignore[misc]
        self.serving = tf.saved_model.load(str(self.path)).signatures["serving_default"]
        self.input_name = self.card["signature"]["input"]["name"]

    def fit(self, train: WindowData, validation: WindowData) -> None:
        raise TypeError(f"{self.name} {self.path} is already trained: evaluate it, or train a new one")

    def _outputs(self, data: WindowData) -> tuple[np.ndarray, np.ndarray]:
        x = data.sequences if self.input_name == "sequence" else data.features
        scores, errors = [], []
        for i in range(0, len(x), BATCH):
            out = self.serving(**{self.input_name: tf.constant(x[i : i + BATCH], dtype=tf.float32)})
            scores.append(out["score"].numpy())
            errors.append(out["feature_error"].numpy())
        if not scores:
            return np.zeros(0), np.zeros((0, x.shape[-1]))
        return np.concatenate(scores), np.concatenate(errors)

    def score(self, data: WindowData) -> np.ndarray:
        return self._outputs(data)[0]

    def feature_errors(self, data: WindowData) -> np.ndarray:
        return self._outputs(data)[1]

    def params(self) -> dict[str, Any]:
        keys = ("version", "threshold", "target_fpr", "window_seconds", "history_windows", "seed", "code_version")
        return {
            "path": str(self.path),
            **{k: self.card[k] for k in keys if k in self.card},
            "training_files": self.card.get("training_data", {}).get("files"),
        }
