"""Training and export of the autoencoder and LSTM of each window role on real IoT-23 windows, and the
scorer's in-process backend.

Tiny models (few epochs) are trained once per module on the benign windows of the honeypot captures and
42-1, in both roles; CTU-Malware-Capture-34-1 (Mirai) is never trained on and must score higher where it
is malicious.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from rich.console import Console

from services.cli import main as cli_main
from services.common.settings import Settings
from services.scorer.backends import (
    MODEL_NAMES,
    InProcessBackend,
    ModelsNotFoundError,
    latest_version,
    load_card,
    model_name,
)
from tests.paths import SAMPLE
from training.datasets import load_flows
from training.export import export_model
from training.features import FEATURE_NAMES, FEATURE_SET, ROLES
from training.models import build_autoencoder, build_lstm, roc_auc
from training.train_cli import CaptureWindows, TrainResult, capture_windows, train_and_export, validation_mask
from training.windows import build_windows

K = 8
EPOCHS = 8
FPR = 0.01
TRAIN_FILES = [
    SAMPLE / f"CTU-{c}-labeled.csv.gz"
    for c in ("Honeypot-Capture-4-1", "Honeypot-Capture-5-1", "Honeypot-Capture-7-1", "Malware-Capture-42-1")
]
MIRAI = SAMPLE / "CTU-Malware-Capture-34-1-labeled.csv.gz"
SETTINGS = Settings(window_seconds=60.0, history_windows=K)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def trained(models_dir: Path) -> TrainResult:
    quiet = Console(file=io.StringIO())
    return train_and_export(TRAIN_FILES, models_dir, SETTINGS, fpr=FPR, epochs=EPOCHS, seed=7, console=quiet)


@pytest.fixture(scope="module")
def mirai() -> CaptureWindows:
    return capture_windows(MIRAI, SETTINGS.window_seconds, K)


@pytest.fixture(scope="module")
def mirai_dst() -> CaptureWindows:
    return capture_windows(MIRAI, SETTINGS.window_seconds, K, role="dst")


def model_inputs(name: str, capture: CaptureWindows) -> np.ndarray:
    return capture.sequences if name.startswith("lstm") else capture.features


def test_model_names_keep_the_src_names_and_tell_the_role() -> None:
    assert [model_name(kind, "src") for kind in ("autoencoder", "lstm")] == ["autoencoder", "lstm"]
    assert [model_name(kind, "dst") for kind in ("autoencoder", "lstm")] == ["autoencoder-dst", "lstm-dst"]
    assert MODEL_NAMES == ("autoencoder", "lstm", "autoencoder-dst", "lstm-dst") and ROLES == ("src", "dst")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_saved_model_gives_the_keras_scores(
    trained: TrainResult, mirai: CaptureWindows, mirai_dst: CaptureWindows, name: str
) -> None:
    detector = trained.detectors[name]
    x = model_inputs(name, mirai_dst if name.endswith("-dst") else mirai)
    keras_scores, keras_errors = detector.score(x)
    serving = tf.saved_model.load(str(trained.paths[name])).signatures["serving_default"]
    out = serving(**{detector.input_name: tf.constant(x)})
    assert out["score"].shape == (len(x),) and out["feature_error"].shape == (len(x), len(FEATURE_NAMES))
    np.testing.assert_allclose(out["score"].numpy(), keras_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["feature_error"].numpy(), keras_errors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras_errors.mean(axis=1), keras_scores, rtol=1e-5)


@pytest.mark.parametrize(("name", "input_name"), [("autoencoder", "features"), ("lstm", "sequence")])
def test_saved_model_cli_shows_serving_default(trained: TrainResult, name: str, input_name: str) -> None:
    cli = Path(sys.executable).parent / "saved_model_cli"
    shown = subprocess.run(
        [str(cli), "show", "--dir", str(trained.paths[name]), "--all"], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert "signature_def['serving_default']" in shown.stdout
    for expected in (f"inputs['{input_name}']", "outputs['score']", "outputs['feature_error']"):
        assert expected in shown.stdout


def test_tf_serving_layout_and_model_cards(trained: TrainResult, models_dir: Path) -> None:
    assert sorted(p.name for p in models_dir.iterdir()) == sorted(MODEL_NAMES)
    for role in ROLES:
        for kind in ("autoencoder", "lstm"):
            card = load_card(trained.paths[model_name(kind, role)])
            assert (card["name"], card["kind"], card["role"]) == (model_name(kind, role), kind, role)
    for name in MODEL_NAMES:
        path = trained.paths[name]
        assert path.parent == models_dir / name and path.name.isdigit()
        assert (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
        card = load_card(path)
        assert card["name"] == name and card["version"] == int(path.name) == latest_version(models_dir, name)
        assert card["feature_set"] == FEATURE_SET and card["features"] == FEATURE_NAMES
        assert card["window_seconds"] == 60.0 and card["target_fpr"] == FPR and card["seed"] == 7
        assert card["threshold"] > 0 and card["created"] and card["code_version"]
        data = card["training_data"]
        assert data["files"] == [f.name for f in TRAIN_FILES] and data["labelled"] is True
        assert data["benign_windows_train"] > 500 and data["benign_windows_validation"] > 100
        val = card["validation"]
        assert val["benign_fpr_at_threshold"] <= FPR
        # 42-1 has malicious windows: reported, and marked as in-sample
        assert val["in_sample_malicious"]["malicious_windows"] > 0
        assert "IN-SAMPLE" in val["in_sample_malicious"]["note"]
        assert 0.0 <= val["in_sample_malicious"]["roc_auc"] <= 1.0
    for role in ROLES:
        assert load_card(trained.paths[model_name("lstm", role)])["history_windows"] == K
        assert "history_windows" not in load_card(trained.paths[model_name("autoencoder", role)])


def test_dst_models_learn_the_dst_windows(trained: TrainResult) -> None:
    """Each role's models are trained on that role's windows of the same files, with their own normalisation."""
    for path in TRAIN_FILES:
        flows, _ = load_flows([path])
        for role in ROLES:
            windows = build_windows(flows, SETTINGS.window_seconds, role)
            for kind in ("autoencoder", "lstm"):
                assert trained.data[model_name(kind, role)].per_file[path.name]["windows"] == len(windows)
    # The roles see different hosts in different numbers (a honeypot receives from many, starts few).
    assert len(trained.data["autoencoder"].train) != len(trained.data["autoencoder-dst"].train)
    src_norm, dst_norm = trained.detectors["autoencoder"].norm, trained.detectors["autoencoder-dst"].norm
    assert not np.allclose(src_norm.mean, dst_norm.mean)
    assert trained.detectors["lstm-dst"].norm is dst_norm  # one normalisation for both models of a role


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_threshold_gives_the_target_fpr_on_benign_validation(trained: TrainResult, name: str) -> None:
    validation = trained.data[name].validation
    scores, _ = trained.detectors[name].score(validation)
    fpr = float(np.mean(scores > trained.cards[name]["threshold"]))
    # The (1 - FPR) quantile of n scores leaves floor(FPR * (n - 1)) of them above it: within 1/n of FPR.
    assert fpr <= FPR and FPR - fpr <= 1.0 / len(validation)


def test_validation_windows_are_each_files_latest_benign_ones(trained: TrainResult) -> None:
    for path in TRAIN_FILES:
        flows, _ = load_flows([path])
        windows = build_windows(flows, SETTINGS.window_seconds)
        benign = np.array([w["malicious_flows"] == 0 for w in windows])
        val = validation_mask(windows, benign, 0.2)
        starts = np.array([w["window_start"] for w in windows])
        assert val.sum() == int(benign.sum() * 0.2) > 0 and not (val & ~benign).any()
        assert starts[benign & ~val].max() <= starts[val].min()
        per_file = trained.data["autoencoder"].per_file[path.name]
        assert (per_file["benign_train"], per_file["benign_validation"]) == ((benign & ~val).sum(), val.sum())


@pytest.mark.parametrize("name", ["autoencoder", "lstm"])
def test_mirai_malicious_windows_score_above_benign(trained: TrainResult, mirai: CaptureWindows, name: str) -> None:
    scores, _ = trained.detectors[name].score(model_inputs(name, mirai))
    malicious, benign = scores[mirai.malicious], scores[~mirai.malicious]
    assert len(malicious) > 100 and len(benign) > 100
    assert malicious.mean() > benign.mean()
    assert roc_auc(benign, malicious) > 0.8  # and ranks them well, not only on average


def test_in_process_backend_scores_n_windows_and_none(
    trained: TrainResult, mirai: CaptureWindows, models_dir: Path
) -> None:
    backend = InProcessBackend(models_dir)
    n = 50
    result = backend.score(mirai.features[:n], mirai.sequences[:n])
    assert result.autoencoder_scores.shape == result.lstm_scores.shape == (n,)
    assert result.autoencoder_feature_errors.shape == result.lstm_feature_errors.shape == (n, len(FEATURE_NAMES))
    np.testing.assert_allclose(
        result.autoencoder_scores, trained.detectors["autoencoder"].score(mirai.features[:n])[0], rtol=1e-5
    )
    np.testing.assert_allclose(result.lstm_scores, trained.detectors["lstm"].score(mirai.sequences[:n])[0], rtol=1e-5)
    assert result.versions == {name: trained.cards[name]["version"] for name in ("autoencoder", "lstm")}
    assert result.cards["autoencoder"]["threshold"] == trained.cards["autoencoder"]["threshold"]
    assert result.role == "src"

    empty = backend.score(np.zeros((0, len(FEATURE_NAMES))), np.zeros((0, K, len(FEATURE_NAMES))))
    assert empty.autoencoder_scores.shape == empty.lstm_scores.shape == (0,)
    assert empty.autoencoder_feature_errors.shape == empty.lstm_feature_errors.shape == (0, len(FEATURE_NAMES))

    with pytest.raises(ValueError, match="lstm: input shape"):
        backend.score(mirai.features[:n], mirai.sequences[:n, :4])
    with pytest.raises(ValueError, match="window vectors but"):
        backend.score(mirai.features[:n], mirai.sequences[: n - 1])


def test_in_process_backend_scores_dst_windows_with_the_dst_models(
    trained: TrainResult, mirai_dst: CaptureWindows, models_dir: Path
) -> None:
    x, seq = mirai_dst.features[:50], mirai_dst.sequences[:50]
    result = InProcessBackend(models_dir).score(x, seq, "dst")
    assert result.role == "dst" and set(result.cards) == set(result.versions) == {"autoencoder-dst", "lstm-dst"}
    assert result.cards["lstm-dst"]["threshold"] == trained.cards["lstm-dst"]["threshold"]
    np.testing.assert_allclose(result.autoencoder_scores, trained.detectors["autoencoder-dst"].score(x)[0], rtol=1e-5)
    np.testing.assert_allclose(result.lstm_scores, trained.detectors["lstm-dst"].score(seq)[0], rtol=1e-5)
    # ...and not what the src models make of the same windows
    assert not np.allclose(result.autoencoder_scores, trained.detectors["autoencoder"].score(x)[0], rtol=1e-3)
    assert not np.allclose(result.lstm_scores, trained.detectors["lstm"].score(seq)[0], rtol=1e-3)


def test_a_seed_fixes_the_initial_weights(trained: TrainResult) -> None:
    norm = trained.detectors["autoencoder"].norm
    for build in (lambda seed: build_autoencoder(norm, seed), lambda seed: build_lstm(norm, K, seed)):
        first, again, other = build(3).train_model, build(3).train_model, build(4).train_model
        for a, b in zip(first.get_weights(), again.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        assert any(not np.array_equal(a, b) for a, b in zip(first.get_weights(), other.get_weights(), strict=True))


def test_backend_without_models_says_to_train(tmp_path: Path) -> None:
    with pytest.raises(ModelsNotFoundError, match="run `flowsentinel train` first"):
        InProcessBackend(tmp_path)


def test_export_takes_the_next_version_and_never_overwrites(trained: TrainResult, tmp_path: Path) -> None:
    detector = trained.detectors["autoencoder"]
    first = export_model(detector, tmp_path, {"threshold": 1.0})
    second = export_model(detector, tmp_path, {"threshold": 1.0})
    assert (first.name, second.name) == ("1", "2") and latest_version(tmp_path, "autoencoder") == 2
    with pytest.raises(FileExistsError):
        export_model(detector, tmp_path, {"threshold": 1.0}, version=1)
    assert sorted(p.name for p in (tmp_path / "autoencoder").iterdir()) == ["1", "2"]  # no temporary left


def test_cli_trains_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [SAMPLE / "CTU-Honeypot-Capture-4-1-labeled.csv.gz", SAMPLE / "CTU-Honeypot-Capture-5-1-labeled.csv.gz"]
    argv = ["train", "--data", *map(str, files), "--out", str(tmp_path), "--epochs", "1", "--history", "4"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "summary" in out and "role" in out
    for name in MODEL_NAMES:
        assert str(tmp_path / name / "1") in out
        card = load_card(tmp_path / name / "1")
        assert card["validation"]["in_sample_malicious"] is None  # honeypots: benign only
    for lstm in ("lstm", "lstm-dst"):
        card = load_card(tmp_path / lstm / "1")
        assert card["history_windows"] == 4 and card["signature"]["input"]["shape"] == [None, 4, len(FEATURE_NAMES)]
    assert cli_main([*argv, "--version", "1"]) == 2  # refused before training: version 1 is taken
    assert "version 1 of autoencoder, lstm, autoencoder-dst, lstm-dst already exists" in capsys.readouterr().err


def test_cli_reports_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path)]) == 2
    assert f"{tmp_path / 'nope.csv'}: no such flow file" in capsys.readouterr().err


def test_cli_reports_no_benign_windows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with gzip.open(SAMPLE / "CTU-Malware-Capture-8-1-labeled.csv.gz", "rt") as fh:
        lines = fh.read().splitlines()
    malicious_only = tmp_path / "malicious-only.csv"
    malicious_only.write_text("\n".join([lines[0], *[line for line in lines[1:] if ",Malicious," in line]]) + "\n")
    assert cli_main(["train", "--data", str(malicious_only), "--out", str(tmp_path)]) == 2
    assert "not enough benign windows" in capsys.readouterr().err
