"""`flowsentinel demo`: the whole pipeline on the bundled IoT-23 sample, as an operator would run it.

Starts the embedded stack (unless one runs), trains the models if none are exported, starts the
featurizer, scorer and alerter as processes, replays the attack captures, shows live progress, prints
a summary with window-level precision/recall/F1 against the dataset's labels, and stops everything
it started. Labels travel with the replayed flows for this evaluation only; no model reads them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from services import runner
from services.common import kafka, stack
from services.common.redis_client import sync_redis
from services.common.settings import REPO_ROOT, Settings, load_settings

SAMPLE = REPO_ROOT / "data" / "sample" / "iot23"
# Benign-only honeypots and the benign part of two mostly-benign malware captures train the models;
# the two attack-heavy captures are replayed and never seen in training.
TRAIN_CAPTURES = [
    "CTU-Honeypot-Capture-4-1",
    "CTU-Honeypot-Capture-5-1",
    "CTU-Honeypot-Capture-7-1",
    "CTU-Malware-Capture-20-1",
    "CTU-Malware-Capture-42-1",
]
REPLAY_CAPTURES = ["CTU-Malware-Capture-8-1", "CTU-Malware-Capture-34-1"]


def sample_files(captures: list[str]) -> list[Path]:
    return [SAMPLE / f"{c}-labeled.csv.gz" for c in captures]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replay", nargs="+", type=Path, default=None, help="flow files to replay (default: sample)")
    p.add_argument("--retrain", action="store_true", help="train new models even if some are exported")
    p.add_argument("--timeout", type=float, default=600.0, help="give up when the pipeline has not drained by then")


def ensure_models(settings: Settings, console: Console, retrain: bool) -> None:
    from services.scorer.backends import MODEL_NAMES, latest_version

    if not retrain and all(latest_version(settings.models_dir, m) is not None for m in MODEL_NAMES):
        console.print(f"models: using those exported in {settings.models_dir}/")
        return
    from training.train_cli import train_and_export

    console.print(f"models: training on the benign flows of {', '.join(TRAIN_CAPTURES)}")
    train_and_export(sample_files(TRAIN_CAPTURES), settings.models_dir, settings)


def summary_table(snap: runner.Snapshot, metrics: dict[str, dict[str, float]], incidents: int, elapsed: float) -> Table:
    t = Table(title="FlowSentinel demo: summary", show_header=False)
    rows = [
        ("flows in (replayed)", f"{snap.published:,}"),
        ("flows featurized (source / destination host windows)", f"{snap.featurized:,} / {snap.dst_featurized:,}"),
        ("flows in DLQ (late, unreadable, invalid)", f"{snap.late + snap.undecodable + snap.invalid:,}"),
        ("host windows closed (source / destination)", f"{snap.windows:,} / {snap.dst_windows:,}"),
        ("host windows scored (closed and early)", f"{snap.scored:,}"),
        ("anomalies", f"{snap.anomalies:,}"),
        ("alerts (incidents opened or escalated)", f"{snap.alerts:,}"),
        ("incidents", f"{incidents:,}"),
    ]
    for role, m in metrics.items():
        rows += [
            (f"{role} windows: precision / recall / F1", f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}"),
            (f"{role} windows: false-positive rate (benign)", f"{m['fpr']:.3f}"),
            (f"{role} windows: TP / FP / FN / TN", f"{m['tp']} / {m['fp']} / {m['fn']} / {m['tn']}"),
        ]
    rows.append(("wall time", f"{elapsed:.0f} s"))
    for k, v in rows:
        t.add_row(k, v)
    return t


def run(args: argparse.Namespace) -> int:
    console = Console()
    started = time.monotonic()
    base = load_settings()
    info, we_started = stack.ensure_stack(base)
    # A fresh namespace per run: a stack left running from an earlier run cannot leak into this one.
    settings = base.model_copy(
        update={
            "kafka_bootstrap": info.kafka_bootstrap,
            "redis_url": info.redis_url,
            "namespace": f"demo{int(time.time())}-",
            "alerts_file": base.run_dir / "demo-alerts.jsonl",
            "alerts_stdout": False,
        }
    )
    settings.alerts_file.unlink(missing_ok=True)
    kafka.ensure_topics(settings)
    log_dir = settings.run_dir / "logs"
    processes = {}
    try:
        ensure_models(settings, console, args.retrain)
        processes = {name: runner.start_service(settings, name, log_dir=log_dir) for name in runner.STREAMING_SERVICES}
        files = args.replay or sample_files(REPLAY_CAPTURES)
        console.print(f"replaying {', '.join(f.name for f in files)} (logs in {log_dir}/)")
        replay = runner.start_service(settings, "replay", *map(str, files), log_dir=log_dir)
        processes["replay"] = replay
        with Live(console=console, refresh_per_second=4) as live:

            def show(snap: runner.Snapshot) -> None:
                live.update(f"[bold]progress[/] {snap.line()}")
                if replay.poll() is not None:
                    processes.pop("replay", None)
                    if replay.returncode:
                        raise RuntimeError(f"replay failed (code {replay.returncode}); see {log_dir}/replay.log")

            snap = runner.wait_until_drained(settings, args.timeout, processes, show)
        scores = runner.read_topic(settings, "scores", "Score")
        metrics = {role: runner.window_metrics(scores, role) for role in settings.roles()}
        incidents = len({json.loads(line)["incident_id"] for line in settings.alerts_file.read_text().splitlines()})
        console.print(summary_table(snap, metrics, incidents, time.monotonic() - started))
        console.print(f"alerts as the JSONL sink wrote them: {settings.alerts_file}")
        return 0
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        return 1
    finally:
        for proc in processes.values():
            runner.stop_process(proc)
        _forget(settings)
        if we_started:
            stack.stop_stack(base)
            console.print("stopped the embedded stack")


def _forget(settings: Settings) -> None:
    """Drop this run's Redis keys and the alerter's (drained) spool: the demo leaves no state behind."""
    from services.alerter.service import spool_dir

    shutil.rmtree(spool_dir(settings), ignore_errors=True)
    r = sync_redis(settings)
    keys = list(r.scan_iter(match=f"{settings.namespace}fs:*", count=1000))
    for i in range(0, len(keys), 500):
        r.delete(*keys[i : i + 500])
