"""`flowsentinel compare`: every registered detector on the same leakage-free splits, one report.

Each fold: every detector is fitted on the training part (benign windows only, except the supervised
Random Forest), its threshold set on the training part's benign validation windows (or its own), and the
held-out part scored. The report pools the held-out flows of all folds; see training/evaluation/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from training.detectors import DETECTORS, DetectorConfig, create
from training.evaluation.data import SPLIT_FUNCTIONS, describe, load_capture
from training.evaluation.harness import pool, run_fold
from training.evaluation.report import write_report
from training.evaluation.runinfo import copy_data, report_dir, run_id, run_record, table
from training.train_cli import DEFAULT_FPR, _fpr, _positive_int, settings_from_args

DEFAULT_SEEDS = (0, 1, 2)
COPY_DATA_MAX_BYTES = 2_000_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", nargs="+", type=Path, required=True, metavar="FILE", help="labelled flow files, one capture each"
    )
    p.add_argument("--split", choices=list(SPLIT_FUNCTIONS), default="leave-one-capture-out")
    p.add_argument("--report", type=Path, default=None, help="report folder; default reports/<run>/")
    p.add_argument("--detectors", nargs="+", choices=list(DETECTORS), default=list(DETECTORS))
    p.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS), help="ensemble members' seeds")
    p.add_argument("--epochs", type=_positive_int, default=40, help="max epochs of the neural models")
    p.add_argument("--fpr", type=_fpr, default=DEFAULT_FPR, help="target false-positive rate on benign validation")
    p.add_argument("--window-seconds", type=float, default=None, help="window length; default from settings")
    p.add_argument("--history", type=_positive_int, default=None, help="K windows per LSTM sequence")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        settings = settings_from_args(args)
        config = DetectorConfig(seeds=tuple(args.seeds), epochs=args.epochs, history_windows=settings.history_windows)
        rid = run_id("compare")
        out = report_dir(args.report, rid)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            reading = progress.add_task("reading captures", total=len(args.data))
            captures = []
            for f in args.data:
                captures.append(load_capture(f, settings.window_seconds, settings.history_windows))
                progress.advance(reading)
            folds = SPLIT_FUNCTIONS[args.split](captures)
            task = progress.add_task("folds", total=len(folds) * len(args.detectors))

            def step(message: str) -> None:
                progress.update(task, description=message)

            results = []
            for fold in folds:
                results.append(run_fold(fold, args.detectors, config, args.fpr, step))
                progress.advance(task, len(args.detectors))
            progress.update(task, description="writing the report")
            pooled = [pool(results, name) for name in args.detectors]
            parameters = {
                "split": args.split,
                "detectors": args.detectors,
                "seeds": list(config.seeds),
                "epochs_max": config.epochs,
                "target_fpr": args.fpr,
                "window_seconds": settings.window_seconds,
                "history_windows": settings.history_windows,
            }
            run_info = run_record(rid, "flowsentinel compare", args.data, parameters)
            run_info["target_fpr"] = args.fpr
            run_info["data_copies"] = copy_data(args.data, out, COPY_DATA_MAX_BYTES)
            run_info["detector_params"] = {n: o.params for n, o in results[0].outcomes.items()}
            kinds = {n: create(n, config).kind for n in args.detectors}
            write_report(
                out,
                f"FlowSentinel detector comparison ({args.split})",
                run_info,
                describe(captures),
                results,
                pooled,
                kinds,
            )
    except (OSError, ValueError) as exc:
        Console(stderr=True).print(f"[red]compare failed:[/] {exc}", soft_wrap=True)
        return 2
    console.print(table(f"held-out flows, {args.split}", pooled))
    console.print(f"report: {out / 'report.md'}", soft_wrap=True)
    return 0
