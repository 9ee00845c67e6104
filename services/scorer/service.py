"""The scorer: host windows -> (history from Redis) -> model backend -> scores and anomalies -> commit.

Each batch: drop windows replayed within it, read every host's last K windows in one Redis pipeline,
score the whole batch with one call per model, produce, and only then commit (services.common.pipeline).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from services.common import serde
from services.common.history import read_histories
from services.common.pipeline import Output, StopFlag, run_loop
from services.common.redis_client import sync_redis
from services.common.settings import Settings, load_settings
from services.scorer.backends import InProcessBackend, ModelBackend
from services.scorer.scoring import score_records
from training.sequences import pad_history


def sequences_for(settings: Settings, client: Any, windows: list[dict[str, Any]]) -> tuple[np.ndarray, list[int]]:
    """(N, K, F) LSTM inputs and how many real windows each holds."""
    histories = read_histories(client, settings, [(w["role"], w["host"], w["window_start"]) for w in windows])
    seqs, lengths = [], []
    for w, hist in zip(windows, histories, strict=True):
        vectors = [v for _, v in hist]
        if not hist or hist[-1][0] != w["window_start"]:  # not (or no longer) in Redis: it is the newest
            vectors.append(w["features"])
        lengths.append(min(len(vectors), settings.history_windows))
        seqs.append(pad_history(vectors, settings.history_windows))
    return np.stack(seqs), lengths


def make_transform(settings: Settings, backend: ModelBackend) -> Any:
    client = sync_redis(settings)
    scores_topic, anomalies_topic = settings.topic("scores"), settings.topic("anomalies")
    stats = settings.key("scorer", "stats")

    def transform(windows: list[dict[str, Any]]) -> list[Output]:
        windows = list({w["window_id"]: w for w in windows}.values())
        features = np.asarray([w["features"] for w in windows], dtype=np.float32)
        sequences, lengths = sequences_for(settings, client, windows)
        result = backend.score(features, sequences)
        outputs, anomalies = [], 0
        for score, anomaly in score_records(
            windows,
            result.autoencoder_scores,
            result.autoencoder_feature_errors,
            result.lstm_scores,
            lengths,
            result.cards,
            settings.explain_top,
        ):
            key = score["host"].encode()
            outputs.append(Output(scores_topic, key, serde.encode("Score", score)))
            if anomaly is not None:
                anomalies += 1
                outputs.append(Output(anomalies_topic, key, serde.encode("Anomaly", anomaly)))
        with client.pipeline() as pipe:
            pipe.hincrby(stats, "windows_scored", len(windows))
            pipe.hincrby(stats, "anomalies", anomalies)
            pipe.execute()
        return outputs

    return transform


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=None, help="model folder (TF-Serving layout); default from settings")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    backend = InProcessBackend(args.models or settings.models_dir)
    stop = StopFlag().install()
    transform = make_transform(settings, backend)
    run_loop(
        settings,
        "scorer",
        "host-windows",
        "HostWindow",
        transform,
        settings.scorer_batch,
        settings.scorer_batch_wait_s,
        stop,
    )
    return 0
