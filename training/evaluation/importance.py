"""Which features matter: selection by statistics, permutation importance, per-feature reconstruction error.

- Selection (on training windows only): mutual information of each log-scaled feature with the window
  label, then correlation pruning: of two features with |Pearson r| above CORRELATION_MAX (on log1p
  values), the one with less mutual information is dropped as redundant.
- Permutation importance (on held-out windows): the drop in window-level ROC-AUC when one feature's
  column is shuffled across windows (in every step of the LSTM's sequences alike).
- Per-feature reconstruction error (autoencoder): mean squared error of each feature on malicious held-out
  windows over that on benign ones: which features the attacks fail to reconstruct.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.feature_selection import mutual_info_classif
from sklearn.metrics import roc_auc_score

from training.detectors.base import WindowData, WindowDetector
from training.detectors.isolation_forest import log_features
from training.features import FEATURE_NAMES

CORRELATION_MAX = 0.95
PERMUTATION_REPEATS = 2


def select_features(data: WindowData, seed: int) -> dict[str, Any]:
    """Mutual information + correlation pruning on labelled training windows; what is kept and why."""
    keep = data.labelled
    x, y = log_features(data.features[keep]), data.malicious[keep]
    if len(set(y.tolist())) < 2:
        return {"skipped": "training windows hold one class only"}
    mi = mutual_info_classif(x, y, random_state=seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(x, rowvar=False))
    kept: list[int] = []
    reasons: dict[str, str] = {}
    for j in np.argsort(-mi, kind="stable"):
        twin = next((k for k in kept if abs(corr[j, k]) > CORRELATION_MAX), None)
        if mi[j] <= 0.0:
            reasons[FEATURE_NAMES[j]] = "no mutual information with the label"
        elif twin is not None:
            reasons[FEATURE_NAMES[j]] = f"|r| = {abs(corr[j, twin]):.2f} with {FEATURE_NAMES[twin]} (more informative)"
        else:
            kept.append(int(j))
            reasons[FEATURE_NAMES[j]] = "kept"
    return {
        "mutual_information": {FEATURE_NAMES[j]: float(mi[j]) for j in range(len(mi))},
        "kept": [FEATURE_NAMES[j] for j in kept],
        "reasons": reasons,
    }


def _shuffled(data: WindowData, j: int, rng: np.random.Generator) -> WindowData:
    perm = rng.permutation(len(data))
    features, sequences = data.features.copy(), data.sequences.copy()
    features[:, j] = features[perm, j]
    sequences[:, :, j] = sequences[perm, :, j]
    return replace(data, features=features, sequences=sequences)


def permutation_importance(detector: WindowDetector, data: WindowData, seed: int) -> dict[str, float] | None:
    """Mean drop in window-level ROC-AUC per shuffled feature; None without both classes."""
    keep = data.labelled
    y = data.malicious[keep]
    if len(set(y.tolist())) < 2:
        return None
    rng = np.random.default_rng(seed)
    base = roc_auc_score(y, detector.score(data)[keep])
    out = {}
    for j, name in enumerate(FEATURE_NAMES):
        drops = [
            base - roc_auc_score(y, detector.score(_shuffled(data, j, rng))[keep]) for _ in range(PERMUTATION_REPEATS)
        ]
        out[name] = float(np.mean(drops))
    return out


def reconstruction_error_ratio(feature_errors: np.ndarray, data: WindowData) -> dict[str, float] | None:
    """Per feature: mean error on malicious windows / mean error on benign windows (held-out)."""
    keep = data.labelled
    mal, ben = keep & data.malicious, keep & ~data.malicious
    if not mal.any() or not ben.any():
        return None
    ratio = feature_errors[mal].mean(axis=0) / np.maximum(feature_errors[ben].mean(axis=0), 1e-9)
    return {name: float(r) for name, r in zip(FEATURE_NAMES, ratio, strict=True)}
