"""The scorer as a process on the real broker and Redis: real IoT-23 host windows in `host-windows`, scores
read back from `scores`. Each window role is scored by its own models, and a role without models goes to
the DLQ while the other is scored. A model server stopped mid-replay loses nothing; a new model version
dropped into the folder scores the windows that come after it, without a restart."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services import runner
from services.common import kafka, serde
from services.common.redis_client import sync_redis
from services.common.settings import Settings
from services.common.stack import free_port
from services.runner import read_topic
from services.scorer.backends import InProcessBackend, role_models
from tests.model_server import ModelServer
from tests.paths import SAMPLE
from tests.test_scorer_backends import export_other_autoencoder
from training.datasets import load_flows
from training.sequences import pad_history
from training.train_cli import capture_windows
from training.windows import build_windows

MIRAI = SAMPLE / "CTU-Malware-Capture-34-1-labeled.csv.gz"


@pytest.fixture(scope="module")
def windows() -> list[dict[str, Any]]:
    flows, _ = load_flows([MIRAI])
    return build_windows(flows, 60.0)[:400]


@pytest.fixture(scope="module")
def both_roles(windows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """src windows and dst windows (the hosts that received the capture's flows), 100 of each."""
    flows, _ = load_flows([MIRAI])
    return {"src": windows[:100], "dst": build_windows(flows, 60.0, role="dst")[:100]}


def interleaved(both_roles: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """src, dst, src, dst, ...: every batch holds both roles."""
    return [w for pair in zip(both_roles["src"], both_roles["dst"], strict=True) for w in pair]


def expected_scores(models: Path, role: str, windows: list[dict[str, Any]], k: int) -> Any:
    """What that role's models make of windows that have no history in Redis: scored here directly."""
    features = np.asarray([w["features"] for w in windows], dtype=np.float32)
    sequences = np.stack([pad_history([w["features"]], k) for w in windows])
    return InProcessBackend(models).score(features, sequences, role)


def produce(settings: Settings, windows: list[dict[str, Any]]) -> None:
    producer = kafka.producer(settings)
    for w in windows:
        producer.produce(settings.topic("host-windows"), serde.encode("HostWindow", w), w["host"].encode())
    kafka.drain(producer)


def scored(settings: Settings) -> int:
    return int(sync_redis(settings).hget(settings.key("scorer", "stats"), "windows_scored") or 0)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting after {timeout:.0f}s for {what}")
        time.sleep(0.2)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening yet
        return 0, str(exc)


def model_version_gauge(port: int, model: str) -> float | None:
    _, text = get(port, "/metrics")
    match = re.search(rf'^flowsentinel_model_version{{model="{model}"}} (\S+)$', text, re.M)
    return float(match[1]) if match else None


def test_model_server_stopped_mid_replay_loses_no_window(
    settings: Settings, run_service: Any, trained_models: Path, windows: list[dict[str, Any]]
) -> None:
    server = ModelServer(trained_models)
    grpc_port = server.start_grpc()
    metrics_port = free_port()
    settings = settings.model_copy(
        update={
            "scorer_backend": "grpc",
            "tfserving_grpc": f"127.0.0.1:{grpc_port}",
            "models_dir": trained_models,
            "scorer_batch": 50,
            "model_retry_max_s": 1.0,
            "metrics_port": metrics_port,
        }
    )
    first, rest = windows[:150], windows[150:]
    try:
        with run_service(settings, "scorer"):
            produce(settings, first)
            wait_for(lambda: scored(settings) == len(first), "the first windows to be scored")
            assert get(metrics_port, "/readyz")[0] == 200

            server.stop()  # the model server goes down while the replay goes on
            produce(settings, rest)
            wait_for(lambda: get(metrics_port, "/readyz")[0] == 503, "/readyz to report the model server down")
            code, body = get(metrics_port, "/readyz")
            assert "model server unavailable" in body, (code, body)
            assert scored(settings) == len(first)  # nothing scored while down...
            assert get(metrics_port, "/healthz")[0] == 200  # ...and alive: waiting, not broken

            server.start_grpc(grpc_port)
            wait_for(lambda: scored(settings) == len(windows), "every window to be scored after the restart")
            wait_for(lambda: get(metrics_port, "/readyz")[0] == 200, "/readyz to report ready again")
            _, metrics_text = get(metrics_port, "/metrics")
    finally:
        server.stop()
    scores = read_topic(settings, "scores", "Score")
    published = Counter(s["window_id"] for s in scores)
    assert set(published) == {w["window_id"] for w in windows}  # none lost
    assert max(published.values()) == 1  # and none published twice
    retries = re.search(r'^flowsentinel_model_retries_total{backend="grpc"} (\S+)$', metrics_text, re.M)
    assert retries and float(retries[1]) >= 1


def test_new_model_version_scores_later_windows_without_restart(
    settings: Settings, run_service: Any, trained_models: Path, tmp_path: Path, windows: list[dict[str, Any]]
) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    metrics_port = free_port()
    settings = settings.model_copy(update={"models_dir": models, "model_poll_s": 0.5, "metrics_port": metrics_port})
    before, probes, after = windows[:50], windows[50:250], windows[250:300]
    with run_service(settings, "scorer"):
        produce(settings, before)
        wait_for(lambda: scored(settings) == len(before), "the first windows to be scored")
        old = int(model_version_gauge(metrics_port, "autoencoder") or 0)

        mirai = capture_windows(MIRAI, 60.0, settings.history_windows)
        new = export_other_autoencoder(models, mirai)
        # One window at a time (far below the batch size: each is scored on its own, promptly) until a score
        # says the new version made it.
        for n, probe in enumerate(probes, start=1):
            produce(settings, [probe])
            wait_for(lambda n=n: scored(settings) == len(before) + n, "a probe window to be scored")
            if model_version_gauge(metrics_port, "autoencoder") == new:
                break
        assert model_version_gauge(metrics_port, "autoencoder") == new
        produce(settings, after)
        wait_for(lambda: scored(settings) == len(before) + n + len(after), "the later windows to be scored")

    by_id = {s["window_id"]: s for s in read_topic(settings, "scores", "Score")}
    for group, version in ((before, old), (after, new)):
        got = [by_id[w["window_id"]] for w in group]
        assert {s["model_versions"]["autoencoder"] for s in got} == {str(version)}
        # ...and the scores are that version's: the model in the folder, scored here directly.
        folder = models if version == new else trained_models
        expected = expected_scores(folder, "src", group, settings.history_windows).autoencoder_scores
        np.testing.assert_allclose([s["autoencoder_score"] for s in got], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", ["inprocess", "grpc", "rest"])
def test_each_role_is_scored_by_its_own_models(
    settings: Settings,
    run_service: Any,
    trained_models: Path,
    both_roles: dict[str, list[dict[str, Any]]],
    backend: str,
) -> None:
    server = ModelServer(trained_models)
    grpc_port, rest_port = server.start_grpc(), server.start_rest()
    settings = settings.model_copy(
        update={
            "models_dir": trained_models,
            "scorer_backend": backend,
            "tfserving_grpc": f"127.0.0.1:{grpc_port}",
            "tfserving_rest": f"http://127.0.0.1:{rest_port}",
        }
    )
    mixed = interleaved(both_roles)
    try:
        produce(settings, mixed)
        with run_service(settings, "scorer"):
            wait_for(lambda: scored(settings) == len(mixed), "every window of both roles to be scored")
    finally:
        server.stop()
    by_id = {s["window_id"]: s for s in read_topic(settings, "scores", "Score")}
    assert set(by_id) == {w["window_id"] for w in mixed}
    for role, group in both_roles.items():
        got = [by_id[w["window_id"]] for w in group]
        autoencoder, lstm = role_models(role)
        assert {s["role"] for s in got} == {role}
        assert {tuple(sorted(s["model_versions"])) for s in got} == {tuple(sorted((autoencoder, lstm)))}
        expected = expected_scores(trained_models, role, group, settings.history_windows)
        np.testing.assert_allclose([s["autoencoder_score"] for s in got], expected.autoencoder_scores, rtol=1e-5)
        np.testing.assert_allclose([s["lstm_score"] for s in got], expected.lstm_scores, rtol=1e-5)
        assert {s["autoencoder_threshold"] for s in got} == {expected.cards[autoencoder]["threshold"]}
        assert {s["lstm_threshold"] for s in got} == {expected.cards[lstm]["threshold"]}
    # The dst windows were not read by the src models: those would have scored them otherwise.
    dst = both_roles["dst"]
    src_view = expected_scores(trained_models, "src", dst, settings.history_windows).autoencoder_scores
    assert not np.allclose([by_id[w["window_id"]]["autoencoder_score"] for w in dst], src_view, rtol=1e-3)
    for anomaly in read_topic(settings, "anomalies", "Anomaly"):
        assert set(anomaly["models_fired"]) <= set(role_models(anomaly["score"]["role"]))


def test_windows_of_a_role_without_models_go_to_the_dlq(
    settings: Settings,
    run_service: Any,
    trained_models: Path,
    tmp_path: Path,
    both_roles: dict[str, list[dict[str, Any]]],
) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained_models, models, ignore=shutil.ignore_patterns("*-dst"))  # trained before dst existed
    settings = settings.model_copy(update={"models_dir": models, "scorer_batch": 20})  # 10 batches, both roles in each
    mixed = interleaved(both_roles)
    src, dst = both_roles["src"], both_roles["dst"]
    produce(settings, mixed)
    with run_service(settings, "scorer") as scorer:
        wait_for(
            lambda: runner.snapshot(settings).rejected_windows == len(dst) and scored(settings) == len(src),
            "the src windows to be scored and the dst windows set aside",
        )
        assert scorer.poll() is None  # no crash
    assert {s["window_id"] for s in read_topic(settings, "scores", "Score")} == {w["window_id"] for w in src}
    dlq = [json.loads(v) for v in read_topic(settings, "host-windows.dlq", None)]
    assert sorted(d["window_id"] for d in dlq) == sorted(w["window_id"] for w in dst)
    assert all(d["reason"].startswith("no dst models to score it: no autoencoder-dst or lstm-dst model") for d in dlq)
    log = (tmp_path / "services" / "scorer.log").read_text()
    assert len(re.findall(r"dst windows go to \S*host-windows\.dlq until their models are there", log)) == 1, log
