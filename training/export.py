"""Export a Detector as a TF SavedModel in TF-Serving layout, <out>/<name>/<version>/, with its model card.

<name> is the served name of the detector's kind for the role of the windows it was trained on
(services.scorer.backends.model_name: "autoencoder", "lstm-dst", ...); the card says kind and role.

The serving_default signature takes the RAW float32 input (`features` [None, F] or `sequence`
[None, K, F]) and returns {"score": [None], "feature_error": [None, F]}; normalisation is inside the
graph. Each version is written to a hidden temporary folder beside its final place and renamed into
it, so TF-Serving (which watches for integer-named folders) and the scorer never see half a model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tensorflow as tf

from services.scorer.backends import CARD_FILE, model_name, version_numbers
from training.features import FEATURE_NAMES, FEATURE_SET
from training.models import Detector

REPO_ROOT = Path(__file__).resolve().parents[1]


class ServingModule(tf.Module):
    """What the SavedModel holds: the Keras scoring model behind one signature with a named raw input."""

    def __init__(self, detector: Detector) -> None:
        super().__init__(name=detector.name)
        self.model = detector.score_model
        # The TensorSpec's name becomes the signature's input key ("features" / "sequence").
        spec = tf.TensorSpec((None, *detector.input_shape), tf.float32, name=detector.input_name)
        self.serve = tf.function(self._outputs, input_signature=[spec])

    def _outputs(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        out = self.model(x, training=False)
        return {"score": out["score"], "feature_error": out["feature_error"]}


def next_version(model_dir: Path) -> int:
    return max(version_numbers(model_dir), default=0) + 1


def code_version() -> str:
    """`git describe` of the repository the code runs from, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def model_card(detector: Detector, role: str, version: int, fields: dict[str, Any]) -> dict[str, Any]:
    """The card: identity and input contract here; threshold, data and metrics from the caller's `fields`."""
    return {
        "name": model_name(detector.name, role),
        "kind": detector.name,
        "role": role,
        "version": version,
        "feature_set": FEATURE_SET,
        "features": list(FEATURE_NAMES),
        "signature": {
            "name": "serving_default",
            "input": {"name": detector.input_name, "shape": [None, *detector.input_shape], "dtype": "float32"},
            "outputs": {"score": [None], "feature_error": [None, detector.input_shape[-1]]},
        },
        "normalisation": "z = (log1p(max(x, 0)) - mean) / std, in the graph; mean/std of benign training windows",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        **fields,
    }


def export_model(
    detector: Detector,
    out_dir: Path | str,
    card_fields: dict[str, Any],
    version: int | None = None,
    role: str = "src",
) -> Path:
    """Write <out_dir>/<name>/<version>/ (SavedModel + model_card.json) atomically; return that folder.

    `role`: whose windows the detector was trained on. `version` defaults to the next free integer; an
    existing version is never overwritten."""
    if detector.input_shape[-1] != len(FEATURE_NAMES):
        raise ValueError(f"{detector.name}: input has {detector.input_shape[-1]} features, not {len(FEATURE_NAMES)}")
    model_dir = Path(out_dir) / model_name(detector.name, role)
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir) if version is None else version
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists: choose another version")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
    try:
        module = ServingModule(detector)
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        card = model_card(detector, role, version, card_fields)
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it 0700; a TF-Serving container may run as another user
        tmp.rename(final)  # atomic on one filesystem; fails rather than merge if `final` appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
