"""The scorer's model backends on the real exported models: in-process, and TF-Serving's gRPC and REST
protocols against tests/model_server.py serving the same SavedModels. Same scores from all three, each
window role scored by its own models, a role without models refused until they appear, new versions
picked up without a restart, and a down or slow model server reported as unavailable."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from services.common.stack import free_port
from services.scorer.backends import (
    InProcessBackend,
    ModelBackend,
    ModelsNotFoundError,
    latest_version,
    load_card,
    model_name,
    role_models,
)
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
def mirai_dst() -> CaptureWindows:
    """The same capture's windows of the hosts that received its flows."""
    return capture_windows(MIRAI, 60.0, K, role="dst")


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


def saved_model_scores(models: Path, name: str, x: np.ndarray) -> np.ndarray:
    """The latest exported version of `name` called directly (its own SavedModel, no backend)."""
    path = models / name / str(latest_version(models, name))
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    return signature(**{load_card(path)["signature"]["input"]["name"]: tf.constant(x)})["score"].numpy()


@pytest.mark.parametrize("kind", BACKENDS)
def test_dst_windows_are_scored_by_the_dst_models(
    trained_models: Path, server: tuple[int, int], mirai_dst: CaptureWindows, kind: str
) -> None:
    x, seq = mirai_dst.features[:300], mirai_dst.sequences[:300]
    result = backend_for(kind, trained_models, server).score(x, seq, "dst")
    assert result.role == "dst" and set(result.versions) == {"autoencoder-dst", "lstm-dst"}
    assert {card["role"] for card in result.cards.values()} == {"dst"}
    dst_ae = saved_model_scores(trained_models, "autoencoder-dst", x)
    dst_lstm = saved_model_scores(trained_models, "lstm-dst", seq)
    np.testing.assert_allclose(result.autoencoder_scores, dst_ae, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.lstm_scores, dst_lstm, rtol=1e-5, atol=1e-7)
    # The src models read the same vectors differently: scoring dst windows with them would be another verdict.
    assert not np.allclose(result.autoencoder_scores, saved_model_scores(trained_models, "autoencoder", x), rtol=1e-3)
    assert not np.allclose(result.lstm_scores, saved_model_scores(trained_models, "lstm", seq), rtol=1e-3)


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_role_without_models_is_refused_until_they_appear(
    trained_models: Path, tmp_path: Path, mirai: CaptureWindows, mirai_dst: CaptureWindows, kind: str
) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained_models, models, ignore=shutil.ignore_patterns("*-dst"))
    srv = ModelServer(models)
    ports = (srv.start_grpc(), srv.start_rest()) if kind != "inprocess" else (0, 0)
    try:
        backend = backend_for(kind, models, ports, poll_s=0.2)
        src = backend.score(mirai.features[:20], mirai.sequences[:20], "src")
        assert set(src.versions) == {"autoencoder", "lstm"}
        x, seq = mirai_dst.features[:20], mirai_dst.sequences[:20]
        with pytest.raises(ModelsNotFoundError, match="autoencoder-dst"):
            backend.score(x, seq, "dst")
        for name in role_models("dst"):  # exported later: scored from then on, without a restart
            shutil.copytree(trained_models / name, models / name)
        deadline = time.monotonic() + 60
        while True:
            try:
                dst = backend.score(x, seq, "dst")
                break
            except ModelsNotFoundError:
                assert time.monotonic() < deadline, "the dst models exported later were never used"
                time.sleep(0.2)
        np.testing.assert_allclose(dst.autoencoder_scores, saved_model_scores(models, "autoencoder-dst", x), rtol=1e-5)
    finally:
        srv.stop()


def test_a_model_of_another_role_is_refused(trained_models: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained_models, models, ignore=shutil.ignore_patterns("*-dst"))
    shutil.copytree(trained_models / "autoencoder", models / "autoencoder-dst")  # a src model under a dst name
    shutil.copytree(trained_models / "lstm-dst", models / "lstm-dst")
    with pytest.raises(ValueError, match="trained on src windows, but autoencoder-dst scores dst windows"):
        InProcessBackend(models)


def export_other_autoencoder(models: Path, capture: CaptureWindows, role: str = "src") -> int:
    """A new autoencoder version of `role` with other (untrained, other seed) weights: it scores differently."""
    detector = build_autoencoder(fit_normalisation(capture.features), seed=12345)
    threshold = load_card(next((models / model_name("autoencoder", role)).iterdir()))["threshold"]
    return int(export_model(detector, models, {"threshold": threshold}, role=role).name)


@pytest.mark.parametrize("role", ["src", "dst"])
@pytest.mark.parametrize("kind", BACKENDS)
def test_a_new_version_is_used_without_restart(
    trained_models: Path, tmp_path: Path, mirai: CaptureWindows, mirai_dst: CaptureWindows, kind: str, role: str
) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    srv = ModelServer(models)
    ports = (srv.start_grpc(), srv.start_rest()) if kind != "inprocess" else (0, 0)
    capture = mirai_dst if role == "dst" else mirai
    autoencoder, lstm = role_models(role)
    try:
        backend = backend_for(kind, models, ports, poll_s=0.2)
        x, seq = capture.features[:200], capture.sequences[:200]
        before = backend.score(x, seq, role)
        new = export_other_autoencoder(models, capture, role)
        assert new != before.versions[autoencoder]
        deadline = time.monotonic() + 60
        after = backend.score(x, seq, role)
        while after.versions[autoencoder] != new and time.monotonic() < deadline:
            time.sleep(0.2)
            after = backend.score(x, seq, role)
        assert after.versions == {autoencoder: new, lstm: before.versions[lstm]}
        assert after.cards[autoencoder]["version"] == new
        fresh = InProcessBackend(models).score(x, seq, role)  # loads the latest: the new version
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
