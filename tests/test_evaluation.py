"""The evaluation harness on real IoT-23 captures: splits without leakage, `flowsentinel compare` on a small
set (one seed, two epochs), and `flowsentinel train` then `flowsentinel evaluate` on other captures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.cli import main as cli_main
from tests.paths import SAMPLE
from training.detectors import DETECTORS
from training.evaluation.data import chronological, leave_one_capture_out, load_capture
from training.evaluation.metrics import EPISODE_GAP_S, binary_metrics

HONEYPOT_7 = SAMPLE / "CTU-Honeypot-Capture-7-1-labeled.csv.gz"
HONEYPOT_4 = SAMPLE / "CTU-Honeypot-Capture-4-1-labeled.csv.gz"
HONEYPOT_5 = SAMPLE / "CTU-Honeypot-Capture-5-1-labeled.csv.gz"
TORII_20 = SAMPLE / "CTU-Malware-Capture-20-1-labeled.csv.gz"
MIRAI_34 = SAMPLE / "CTU-Malware-Capture-34-1-labeled.csv.gz"
FLOW_KEYS = {"accuracy", "precision", "recall", "f1", "fpr", "roc_auc", "pr_auc", "time_to_detect_s"}


def _window_keys(data) -> set[tuple[str, float]]:  # noqa: ANN001 - WindowData
    return {(w["host"], w["window_start"]) for w in data.windows}


def test_splits_never_test_on_training_windows() -> None:
    captures = [load_capture(p, 60.0, 4) for p in (HONEYPOT_7, TORII_20)]
    for fold in leave_one_capture_out(captures):
        assert fold.train_captures == [c.name for c in captures if c.name not in fold.test_captures]
        assert not {w["capture"] for f in fold.train.flows for w in f} & set(fold.test_captures)
        val = fold.train.subset(fold.validation)
        assert not val.malicious.any() and len(val) > 0
    (fold,) = chronological(captures)
    assert not _window_keys(fold.train) & _window_keys(fold.test)
    for c in captures:  # within each capture, every training window starts before every test window
        tr = [
            w["window_start"]
            for w, f in zip(fold.train.windows, fold.train.flows, strict=True)
            if f[0]["capture"] == c.name
        ]
        te = [
            w["window_start"]
            for w, f in zip(fold.test.windows, fold.test.flows, strict=True)
            if f[0]["capture"] == c.name
        ]
        assert max(tr) <= min(te)
    # Validation windows are the latest benign training windows of each capture.
    starts = np.array([w["window_start"] for w in fold.train.windows])
    for c in captures:
        mine = np.array([f[0]["capture"] == c.name for f in fold.train.flows])
        benign_train = mine & ~fold.validation & ~fold.train.malicious
        assert starts[benign_train].max() <= starts[mine & fold.validation].min()


def test_binary_metrics_counts() -> None:
    y = np.array([1, 1, 0, 0, 0], dtype=bool)
    m = binary_metrics(y, np.array([1, 0, 1, 0, 0], dtype=bool), np.array([0.9, 0.2, 0.8, 0.1, 0.3]))
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 1, 1, 2)
    assert m["precision"] == m["recall"] == m["f1"] == 0.5 and m["fpr"] == pytest.approx(1 / 3)
    assert m["roc_auc"] == pytest.approx(4 / 6) and m["accuracy"] == pytest.approx(0.6)
    assert binary_metrics(~y | y, y, None)["roc_auc"] is None  # one class: no ROC-AUC


def _check_report(out: Path, detectors: list[str]) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["detectors"]) == set(detectors)
    for name in detectors:
        assert set(metrics["detectors"][name]) >= FLOW_KEYS
        m = metrics["detectors"][name]
        assert 0.0 <= m["f1"] <= 1.0 and 0.0 <= m["fpr"] <= 1.0
    for png in ("roc_pr.png", "confusion.png", "timeline.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    for section in (
        "Table 1",
        "2026 study",
        "Per-window metrics",
        "Early detection per attack episode",
        "Which features matter",
        "confusion.png",
    ):
        assert section in report
    assert metrics["run"]["code_version"] and metrics["run"]["data"]
    return metrics


def test_compare_small(tmp_path: Path) -> None:
    out = tmp_path / "report"
    argv = [
        "compare",
        "--data",
        str(HONEYPOT_7),
        str(MIRAI_34),
        "--split",
        "chronological",
        "--seeds",
        "0",
        "--epochs",
        "2",
        "--history",
        "4",
        "--report",
        str(out),
    ]
    assert cli_main(argv) == 0
    metrics = _check_report(out, list(DETECTORS))
    assert metrics["run"]["parameters"]["split"] == "chronological"
    # The supervised reference learns Mirai's C&C from the capture's first 70 % and finds it in the rest.
    assert metrics["detectors"]["random_forest"]["f1"] >= 0.5
    # The rule IDS fires on the Mirai capture's malicious windows.
    assert metrics["window_level"]["rule_ids"]["tp"] > 0
    assert metrics["seed_spread"]["autoencoder"]["per_seed"]["0"]["thresholds"]
    for ep in metrics["episodes"]["rule_ids"]:
        assert ep["end"] - ep["start"] >= 0 and ep["flows"] > 0
        if ep["detected"]:
            assert ep["time_to_detect_s"] > 0 and 0.0 <= ep["share_flows_before_alert"] <= 1.0
    assert "Seeds and threshold spread" in (out / "report.md").read_text()
    assert EPISODE_GAP_S > 0


def test_train_then_evaluate_on_other_captures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    train = [
        "train",
        "--data",
        str(HONEYPOT_4),
        str(HONEYPOT_5),
        "--out",
        str(models),
        "--epochs",
        "2",
        "--history",
        "4",
    ]
    assert cli_main(train) == 0
    out = tmp_path / "eval"
    assert (
        cli_main(["evaluate", "--models", str(models), "--data", str(HONEYPOT_7), str(TORII_20), "--report", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "autoencoder" in printed and "rule_ids" in printed and str(out / "report.md") in printed
    metrics = _check_report(out, ["autoencoder", "lstm", "rule_ids"])
    assert metrics["run"]["parameters"]["history_windows"] == 4
    # The models' thresholds come from their cards, not from the evaluated data.
    cards = {n: json.loads(next((models / n).glob("*/model_card.json")).read_text()) for n in ("autoencoder", "lstm")}
    assert metrics["thresholds"]["autoencoder"] == [cards["autoencoder"]["threshold"]] * 2
    assert metrics["thresholds"]["lstm"] == [cards["lstm"]["threshold"]] * 2


def test_evaluate_without_models_says_to_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["evaluate", "--models", str(tmp_path), "--data", str(HONEYPOT_7)]) == 2
    assert "run `flowsentinel train` first" in capsys.readouterr().err
