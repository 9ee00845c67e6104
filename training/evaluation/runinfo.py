"""What a run records about itself, where its report goes, and the metrics table it prints."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from training.evaluation.harness import Pooled
from training.export import code_version


def run_id(command: str) -> str:
    return f"{command}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"


def report_dir(given: Path | None, rid: str) -> Path:
    return given if given is not None else Path("reports") / rid


def run_record(rid: str, command: str, files: Sequence[Path], parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": rid,
        "command": command,
        "argv": sys.argv[1:],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "data": [str(f) for f in files],
        "parameters": parameters,
    }


def copy_data(files: Sequence[Path], out: Path, max_bytes: int) -> list[str]:
    """The run's data files beside its report when they are small; otherwise only their paths (metrics.json)."""
    copied = []
    if sum(f.stat().st_size for f in files) <= max_bytes:
        (out / "data").mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, out / "data" / f.name)
            copied.append(f"data/{f.name}")
    return copied


def table(title: str, pooled: Sequence[Pooled]) -> Table:
    t = Table(title=title)
    for col in (
        "detector",
        "accuracy",
        "precision",
        "recall",
        "F1",
        "FPR",
        "ROC-AUC",
        "PR-AUC",
        "TTD median",
        "episodes",
    ):
        detector = col == "detector"
        t.add_column(col, justify="left" if detector else "right", no_wrap=detector, min_width=16 if detector else None)
    for p in pooled:
        m, e = p.flow, p.episode_summary
        ttd = e["time_to_detect_s_median"]
        t.add_row(
            p.detector,
            *(f"{m[k]:.3f}" if m[k] is not None else "-" for k in ("accuracy", "precision", "recall", "f1")),
            f"{m['fpr']:.4f}",
            *(f"{m[k]:.3f}" if m[k] is not None else "-" for k in ("roc_auc", "pr_auc")),
            "-" if ttd is None else f"{ttd:.0f} s",
            f"{e['detected']}/{e['episodes']}",
        )
    return t
