"""The scorer: host windows -> (history from Redis) -> model backend -> scores and anomalies -> commit.

Each batch (at most scorer_batch windows, or what arrived within scorer_batch_wait_s, so a quiet network is
scored promptly): drop windows replayed within it, read every host's last K windows in one Redis pipeline,
score each role's windows (src: what a host started, dst: what it received) with one call per model of that
role, produce, and only then commit (services.common.pipeline). Windows of a role whose models are missing
go to host-windows.dlq with the reason, one log line says so, and the other role is scored as usual.
When the model server fails, the batch in hand is retried with backoff and nothing new is consumed, so no
offset moves past an unscored window; /readyz says why the scorer is not ready until a retry succeeds.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from services.common import kafka, log, metrics, preflight, serde
from services.common.history import read_histories
from services.common.pipeline import Output, StopFlag, run_loop
from services.common.redis_client import sync_redis
from services.common.settings import Settings, load_settings
from services.scorer.backends import BackendResult, InProcessBackend, ModelBackend, ModelsNotFoundError
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


def rows_by_role(windows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Positions of each role's windows, in batch order."""
    rows: dict[str, list[int]] = defaultdict(list)
    for i, w in enumerate(windows):
        rows[w["role"]].append(i)
    return rows


def scoring_call(
    settings: Settings, backend: ModelBackend, health: metrics.Health, stop: StopFlag, logger: logging.Logger
) -> Callable[[np.ndarray, np.ndarray, str], BackendResult]:
    """backend.score, retried with backoff while the model server is unavailable; health and metrics follow.
    Missing models (ModelsNotFoundError) are not retried: the caller sets that role's windows aside."""

    def on_failure(exc: Exception, delay: float) -> None:
        metrics.ERRORS.labels("scorer", "model_server_unavailable").inc()
        metrics.MODEL_RETRIES.labels(backend.name).inc()
        health.set_ready(False, f"model server unavailable, retrying the batch in hand: {exc}")
        logger.warning("%s; batch retried in %.1fs, nothing new consumed meanwhile", exc, delay)

    def on_success(failures: int) -> None:
        if failures:
            logger.info("model server back after %d failed attempts; resuming", failures)
        health.set_ready(True)

    def call(features: np.ndarray, sequences: np.ndarray, role: str) -> BackendResult:
        def attempt() -> BackendResult:
            started = time.perf_counter()
            result = backend.score(features, sequences, role)
            metrics.MODEL_SECONDS.labels(backend.name).observe(time.perf_counter() - started)
            return result

        delays = backoff_delays(FIRST_RETRY_S, settings.model_retry_max_s)
        return call_with_retry(attempt, ModelServerUnavailable, stop.event, delays, on_failure, on_success)

    return call


def make_transform(
    settings: Settings, score_batch: Callable[[np.ndarray, np.ndarray, str], BackendResult], backend_name: str
) -> Any:
    client = sync_redis(settings)
    scores_topic, anomalies_topic = settings.topic("scores"), settings.topic("anomalies")
    dlq_topic = settings.topic("host-windows.dlq")
    stats = settings.key("scorer", "stats")
    logger = logging.getLogger("flowsentinel.scorer")
    unscorable: set[str] = set()  # roles whose models are missing: logged once when that starts, once when it ends

    def rejected(window: dict[str, Any], reason: str, kind: str) -> Output:
        metrics.DLQ.labels("scorer", kind).inc()
        value = kafka.dlq_record("scorer", reason, serde.encode("HostWindow", window), window_id=window["window_id"])
        return Output(dlq_topic, window["host"].encode(), value)

    def without_models(role: str, windows: list[dict[str, Any]], exc: ModelsNotFoundError) -> list[Output]:
        """A role whose models are missing: its windows go to the DLQ (never to another role's models)."""
        if role not in unscorable:
            logger.error("%s windows go to %s until their models are there: %s", role, dlq_topic, exc)
            unscorable.add(role)
        return [rejected(w, f"no {role} models to score it: {exc}", "no_model") for w in windows]

    def scored_outputs(windows: list[dict[str, Any]], result: BackendResult, lengths: list[int]) -> list[Output]:
        if result.role in unscorable:
            unscorable.discard(result.role)
            logger.info("%s models found: %s windows are scored again", result.role, result.role)
        for name, version in result.versions.items():
            metrics.MODEL_VERSION.labels(name).set(version)
        outputs = []
        for score, anomaly in score_records(windows, result, lengths, settings.explain_top):
            key = score["host"].encode()
            outputs.append(Output(scores_topic, key, serde.encode("Score", score)))
            if anomaly is not None:
                outputs.append(Output(anomalies_topic, key, serde.encode("Anomaly", anomaly)))
                for model in anomaly["models_fired"]:
                    metrics.ANOMALIES.labels(model).inc()
        return outputs

    def transform(windows: list[dict[str, Any]]) -> list[Output]:
        started = time.perf_counter()
        unique = {w["window_id"]: w for w in windows}.values()
        problems = {w["window_id"]: window_problem(w) for w in unique}
        dead = [rejected(w, problems[w["window_id"]], "invalid_window") for w in unique if problems[w["window_id"]]]
        windows = [w for w in unique if not problems[w["window_id"]]]
        outputs: list[Output] = []
        if windows:
            metrics.BATCH_SIZE.labels("scorer").observe(len(windows))
            sequences, lengths = sequences_for(settings, client, windows)  # one Redis round trip for every role
            for role, rows in rows_by_role(windows).items():
                group = [windows[i] for i in rows]
                features = np.asarray([w["features"] for w in group], dtype=np.float32)
                try:
                    result = score_batch(features, sequences[rows], role)
                except ModelsNotFoundError as exc:
                    dead += without_models(role, group, exc)
                    continue
                outputs += scored_outputs(group, result, [lengths[i] for i in rows])
        n_scored = sum(o.topic == scores_topic for o in outputs)
        with client.pipeline() as pipe:
            pipe.hincrby(stats, "windows_rejected", len(dead))
            pipe.hincrby(stats, "windows_scored", n_scored)
            pipe.hincrby(stats, "anomalies", sum(o.topic == anomalies_topic for o in outputs))
            pipe.execute()
        metrics.WINDOWS_SCORED.labels(backend_name).inc(n_scored)
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
