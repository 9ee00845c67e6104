"""`flowsentinel evaluate`: the exported autoencoder and LSTM, and the rule IDS, on labelled flow files,
without retraining. Each file is scored on its own (its windows and host histories as the featurizer would
build them, with the models' own window length and K); the report pools all files' flows."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from training.detectors.base import WindowDetector
from training.detectors.exported import ExportedModel
from training.detectors.rules import RuleIds
from training.evaluation import importance
from training.evaluation.data import Fold, describe, load_capture
from training.evaluation.harness import FoldResult, evaluate_detector, pool
from training.evaluation.report import write_report
from training.evaluation.runinfo import copy_data, report_dir, run_id, run_record, table

MODELS = ("autoencoder", "lstm")
COPY_DATA_MAX_BYTES = 2_000_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", type=Path, required=True, help="models folder written by `flowsentinel train`")
    p.add_argument("--data", nargs="+", type=Path, required=True, metavar="FILE", help="labelled flow files")
    p.add_argument("--report", type=Path, default=None, help="report folder; default reports/<run>/")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        detectors: list[WindowDetector] = [ExportedModel(args.models, name) for name in MODELS]
        detectors.append(RuleIds())
        cards = {d.name: d.card for d in detectors if isinstance(d, ExportedModel)}
        window_seconds = float(cards["autoencoder"]["window_seconds"])
        k = int(cards["lstm"]["history_windows"])
        if float(cards["lstm"]["window_seconds"]) != window_seconds:
            raise ValueError("the autoencoder and the LSTM were trained on different window lengths")
        trained_on = set(cards["autoencoder"]["training_data"]["files"])
        rid = run_id("evaluate")
        out = report_dir(args.report, rid)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        results, captures = [], []
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("evaluating", total=len(args.data))
            for f in args.data:
                progress.update(task, description=f"evaluating {f.name}")
                capture = load_capture(f, window_seconds, k)
                captures.append(capture)
                test = capture.data
                if not len(test):
                    raise ValueError(f"{f}: no flows to evaluate on")
                fold = Fold(capture.name, None, np.zeros(0, dtype=bool), test, [capture.name], sorted(trained_on))
                outcomes = {
                    d.name: evaluate_detector(d, capture.name, test, float(d.fixed_threshold or 0.0), None, 0.0)
                    for d in detectors
                }
                permutation = {}
                found = importance.permutation_importance(detectors[0], test, 0)
                if found is not None:
                    permutation["autoencoder"] = found
                recon = importance.reconstruction_error_ratio(detectors[0].feature_errors(test), test)
                results.append(FoldResult(fold, outcomes, {"skipped": "evaluate does not train"}, permutation, recon))
                progress.advance(task)
            pooled = [pool(results, d.name) for d in detectors]
            parameters = {
                "models": str(args.models),
                "window_seconds": window_seconds,
                "history_windows": k,
                "thresholds": {d.name: d.fixed_threshold for d in detectors},
                "models_trained_on": sorted(trained_on),
            }
            run_info = run_record(rid, "flowsentinel evaluate", args.data, parameters)
            run_info["target_fpr"] = cards["autoencoder"].get("target_fpr")
            run_info["data_copies"] = copy_data(args.data, out, COPY_DATA_MAX_BYTES)
            run_info["detector_params"] = {d.name: d.params() for d in detectors}
            overlap = sorted(trained_on & {f.name for f in args.data})
            if overlap:
                run_info["warning"] = f"the models were trained on (the benign part of) {', '.join(overlap)}"
            kinds = {d.name: d.kind for d in detectors}
            write_report(
                out, "FlowSentinel evaluation of exported models", run_info, describe(captures), results, pooled, kinds
            )
    except (OSError, ValueError, KeyError) as exc:
        Console(stderr=True).print(f"[red]evaluate failed:[/] {exc}", soft_wrap=True)
        return 2
    console.print(table("held-out flows (no retraining)", pooled))
    if "warning" in run_info:
        console.print(f"[yellow]warning:[/] {run_info['warning']}")
    console.print(f"report: {out / 'report.md'}", soft_wrap=True)
    return 0
