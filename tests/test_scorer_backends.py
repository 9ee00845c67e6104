"""The scorer's model backends on the real exported models: in-process, and TF-Serving's gRPC and REST
protocols against tests/model_server.py serving the same SavedModels. Same scores from all three, new
versions picked up without a restart, and a down or slow model server reported as unavailable."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.common.stack import free_port
from services.scorer.backends import InProcessBackend, ModelBackend, load_card
from services.scorer.retry import Interrupted, backoff_delays, call_with_retry
from services.scorer.tfserving import REQUEST_ROWS, GrpcBackend, ModelServerUnavailable, RestBackend
from tests.model_server import ModelServer
from tests.paths import SAMPLE
from training.export import export_model
from training.models import build_autoencoder, fit_normalisation
from training.train_cli import CaptureWindows, capture_windows

K = 8  # Settings().history_windows, which the trained_models fixture uses
MIRAI = SAMPLE / "CTU-Malware-Capture-34-1-labeled.csv.gz"
BACKENDS = ("inprocess", "grpc", "rest")


@pytest.fixture(scope="module")
def mirai() -> CaptureWindows:
    return capture_windows(MIRAI, 60.0, K)


@pytest.fixture(scope="module")
def server(trained_models: Path) -> Iterator[tuple[int, int]]:
    srv = ModelServer(trained_models)
    ports = srv.start_grpc(), srv.start_rest()
    yield ports
    srv.stop()


def backend_for(kind: str, models: Path, ports: tuple[int, int], poll_s: float = 5.0) -> ModelBackend:
    if kind == "grpc":
        return GrpcBackend(f"127.0.0.1:{ports[0]}", models, poll_s, timeout_s=30)
    if kind == "rest":
        return RestBackend(f"http://127.0.0.1:{ports[1]}", models, poll_s, timeout_s=30)
    return InProcessBackend(models, poll_s=poll_s)


def test_three_backends_give_the_same_scores(trained_models: Path, server: tuple[int, int], mirai: CaptureWindows):
    # More rows than one request holds, so the remote clients' chunking is exercised too. Chunks of other sizes
    # sum in another order: float32 rounding (relative 1e-6) is the only difference allowed.
    assert len(mirai.features) > REQUEST_ROWS
    results = {
        kind: backend_for(kind, trained_models, server).score(mirai.features, mirai.sequences) for kind in BACKENDS
    }
    reference = results["inprocess"]
    assert reference.autoencoder_scores.shape == (len(mirai.features),)
    for kind in ("grpc", "rest"):
        got = results[kind]
        np.testing.assert_allclose(got.autoencoder_scores, reference.autoencoder_scores, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            got.autoencoder_feature_errors, reference.autoencoder_feature_errors, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(got.lstm_scores, reference.lstm_scores, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got.lstm_feature_errors, reference.lstm_feature_errors, rtol=1e-5, atol=1e-6)
        assert got.versions == reference.versions
        assert got.cards == reference.cards


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_a_down_model_server_is_unavailable(trained_models: Path, mirai: CaptureWindows, kind: str) -> None:
    nothing = free_port()
    backend = backend_for(kind, trained_models, (nothing, nothing))
    with pytest.raises(ModelServerUnavailable, match=str(nothing)):
        backend.score(mirai.features[:4], mirai.sequences[:4])


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_a_slow_model_server_is_unavailable(trained_models: Path, mirai: CaptureWindows, kind: str) -> None:
    slow = ModelServer(trained_models)
    slow.models.delay_s = 2.0
    ports = slow.start_grpc(), slow.start_rest()
    try:
        port = ports[0] if kind == "grpc" else ports[1]
        backend = (GrpcBackend if kind == "grpc" else RestBackend)(
            f"{'' if kind == 'grpc' else 'http://'}127.0.0.1:{port}", trained_models, 5.0, timeout_s=0.3
        )
        with pytest.raises(ModelServerUnavailable, match="(?i)deadline|timed out"):
            backend.score(mirai.features[:4], mirai.sequences[:4])
    finally:
        slow.stop()


def export_other_autoencoder(models: Path, mirai: CaptureWindows) -> int:
    """A new autoencoder version with other (untrained, other seed) weights: it scores differently."""
    detector = build_autoencoder(fit_normalisation(mirai.features), seed=12345)
    threshold = load_card(next((models / "autoencoder").iterdir()))["threshold"]
    return int(export_model(detector, models, {"threshold": threshold}).name)


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_new_version_is_used_without_restart(
    trained_models: Path, tmp_path: Path, mirai: CaptureWindows, kind: str
) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    srv = ModelServer(models)
    ports = (srv.start_grpc(), srv.start_rest()) if kind != "inprocess" else (0, 0)
    try:
        backend = backend_for(kind, models, ports, poll_s=0.2)
        x, seq = mirai.features[:200], mirai.sequences[:200]
        before = backend.score(x, seq)
        new = export_other_autoencoder(models, mirai)
        assert new != before.versions["autoencoder"]
        deadline = time.monotonic() + 60
        after = backend.score(x, seq)
        while after.versions["autoencoder"] != new and time.monotonic() < deadline:
            time.sleep(0.2)
            after = backend.score(x, seq)
        assert after.versions == {"autoencoder": new, "lstm": before.versions["lstm"]}
        assert after.cards["autoencoder"]["version"] == new
        fresh = InProcessBackend(models).score(x, seq)  # loads the latest: the new version
        np.testing.assert_allclose(after.autoencoder_scores, fresh.autoencoder_scores, rtol=1e-5, atol=1e-7)
        assert not np.allclose(after.autoencoder_scores, before.autoencoder_scores)
        np.testing.assert_allclose(after.lstm_scores, before.lstm_scores, rtol=1e-5, atol=1e-7)
    finally:
        srv.stop()


def test_a_broken_new_version_leaves_the_old_one_serving(trained_models: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    backend = InProcessBackend(models)
    old = backend.versions
    broken = models / "autoencoder" / str(old["autoencoder"] + 1)
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    assert backend.refresh() == []
    assert backend.versions == old


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = backoff_delays(0.5, 3.0)
    assert [next(delays) for _ in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_retry_until_success_then_stop_interrupts() -> None:
    attempts, failures_seen, succeeded_after = [], [], []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ModelServerUnavailable(f"down {len(attempts)}")
        return "scored"

    stop = threading.Event()
    result = call_with_retry(
        flaky,
        ModelServerUnavailable,
        stop,
        backoff_delays(0.001, 0.002),
        lambda exc, delay: failures_seen.append((str(exc), delay)),
        succeeded_after.append,
    )
    assert result == "scored"
    assert failures_seen == [("down 1", 0.001), ("down 2", 0.002)]
    assert succeeded_after == [2]

    def down() -> str:
        stop.set()  # stop requested while the server is down: the work is reported as not done
        raise ModelServerUnavailable("down")

    with pytest.raises(Interrupted, match="1 failed attempts"):
        call_with_retry(down, ModelServerUnavailable, stop, backoff_delays(5.0, 5.0), lambda *_: None, print)
