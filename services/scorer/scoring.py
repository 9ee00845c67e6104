"""Pure scoring logic: from host windows and model outputs to Score and Anomaly records."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from services.alerter.incidents import SEVERITIES
from services.scorer.backends import BackendResult, role_models
from training.features import FEATURE_SET, N_FEATURES, ROLES

# Score / threshold ratios at which an anomaly becomes medium, high, critical.
SEVERITY_STEPS = (2.0, 5.0, 20.0)


def window_problem(window: dict[str, Any]) -> str | None:
    """Why a host window cannot be scored, or None: the models read exactly this feature set, and one
    NaN or infinity would make every score of its batch meaningless; each role has its own models."""
    if window["role"] not in ROLES:
        return f"role {window['role']!r}, the models are trained for {', '.join(ROLES)}"
    if window["feature_set"] != FEATURE_SET:
        return f"feature set {window['feature_set']!r}, the models read {FEATURE_SET!r}"
    if len(window["features"]) != N_FEATURES:
        return f"{len(window['features'])} features, the models read {N_FEATURES}"
    if not all(math.isfinite(v) for v in window["features"]):
        return "a feature is NaN or infinite"
    if not (math.isfinite(window["window_start"]) and math.isfinite(window["window_end"])):
        return "window times are not finite"
    return None


def severity(ratio: float, models_fired: int) -> str:
    """How far above threshold, one step higher when both models agree."""
    rank = sum(ratio >= step for step in SEVERITY_STEPS) + (1 if models_fired > 1 else 0)
    return SEVERITIES[min(rank, len(SEVERITIES) - 1)]


def explain(
    features: Sequence[float], feature_error: Sequence[float], names: Sequence[str], top: int
) -> list[dict[str, Any]]:
    """The features with the largest share of the reconstruction error, by name and raw value."""
    err = np.asarray(feature_error, dtype=np.float64)
    total = float(err.sum()) or 1.0
    order = np.argsort(-err, kind="stable")[:top]
    return [{"feature": names[i], "value": float(features[i]), "share": float(err[i] / total)} for i in order]


def score_records(
    windows: list[dict[str, Any]], result: BackendResult, history_lengths: list[int], explain_top: int
) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(Score, Anomaly or None) for each window, all of result.role, read with that role's model cards.
    models_fired and model_versions name the models (e.g. "autoencoder-dst"), so a verdict says whose it is."""
    ae_name, lstm_name = role_models(result.role)
    cards = result.cards
    ae_t, lstm_t = float(cards[ae_name]["threshold"]), float(cards[lstm_name]["threshold"])
    versions = {name: str(card["version"]) for name, card in cards.items()}
    names = cards[ae_name]["features"]
    now = time.time()
    out = []
    for i, w in enumerate(windows):
        ae, lstm = float(result.autoencoder_scores[i]), float(result.lstm_scores[i])
        fired = [m for m, s, t in ((ae_name, ae, ae_t), (lstm_name, lstm, lstm_t)) if s > t]
        score = {
            "window_id": w["window_id"],
            "host": w["host"],
            "role": w["role"],
            "window_start": w["window_start"],
            "window_end": w["window_end"],
            "final": w["final"],
            "flow_count": w["flow_count"],
            "first_flow_seen": w["first_flow_seen"],
            "autoencoder_score": ae,
            "autoencoder_threshold": ae_t,
            "lstm_score": lstm,
            "lstm_threshold": lstm_t,
            "history_length": history_lengths[i],
            "is_anomaly": bool(fired),
            "model_versions": versions,
            "scored_at": now,
            "emitted_at": w["emitted_at"],
            "malicious_flows": w["malicious_flows"],
            "labelled_flows": w["labelled_flows"],
            "attack_types": w["attack_types"],
        }
        anomaly = None
        if fired:
            ratio = max(ae / max(ae_t, 1e-12), lstm / max(lstm_t, 1e-12))
            anomaly = {
                "score": score,
                "models_fired": fired,
                "severity": severity(ratio, len(fired)),
                "explanation": explain(w["features"], result.autoencoder_feature_errors[i], names, explain_top),
            }
        out.append((score, anomaly))
    return out
