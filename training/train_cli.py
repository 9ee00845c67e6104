"""`flowsentinel train`: windows from flow files -> benign-only autoencoder and LSTM per window role ->
SavedModels + cards.

Each role (training.features.ROLES: "src", the flows a host started; "dst", the flows it received) has
its own windows, so its own pair of models, exported under services.scorer.backends.model_name. Windows
and sequences are built per file (one capture each) and role by the same code the featurizer uses. A
window holding any malicious flow is never trained on; files without labels count as benign throughout.
Each file's benign windows are split in time: the last VALIDATION_SHARE of them (by window start) are
validation windows, used for early stopping and to set each model's threshold at the target
false-positive rate. The LSTM trains on sequences whose K windows are all benign.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.common.settings import Settings, load_settings
from services.scorer.backends import MODEL_NAMES, load_card, role_models
from training.datasets import Flow, load_flows
from training.export import export_model
from training.features import ROLES
from training.models import (
    BATCH_SIZE,
    LEARNING_RATE,
    STD_FLOOR,
    Detector,
    FitReport,
    build_autoencoder,
    build_lstm,
    detection_metrics,
    fit,
    fit_normalisation,
    roc_auc,
    threshold_at_fpr,
)
from training.sequences import host_sequences
from training.windows import build_windows

VALIDATION_SHARE = 0.2
DEFAULT_EPOCHS = 40
DEFAULT_FPR = 0.01
DEFAULT_SEED = 0


class TrainingDataError(ValueError):
    """The files give nothing to train or validate on."""


@dataclass(frozen=True)
class CaptureWindows:
    """One file's host windows of one role as model inputs, with what the labels say about each."""

    file: str
    features: np.ndarray  # (N, F)
    sequences: np.ndarray  # (N, K, F): each window's host history ending at it
    malicious: np.ndarray  # (N,) the window holds a malicious flow
    malicious_history: np.ndarray  # (N,) some window of its sequence holds one
    validation: np.ndarray  # (N,) among the file's chronologically last benign windows
    labelled: bool


@dataclass(frozen=True)
class ModelData:
    """One model's inputs: benign train / validation, and the training files' malicious windows."""

    train: np.ndarray
    validation: np.ndarray
    malicious: np.ndarray
    per_file: dict[str, dict[str, int]]


@dataclass
class TrainResult:
    detectors: dict[str, Detector]
    data: dict[str, ModelData]
    cards: dict[str, dict[str, Any]]
    paths: dict[str, Path]
    fits: dict[str, FitReport] = field(default_factory=dict)


def validation_mask(windows: Sequence[dict[str, Any]], benign: np.ndarray, share: float) -> np.ndarray:
    """The last `share` of the benign windows in time order (ties broken by host), as a mask."""
    idx = sorted(np.flatnonzero(benign), key=lambda i: (windows[i]["window_start"], windows[i]["host"]))
    mask = np.zeros(len(windows), dtype=bool)
    n_val = int(len(idx) * share)
    if n_val:
        mask[idx[-n_val:]] = True
    return mask


def history_flags(windows: Sequence[dict[str, Any]], flags: np.ndarray, k: int) -> np.ndarray:
    """For each window: is any window of its K-sequence flagged? Uses host_sequences itself on the flags,
    so the answer follows exactly the windows (and edge padding) of the model's input."""
    if not windows:
        return np.zeros(0, dtype=bool)
    marked = [{**w, "features": [float(f)]} for w, f in zip(windows, flags, strict=True)]
    return host_sequences(marked, k)[:, :, 0].max(axis=1) > 0


def capture_windows(
    path: Path, window_seconds: float, k: int, share: float = VALIDATION_SHARE, role: str = "src"
) -> CaptureWindows:
    flows, _ = load_flows([path])
    return role_windows(path.name, flows, window_seconds, k, share, role)


def role_windows(
    file: str, flows: Sequence[Flow], window_seconds: float, k: int, share: float, role: str
) -> CaptureWindows:
    """One file's windows in one role, from its flows (read once for every role)."""
    windows = build_windows(flows, window_seconds, role)
    malicious = np.array([w["malicious_flows"] > 0 for w in windows], dtype=bool)
    return CaptureWindows(
        file=file,
        features=np.asarray([w["features"] for w in windows], dtype=np.float32).reshape(len(windows), -1),
        sequences=host_sequences(windows, k),
        malicious=malicious,
        malicious_history=history_flags(windows, malicious, k),
        validation=validation_mask(windows, ~malicious, share),
        labelled=any(w["labelled_flows"] for w in windows),
    )


def model_data(captures: Sequence[CaptureWindows], sequences: bool, role: str) -> ModelData:
    """The autoencoder's (sequences=False) or the LSTM's (sequences=True) inputs over all files, in one role."""
    train, val, mal, per_file = [], [], [], {}
    for c in captures:
        x = c.sequences if sequences else c.features
        benign = ~(c.malicious_history if sequences else c.malicious)
        t, v = benign & ~c.validation, benign & c.validation
        train.append(x[t])
        val.append(x[v])
        mal.append(x[c.malicious])
        per_file[c.file] = {
            "windows": len(x),
            "benign_train": int(t.sum()),
            "benign_validation": int(v.sum()),
            "malicious": int(c.malicious.sum()),
        }
    data = ModelData(np.concatenate(train), np.concatenate(val), np.concatenate(mal), per_file)
    kind = "benign sequences (all K windows benign)" if sequences else "benign windows"
    if len(data.train) == 0 or len(data.validation) == 0:
        raise TrainingDataError(
            f"not enough {kind} to train and validate the {role} models on: {len(data.train)} for training, "
            f"{len(data.validation)} for validation, per file {per_file}"
        )
    return data


def validation_report(detector: Detector, data: ModelData, threshold: float, val_scores: np.ndarray) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benign_windows": len(data.validation),
        "benign_fpr_at_threshold": float(np.mean(val_scores > threshold)),
        "in_sample_malicious": None,
    }
    if len(data.malicious):
        mal_scores, _ = detector.score(data.malicious)
        m = detection_metrics(val_scores, mal_scores, threshold)
        report["in_sample_malicious"] = {
            "note": "IN-SAMPLE: malicious windows of the training files (never fitted on, but same captures and "
            "hosts as the training data) against the benign validation windows; not a test result",
            "malicious_windows": len(mal_scores),
            "roc_auc": roc_auc(val_scores, mal_scores),
            "recall_at_threshold": m["recall"],
            "precision_at_threshold": m["precision"],
        }
    return report


def card_fields(
    kind: str,
    data: ModelData,
    captures: Sequence[CaptureWindows],
    report: FitReport,
    threshold: float,
    validation: dict[str, Any],
    settings: Settings,
    fpr: float,
    epochs: int,
    seed: int,
) -> dict[str, Any]:
    """What the model card says about training: threshold, data, split, fit and validation metrics."""
    split = (
        f"per file, chronological: the last {VALIDATION_SHARE:.0%} of its benign windows (by window start) "
        "validate (early stopping, threshold); windows with a malicious flow are never trained on"
    )
    if kind == "lstm":
        split += "; the LSTM uses only sequences whose K windows are all benign"
    return {
        "threshold": threshold,
        "target_fpr": fpr,
        "window_seconds": settings.window_seconds,
        **({"history_windows": settings.history_windows} if kind == "lstm" else {}),
        "seed": seed,
        "training": {
            "epochs_max": epochs,
            "epochs_run": report.epochs_run,
            "best_epoch": report.best_epoch,
            "best_val_loss": report.best_val_loss,
            "batch_size": BATCH_SIZE,
            "learning_rate": LEARNING_RATE,
            "std_floor": STD_FLOOR,
        },
        "training_data": {
            "files": [c.file for c in captures],
            "labelled": any(c.labelled for c in captures),
            "benign_windows_train": len(data.train),
            "benign_windows_validation": len(data.validation),
            "per_file": data.per_file,
            "split": split,
        },
        "validation": validation,
    }


def role_models_to_train(
    role: str, captures: Sequence[CaptureWindows], settings: Settings, seed: int
) -> tuple[dict[str, ModelData], dict[str, Detector]]:
    """One role's (data, untrained detector) per model name. One normalisation for both models of the role:
    the statistics of its benign training windows."""
    autoencoder, lstm = role_models(role)
    data = {autoencoder: model_data(captures, False, role), lstm: model_data(captures, True, role)}
    norm = fit_normalisation(data[autoencoder].train)
    detectors = {
        autoencoder: build_autoencoder(norm, seed),
        lstm: build_lstm(norm, settings.history_windows, seed),
    }
    return data, detectors


def train_and_export(
    files: Sequence[Path | str],
    out_dir: Path | str,
    settings: Settings,
    *,
    fpr: float = DEFAULT_FPR,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = DEFAULT_SEED,
    version: int | None = None,
    console: Console | None = None,
) -> TrainResult:
    """Train each role's two models on the benign windows of `files`, set thresholds, export them to
    <out_dir>/<name>/<version>/."""
    if version is not None:  # checked first: a taken version found after training would waste it, or half-export
        taken = [name for name in MODEL_NAMES if (Path(out_dir) / name / str(version)).exists()]
        if taken:
            raise FileExistsError(f"version {version} of {', '.join(taken)} already exists in {out_dir}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    result = TrainResult(detectors={}, data={}, cards={}, paths={})
    with Progress(*columns, console=console or Console()) as progress:
        reading = progress.add_task("reading flow files", total=len(files))
        captures: dict[str, list[CaptureWindows]] = {role: [] for role in ROLES}
        for f in files:
            flows, _ = load_flows([Path(f)])
            for role in ROLES:
                windows = role_windows(
                    Path(f).name, flows, settings.window_seconds, settings.history_windows, VALIDATION_SHARE, role
                )
                captures[role].append(windows)
            progress.advance(reading)
        # Every role's data is checked before any model trains: a role without enough windows must not leave
        # the other role's models exported alone.
        planned = {role: role_models_to_train(role, captures[role], settings, seed) for role in ROLES}
        for role, (data, detectors) in planned.items():
            result.data.update(data)
            result.detectors.update(detectors)
            for name, detector in detectors.items():
                what = f"training {name} on {role} windows"
                task = progress.add_task(what, total=epochs)

                def on_epoch(epoch: int, logs: dict[str, float], task: Any = task, what: str = what) -> None:
                    desc = f"{what} (val loss {logs.get('val_loss', float('nan')):.4f})"
                    progress.update(task, completed=epoch + 1, description=desc)

                d = data[name]
                report = result.fits[name] = fit(detector, d.train, d.validation, epochs, seed, on_epoch)
                progress.update(task, total=report.epochs_run)  # early stopping: the bar ends where training did
                val_scores, _ = detector.score(d.validation)
                threshold = threshold_at_fpr(val_scores, fpr)
                validation = validation_report(detector, d, threshold, val_scores)
                fields = card_fields(
                    detector.name, d, captures[role], report, threshold, validation, settings, fpr, epochs, seed
                )
                result.paths[name] = export_model(detector, out_dir, fields, version, role)
                result.cards[name] = load_card(result.paths[name])
    return result


def summary(result: TrainResult) -> Table:
    t = Table(title="flowsentinel train: summary")
    for col in (
        "model",
        "role",
        "benign windows\ntrain / val",
        "epochs\n(best)",
        "threshold",
        "val FPR",
        "in-sample\nAUC / recall",
    ):
        t.add_column(col, justify="left" if col in ("model", "role") else "right", no_wrap=col == "model")
    for name, card in result.cards.items():
        data, val = card["training_data"], card["validation"]
        mal = val["in_sample_malicious"]
        t.add_row(
            f"{name} v{card['version']}",
            card["role"],
            f"{data['benign_windows_train']} / {data['benign_windows_validation']}",
            f"{card['training']['epochs_run']} ({card['training']['best_epoch']})",
            f"{card['threshold']:.4g}",
            f"{val['benign_fpr_at_threshold']:.3f}",
            f"{mal['roc_auc']:.3f} / {mal['recall_at_threshold']:.3f}" if mal else "-",
        )
    return t


def _fpr(value: str) -> float:
    f = float(value)
    if not 0.0 < f < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return f


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return n


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings with --window-seconds and --history applied where given (train and compare share them)."""
    overrides: dict[str, Any] = {}
    if args.window_seconds is not None:
        overrides["window_seconds"] = args.window_seconds
    if args.history is not None:
        overrides["history_windows"] = args.history
    return load_settings(**overrides)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", type=Path, required=True, metavar="FILE", help="flow files (Zeek conn logs)")
    p.add_argument("--out", type=Path, default=None, help="models folder (TF-Serving layout); default from settings")
    p.add_argument("--window-seconds", type=float, default=None, help="window length; default from settings")
    p.add_argument("--history", type=_positive_int, default=None, help="K windows per LSTM sequence; default settings")
    p.add_argument("--fpr", type=_fpr, default=DEFAULT_FPR, help="target false-positive rate on benign validation")
    p.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS, help="max epochs (early stopping)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    p.add_argument("--version", type=_positive_int, default=None, help="model version; default: next free integer")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        settings = settings_from_args(args)
        result = train_and_export(
            args.data,
            args.out or settings.models_dir,
            settings,
            fpr=args.fpr,
            epochs=args.epochs,
            seed=args.seed,
            version=args.version,
            console=console,
        )
    except (OSError, ValueError) as exc:  # unreadable/unknown files, no benign windows, taken version, bad setting
        Console(stderr=True).print(f"[red]train failed:[/] {exc}", soft_wrap=True)  # soft_wrap: paths stay whole
        return 2
    console.print(summary(result))
    console.print("role src: windows of the flows a host started; dst: windows of the flows it received")
    for name, path in result.paths.items():
        console.print(f"{name}: {path}")
    if any(card["validation"]["in_sample_malicious"] for card in result.cards.values()):
        console.print("in-sample: malicious windows of the training files, not a test result")
    return 0
