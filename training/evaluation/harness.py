"""Runs detectors on folds: fit on the training part, threshold on its benign validation windows (or the
detector's own), score the held-out part; collects flow- and window-level metrics, per-attack recall,
attack episodes, the ensembles' per-seed spread and feature importance. Pure computation: no files."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.detectors import DetectorConfig, WindowDetector, create
from training.detectors.base import WindowData
from training.detectors.neural import NeuralEnsemble
from training.evaluation import importance
from training.evaluation.data import Fold
from training.evaluation.metrics import (
    binary_metrics,
    episodes,
    flow_metrics,
    flow_view,
    per_attack,
    summarise_episodes,
    window_metrics,
)
from training.models import threshold_at_fpr

# Permutation importance costs a scoring pass per feature and repeat: run for these detectors only.
IMPORTANCE_DETECTORS = ("autoencoder", "random_forest")

Progress = Callable[[str], None]


@dataclass
class Outcome:
    """One detector on one fold: its threshold, its held-out scores and what they give."""

    detector: str
    fold: str
    threshold: float
    scores: np.ndarray  # (N,) test windows
    flagged: np.ndarray
    window: dict[str, Any]
    flow: dict[str, Any]
    per_attack: dict[str, dict[str, float]]
    episodes: list[dict[str, Any]]
    members: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> threshold + flow metrics
    seconds: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class FoldResult:
    fold: Fold
    outcomes: dict[str, Outcome]
    selection: dict[str, Any]
    permutation: dict[str, dict[str, float]]
    reconstruction: dict[str, float] | None


def threshold_of(detector: WindowDetector, validation: WindowData, fpr: float) -> float:
    if detector.fixed_threshold is not None:
        return float(detector.fixed_threshold)
    return threshold_at_fpr(detector.score(validation), fpr)


def evaluate_detector(
    detector: WindowDetector,
    fold_name: str,
    test: WindowData,
    threshold: float,
    validation: WindowData | None,
    fpr: float,
) -> Outcome:
    """Score the held-out windows at `threshold` (and each ensemble member at its own, when validation data
    is given to set them on)."""
    t0 = time.monotonic()
    scores = detector.score(test)
    seconds = {"score": time.monotonic() - t0}
    flagged = scores > threshold
    view = flow_view(test)
    members = {}
    if validation is not None:
        val_members = detector.member_scores(validation)
        for seed, test_scores in detector.member_scores(test).items():
            t = threshold_at_fpr(val_members[seed], fpr)
            members[seed] = {"threshold": t, "flow": flow_metrics(view, test_scores, test_scores > t)}
    return Outcome(
        detector=detector.name,
        fold=fold_name,
        threshold=threshold,
        scores=scores,
        flagged=flagged,
        window=window_metrics(test, scores, flagged),
        flow=flow_metrics(view, scores, flagged),
        per_attack=per_attack(view, flagged),
        episodes=episodes(test, view, flagged, fold_name),
        members=members,
        seconds=seconds,
        params=detector.params(),
    )


def run_fold(fold: Fold, names: Sequence[str], config: DetectorConfig, fpr: float, progress: Progress) -> FoldResult:
    if fold.train is None:
        raise ValueError(f"fold {fold.name} has no training windows")
    validation = fold.train.subset(fold.validation)
    outcomes: dict[str, Outcome] = {}
    permutation: dict[str, dict[str, float]] = {}
    reconstruction = None
    for name in names:
        progress(f"{fold.name}: {name}")
        detector = create(name, config)
        keep = ~fold.validation if detector.supervised else ~fold.validation & ~fold.train.malicious
        t0 = time.monotonic()
        detector.fit(fold.train.subset(keep), validation)
        fit_s = time.monotonic() - t0
        outcome = evaluate_detector(
            detector, fold.name, fold.test, threshold_of(detector, validation, fpr), validation, fpr
        )
        outcome.seconds["fit"] = fit_s
        outcomes[name] = outcome
        if name in IMPORTANCE_DETECTORS:
            progress(f"{fold.name}: {name} permutation importance")
            found = importance.permutation_importance(detector, fold.test, config.seeds[0])
            if found is not None:
                permutation[name] = found
        if isinstance(detector, NeuralEnsemble) and not detector.uses_sequences:
            reconstruction = importance.reconstruction_error_ratio(detector.feature_errors(fold.test), fold.test)
    selection = importance.select_features(fold.train.subset(~fold.validation), config.seeds[0])
    return FoldResult(fold, outcomes, selection, permutation, reconstruction)


@dataclass
class Pooled:
    """One detector over all folds: every held-out flow and window once (each capture is tested once)."""

    detector: str
    flow: dict[str, Any]
    window: dict[str, Any]
    per_attack: dict[str, dict[str, float]]
    episodes: list[dict[str, Any]]
    episode_summary: dict[str, Any]
    flow_y: np.ndarray
    flow_margin: np.ndarray  # score - fold threshold: comparable across folds, > 0 is an alert
    seed_spread: dict[str, Any] | None
    thresholds: list[float]


def pool(results: Sequence[FoldResult], name: str) -> Pooled:
    ys, margins, flags, wy, wm, wf, attacks, eps = [], [], [], [], [], [], {}, []
    members: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        o = r.outcomes[name]
        view = flow_view(r.fold.test)
        margin = o.scores - o.threshold
        ys.append(view.malicious)
        margins.append(margin[view.window])
        flags.append(o.flagged[view.window])
        keep = r.fold.test.labelled
        wy.append(r.fold.test.malicious[keep])
        wm.append(margin[keep])
        wf.append(o.flagged[keep])
        for attack in sorted(set(view.attack_type[view.malicious].tolist())):
            sel = view.malicious & (view.attack_type == attack)
            a = attacks.setdefault(attack or "(unnamed)", [0, 0])
            a[0] += int(sel.sum())
            a[1] += int(o.flagged[view.window[sel]].sum())
        eps.extend(o.episodes)
        for seed, m in o.members.items():
            members.setdefault(seed, []).append({"threshold": m["threshold"], **_counts(m["flow"])})
    y, margin, flagged = np.concatenate(ys), np.concatenate(margins), np.concatenate(flags)
    return Pooled(
        detector=name,
        flow=binary_metrics(y, flagged, margin),
        window=binary_metrics(np.concatenate(wy), np.concatenate(wf), np.concatenate(wm)),
        per_attack={k: {"flows": v[0], "recall": v[1] / v[0] if v[0] else 0.0} for k, v in sorted(attacks.items())},
        episodes=eps,
        episode_summary=summarise_episodes(eps),
        flow_y=y,
        flow_margin=margin,
        seed_spread=_spread(members) if members else None,
        thresholds=[r.outcomes[name].threshold for r in results],
    )


def _counts(m: dict[str, Any]) -> dict[str, int]:
    return {k: m[k] for k in ("tp", "fp", "fn", "tn")}


def _spread(members: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each seed's own model at its own threshold, pooled over folds: F1, recall and FPR, min / max."""
    per_seed = {}
    for seed, folds in members.items():
        tp, fp, fn, tn = (sum(f[k] for f in folds) for k in ("tp", "fp", "fn", "tn"))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        per_seed[seed] = {
            "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "recall": r,
            "precision": p,
            "fpr": fp / (fp + tn) if fp + tn else 0.0,
            "thresholds": [f["threshold"] for f in folds],
        }
    summary = {
        k: {"min": min(s[k] for s in per_seed.values()), "max": max(s[k] for s in per_seed.values())}
        for k in ("f1", "recall", "precision", "fpr")
    }
    return {"per_seed": per_seed, "range": summary}
