"""Scorer model backends: windows/s and the latency a scoring call adds, per backend and batch size.

Each backend scores real IoT-23 host windows (and their K-window sequences) from the bundled Mirai capture
with both models, the call the scorer makes once per micro-batch. gRPC and REST go through the real
protocols to tests/model_server.py on this machine, so their figures are the clients' and the wire's
cost on top of the same TensorFlow work (a real TF-Serving runs the model in C++: its share would differ).

    PYTHONPATH=. python bench/scorer_bench.py [--models DIR] [--seconds 3] [--batches 1,64,512,4096]

Without --models it trains a throwaway pair (1 epoch: speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402 - after the TF log level
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from services.common.settings import Settings  # noqa: E402
from services.demo import TRAIN_CAPTURES, sample_files  # noqa: E402
from services.scorer.backends import InProcessBackend, ModelBackend, latest_version  # noqa: E402
from services.scorer.tfserving import GrpcBackend, RestBackend  # noqa: E402
from tests.model_server import ModelServer  # noqa: E402
from tests.paths import SAMPLE  # noqa: E402
from training.train_cli import capture_windows, train_and_export  # noqa: E402

MIRAI = SAMPLE / "CTU-Malware-Capture-34-1-labeled.csv.gz"


def measure(
    backend: ModelBackend | OneModel, x: np.ndarray, seq: np.ndarray, batch: int, seconds: float
) -> tuple[float, ...]:
    """(windows/s, p50 ms, p99 ms) of backend.score on consecutive batches for about `seconds`."""
    backend.score(x[:batch], seq[:batch])  # warm-up: tracing, connections
    latencies, rows, start, offset = [], 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds or len(latencies) < 5:
        if offset + batch > len(x):
            offset = 0
        t0 = time.perf_counter()
        backend.score(x[offset : offset + batch], seq[offset : offset + batch])
        latencies.append(time.perf_counter() - t0)
        rows += batch
        offset += batch
    elapsed = time.perf_counter() - start
    p50, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 99])
    return rows / elapsed, float(p50), float(p99)


class OneModel:
    """One model's signature alone, in-process: where a backend's time goes (the LSTM, K steps each way)."""

    def __init__(self, models: Path, name: str) -> None:
        import tensorflow as tf

        version = latest_version(models, name)
        self.name = f"inprocess, {name} only"
        self._saved = tf.saved_model.load(str(models / name / str(version)))
        self._signature = self._saved.signatures["serving_default"]
        self._input = "sequence" if name == "lstm" else "features"

    def score(self, x: np.ndarray, seq: np.ndarray) -> None:
        self._signature(**{self._input: seq if self._input == "sequence" else x})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="exported models (TF-Serving layout); default: train a pair")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--batches", default="1,64,512,4096", help="batch sizes, comma-separated")
    parser.add_argument(
        "--backends", default="inprocess,grpc,rest,autoencoder,lstm", help="autoencoder, lstm: one model"
    )
    args = parser.parse_args()
    console = Console()
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models
        if models is None:
            models = Path(tmp) / "models"
            console.print("training a throwaway model pair (1 epoch) ...")
            train_and_export(
                sample_files(TRAIN_CAPTURES), models, settings, epochs=1, console=Console(file=io.StringIO())
            )
        capture = capture_windows(MIRAI, settings.window_seconds, settings.history_windows)
        reps = -(-8192 // len(capture.features))  # at least two 4096-row batches of distinct rows
        x, seq = np.tile(capture.features, (reps, 1)), np.tile(capture.sequences, (reps, 1, 1))
        server = ModelServer(models)
        grpc_port, rest_port = server.start_grpc(), server.start_rest()
        backends = {
            "inprocess": lambda: InProcessBackend(models),
            "grpc": lambda: GrpcBackend(f"127.0.0.1:{grpc_port}", models, poll_s=60, timeout_s=120),
            "rest": lambda: RestBackend(f"http://127.0.0.1:{rest_port}", models, poll_s=60, timeout_s=120),
            "autoencoder": lambda: OneModel(models, "autoencoder"),
            "lstm": lambda: OneModel(models, "lstm"),
        }
        table = Table(
            title=f"scorer backends: autoencoder + LSTM (K={settings.history_windows}), {os.cpu_count()} CPUs"
        )
        for column in ("backend", "batch", "windows/s", "p50 ms", "p99 ms"):
            table.add_column(column, justify="right")
        rows = []
        try:
            for name in args.backends.split(","):
                backend = backends[name]()
                for batch in (int(b) for b in args.batches.split(",")):
                    with console.status(f"{name}, batch {batch} ..."):
                        rate, p50, p99 = measure(backend, x, seq, batch, args.seconds)
                    label = backend.name
                    rows.append((label, batch, rate, p50, p99))
                    table.add_row(label, str(batch), f"{rate:,.0f}", f"{p50:.2f}", f"{p99:.2f}")
        finally:
            server.stop()
    console.print(table)
    console.print("\nMarkdown:\n\n| backend | batch | windows/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|")
    for name, batch, rate, p50, p99 in rows:
        console.print(f"| {name} | {batch} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |", highlight=False)


if __name__ == "__main__":
    main()
