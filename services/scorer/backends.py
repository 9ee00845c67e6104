"""Model backends of the scorer: numpy in, numpy out, plus the model cards that say how to read it.

`ModelBackend` is transport-neutral so that the in-process SavedModel backend here and the TF-Serving
gRPC/REST backends (services.scorer.tfserving) are interchangeable: all call the `serving_default`
signature of the same exported models (models/<name>/<version>/, written by `flowsentinel train`) and
return a BackendResult. Each window role has its own pair of models (`model_name`): a batch is scored
one role at a time, and a role whose models are not there raises ModelsNotFoundError for that role
only. The model card always comes from the version folder of the models that made the scores, so
threshold, features and version travel together whichever backend scored.
Reading that layout (versions, cards) lives here and needs no TensorFlow, so a tool that only asks
"is a model exported?" stays light; training.export writes the layout with the same names.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from training.features import FEATURE_NAMES, FEATURE_SET, ROLES

MODEL_KINDS = ("autoencoder", "lstm")
CARD_FILE = "model_card.json"
# Rows per signature call: bounds the memory of one call whatever the scorer's batch size.
CALL_BATCH = 4096

log = logging.getLogger(__name__)


def model_name(kind: str, role: str) -> str:
    """The served name of a role's model: the src models keep the names they always had ("autoencoder",
    "lstm", as deploy configs and dashboards know them); another role's are "<kind>-<role>"."""
    return kind if role == "src" else f"{kind}-{role}"


def role_models(role: str) -> tuple[str, str]:
    """(autoencoder name, LSTM name) of one role."""
    autoencoder, lstm = (model_name(kind, role) for kind in MODEL_KINDS)
    return autoencoder, lstm


MODEL_NAMES = tuple(name for role in ROLES for name in role_models(role))
MODEL_ROLES = {name: role for role in ROLES for name in role_models(role)}  # model name -> the role it scores


class ModelsNotFoundError(FileNotFoundError):
    """No exported (or served) model, or no card, where the scorer looks for one."""


@dataclass(frozen=True)
class BackendResult:
    role: str  # whose models scored: cards and versions are of role_models(role)
    autoencoder_scores: np.ndarray  # (N,)
    autoencoder_feature_errors: np.ndarray  # (N, F)
    lstm_scores: np.ndarray  # (N,)
    lstm_feature_errors: np.ndarray  # (N, F): of the last window of each sequence
    cards: dict[str, dict[str, Any]]  # model name -> model card (threshold, features, version, ...)
    versions: dict[str, int]


class ModelBackend(Protocol):
    name: str  # "inprocess", "grpc", "rest": the label of its metrics

    def score(self, windows_features: np.ndarray, sequences: np.ndarray, role: str = "src") -> BackendResult:
        """Score N window vectors (N, F) of one role with its autoencoder and their sequences (N, K, F) with its
        LSTM. Raises ModelsNotFoundError when that role's models are not exported (or not served)."""
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


def versioned_card(models_dir: Path, name: str, version: int) -> dict[str, Any]:
    """The checked card of <models_dir>/<name>/<version>/, which must say it is that version."""
    path = models_dir / name / str(version)
    card = load_card(path)
    check_card(card, path)
    if int(card.get("version", -1)) != version:
        raise ValueError(f"{path}: its model card says version {card.get('version')!r}")
    # Cards written before windows had roles carry none: those models were trained on src windows.
    if card.get("role", "src") != MODEL_ROLES[name]:
        raise ValueError(
            f"{path}: its model card says it was trained on {card.get('role', 'src')} windows, but {name} scores "
            f"{MODEL_ROLES[name]} windows"
        )
    return card


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


def check_inputs(
    windows_features: np.ndarray, sequences: np.ndarray, cards: dict[str, dict[str, Any]], role: str
) -> None:
    for name, x in zip(role_models(role), (windows_features, sequences), strict=True):
        if x.ndim < 1 or tuple(x.shape[1:]) != expected_shape(cards[name]):
            raise ValueError(
                f"{name}: input shape {x.shape} does not match the model's [N, *{expected_shape(cards[name])}]"
            )
    if len(windows_features) != len(sequences):
        raise ValueError(f"{len(windows_features)} window vectors but {len(sequences)} sequences")


@dataclass(frozen=True)
class LoadedModel:
    version: int
    card: dict[str, Any]
    signature: Any  # the serving_default concrete function
    saved_model: Any  # keeps the SavedModel alive: its signature does not own the variables


class InProcessBackend:
    """The latest exported version of each model, loaded with tf.saved_model.load into this process.

    Every model exported at start is loaded (a bad one stops the start); at least one must be. A role
    whose models are missing is not scored (ModelsNotFoundError) until they appear. With `poll_s`, a
    daemon thread looks at the folder listing every `poll_s` seconds and swaps in a new latest version
    (or a model exported since) once it is fully loaded and its card checked; a batch uses the models it
    started with. A version that fails to load is logged and skipped until the listing changes; the old
    one keeps serving."""

    name = "inprocess"

    def __init__(self, models_dir: Path | str, poll_s: float | None = None) -> None:
        self.models_dir = Path(models_dir)
        self._models: dict[str, LoadedModel] = {}
        self._rejected: dict[str, int] = {}  # model -> latest version that failed to load
        for name in MODEL_NAMES:
            version = latest_version(self.models_dir, name)
            if version is not None:
                self._models[name] = self._load(name, version)
        if not self._models:
            raise ModelsNotFoundError(
                f"no exported model in {self.models_dir}/ (expected {self.models_dir}/<name>/<version>/ for "
                f"{', '.join(MODEL_NAMES)}): run `flowsentinel train` first"
            )
        self._stop = threading.Event()
        if poll_s:
            threading.Thread(target=self._watch, args=(poll_s,), name="model-watch", daemon=True).start()

    @property
    def cards(self) -> dict[str, dict[str, Any]]:
        return {name: m.card for name, m in self._models.items()}

    @property
    def versions(self) -> dict[str, int]:
        return {name: m.version for name, m in self._models.items()}

    def _load(self, name: str, version: int) -> LoadedModel:
        import tensorflow as tf  # here, not at import: the Protocol and helpers must not pay for TensorFlow

        card = versioned_card(self.models_dir, name, version)
        saved = tf.saved_model.load(str(self.models_dir / name / str(version)))
        return LoadedModel(version, card, saved.signatures["serving_default"], saved)

    def refresh(self) -> list[str]:
        """Swap in each model's latest version if it changed or first appeared; return the names swapped in."""
        swapped = []
        for name in MODEL_NAMES:
            current = self._models.get(name)
            version = latest_version(self.models_dir, name)
            if version is None or self._rejected.get(name) == version or (current and version == current.version):
                continue
            was = f"version {current.version}" if current else "none"
            try:
                loaded = self._load(name, version)
            except Exception as exc:  # any failure: a bad new version must not stop scoring with the old one
                self._rejected[name] = version
                log.error("%s version %d not loaded, still serving %s: %s", name, version, was, exc)
                continue
            self._models = {**self._models, name: loaded}  # one assignment: a running batch keeps its dict
            log.info("%s: now serving version %d (was %s)", name, version, was)
            swapped.append(name)
        return swapped

    def _watch(self, poll_s: float) -> None:
        while not self._stop.wait(poll_s):
            self.refresh()

    def close(self) -> None:
        self._stop.set()

    @staticmethod
    def _call(model: LoadedModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, feature errors) in CALL_BATCH chunks; N = 0 needs no call at all."""
        if len(x) == 0:
            n_features = len(model.card["features"])
            return np.zeros(0, dtype=np.float32), np.zeros((0, n_features), dtype=np.float32)
        key = model.card["signature"]["input"]["name"]
        scores, errors = [], []
        for start in range(0, len(x), CALL_BATCH):
            out = model.signature(**{key: np.ascontiguousarray(x[start : start + CALL_BATCH], dtype=np.float32)})
            scores.append(out["score"].numpy())
            errors.append(out["feature_error"].numpy())
        return np.concatenate(scores), np.concatenate(errors)

    def score(self, windows_features: np.ndarray, sequences: np.ndarray, role: str = "src") -> BackendResult:
        loaded = self._models  # the same versions for the whole batch, even if a swap happens meanwhile
        names = role_models(role)
        missing = [name for name in names if name not in loaded]
        if missing:
            raise ModelsNotFoundError(
                f"no {' or '.join(missing)} model exported in {self.models_dir}/: `flowsentinel train` exports "
                "the models of every role"
            )
        models = {name: loaded[name] for name in names}
        cards = {name: m.card for name, m in models.items()}
        windows_features = np.asarray(windows_features, dtype=np.float32)
        sequences = np.asarray(sequences, dtype=np.float32)
        check_inputs(windows_features, sequences, cards, role)
        ae_scores, ae_errors = self._call(models[names[0]], windows_features)
        lstm_scores, lstm_errors = self._call(models[names[1]], sequences)
        versions = {name: m.version for name, m in models.items()}
        return BackendResult(role, ae_scores, ae_errors, lstm_scores, lstm_errors, cards, versions)
