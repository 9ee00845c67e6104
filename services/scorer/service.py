"""The scorer: host windows -> (history from Redis) -> model backend -> scores and anomalies -> commit.

Each batch (at most scorer_batch windows, or what arrived within scorer_batch_wait_s, so a quiet network is
scored promptly): drop windows replayed within it, read every host's last K windows in one Redis pipeline,
score the whole batch with one call per model, produce, and only then commit (services.common.pipeline).
When the model server fails, the batch in hand is retried with backoff and nothing new is consumed, so no
offset moves past an unscored window; /readyz says why the scorer is not ready until a retry succeeds.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from services.common import kafka, log, metrics, preflight, serde
from services.common.history import read_histories
from services.common.pipeline import Output, StopFlag, run_loop
from services.common.redis_client import sync_redis
from services.common.settings import Settings, load_settings
from services.scorer.backends import BackendResult, InProcessBackend, ModelBackend
from services.scorer.retry import Interrupted, backoff_delays, call_with_retry
from services.scorer.scoring import score_records, window_problem
from services.scorer.tfserving import GrpcBackend, ModelServerUnavailable, RestBackend  # TensorFlow only when used
from training.sequences import pad_history

FIRST_RETRY_S = 0.5


def _grpc(settings: Settings, models_dir: Path) -> ModelBackend:
    return GrpcBackend(settings.tfserving_grpc, models_dir, settings.model_poll_s, settings.model_timeout_s)


def _rest(settings: Settings, models_dir: Path) -> ModelBackend:
    return RestBackend(settings.tfserving_rest, models_dir, settings.model_poll_s, settings.model_timeout_s)


def _inprocess(settings: Settings, models_dir: Path) -> ModelBackend:
    return InProcessBackend(models_dir, poll_s=settings.model_poll_s)


# settings.scorer_backend -> constructor; the models folder gives the cards whichever backend scores.
BACKENDS: dict[str, Callable[[Settings, Path], ModelBackend]] = {"inprocess": _inprocess, "grpc": _grpc, "rest": _rest}


def make_backend(settings: Settings, models_dir: Path | None = None) -> ModelBackend:
    return BACKENDS[settings.scorer_backend](settings, Path(models_dir or settings.models_dir))


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


def scoring_call(
    settings: Settings, backend: ModelBackend, health: metrics.Health, stop: StopFlag, logger: logging.Logger
) -> Callable[[np.ndarray, np.ndarray], BackendResult]:
    """backend.score, retried with backoff while the model server is unavailable; health and metrics follow."""

    def on_failure(exc: Exception, delay: float) -> None:
        metrics.ERRORS.labels("scorer", "model_server_unavailable").inc()
        metrics.MODEL_RETRIES.labels(backend.name).inc()
        health.set_ready(False, f"model server unavailable, retrying the batch in hand: {exc}")
        logger.warning("%s; batch retried in %.1fs, nothing new consumed meanwhile", exc, delay)

    def on_success(failures: int) -> None:
        if failures:
            logger.info("model server back after %d failed attempts; resuming", failures)
        health.set_ready(True)

    def call(features: np.ndarray, sequences: np.ndarray) -> BackendResult:
        def attempt() -> BackendResult:
            started = time.perf_counter()
            result = backend.score(features, sequences)
            metrics.MODEL_SECONDS.labels(backend.name).observe(time.perf_counter() - started)
            return result

        delays = backoff_delays(FIRST_RETRY_S, settings.model_retry_max_s)
        return call_with_retry(attempt, ModelServerUnavailable, stop.event, delays, on_failure, on_success)

    return call


def make_transform(
    settings: Settings, score_batch: Callable[[np.ndarray, np.ndarray], BackendResult], backend_name: str
) -> Any:
    client = sync_redis(settings)
    scores_topic, anomalies_topic = settings.topic("scores"), settings.topic("anomalies")
    dlq_topic = settings.topic("host-windows.dlq")
    stats = settings.key("scorer", "stats")

    def rejected(window: dict[str, Any], reason: str) -> Output:
        metrics.DLQ.labels("scorer", "invalid_window").inc()
        value = kafka.dlq_record("scorer", reason, serde.encode("HostWindow", window), window_id=window["window_id"])
        return Output(dlq_topic, window["host"].encode(), value)

    def transform(windows: list[dict[str, Any]]) -> list[Output]:
        started = time.perf_counter()
        unique = {w["window_id"]: w for w in windows}.values()
        problems = {w["window_id"]: window_problem(w) for w in unique}
        dead = [rejected(w, problems[w["window_id"]]) for w in unique if problems[w["window_id"]]]
        if dead:
            client.hincrby(stats, "windows_rejected", len(dead))
        windows = [w for w in unique if not problems[w["window_id"]]]
        if not windows:
            return dead
        metrics.BATCH_SIZE.labels("scorer").observe(len(windows))
        features = np.asarray([w["features"] for w in windows], dtype=np.float32)
        sequences, lengths = sequences_for(settings, client, windows)
        result = score_batch(features, sequences)
        for name, version in result.versions.items():
            metrics.MODEL_VERSION.labels(name).set(version)
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
                for model in anomaly["models_fired"]:
                    metrics.ANOMALIES.labels(model).inc()
        with client.pipeline() as pipe:
            pipe.hincrby(stats, "windows_scored", len(windows))
            pipe.hincrby(stats, "anomalies", anomalies)
            pipe.execute()
        metrics.WINDOWS_SCORED.labels(backend_name).inc(len(windows))
        metrics.BATCH_SECONDS.labels("scorer").observe(time.perf_counter() - started)
        return dead + outputs

    return transform


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=None, help="model folder (TF-Serving layout); default from settings")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    logger = log.setup("scorer")
    preflight.check(settings)
    health = metrics.Health()
    metrics.serve(settings.metrics_port, health)
    backend = make_backend(settings, args.models)
    logger.info("model backend %s", backend.name)
    health.set_ready(True)
    stop = StopFlag().install()
    transform = make_transform(settings, scoring_call(settings, backend, health, stop, logger), backend.name)
    try:
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
    except Interrupted as exc:  # its offsets were not committed: the next start scores the batch
        logger.warning("stopped with a batch unscored, left for the next start: %s", exc)
    return 0
