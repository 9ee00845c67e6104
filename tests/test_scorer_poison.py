"""A host window the models cannot read goes to host-windows.dlq with the reason; the rest of its batch
is scored and the scorer keeps running (no crash loop on a poison record)."""

import json
import math
import time

import pytest

from services import runner
from services.common import kafka, serde
from services.common.settings import Settings
from services.scorer.scoring import window_problem
from tests.paths import SAMPLE
from training.datasets import load_flows
from training.windows import build_windows


def real_windows(n: int) -> list[dict]:
    flows, _ = load_flows([SAMPLE / "CTU-Honeypot-Capture-4-1-labeled.csv.gz"])
    return build_windows(flows, 60)[:n]


def broken(windows: list[dict]) -> list[dict]:
    a, b, c = (dict(w) for w in windows[:3])
    a["features"] = a["features"][:2]
    b["features"] = [math.nan] * len(b["features"])
    c["feature_set"] = "v999"
    for w, tag in ((a, "short"), (b, "nan"), (c, "set")):
        w["window_id"] += f"#{tag}"
    return [a, b, c]


def test_window_problems_are_named() -> None:
    good = real_windows(3)
    assert [window_problem(w) for w in good] == [None, None, None]
    reasons = [window_problem(w) for w in broken(good)]
    assert "2 features" in reasons[0] and "NaN" in reasons[1] and "v999" in reasons[2]


@pytest.mark.e2e
def test_poison_windows_go_to_the_dlq_and_scoring_goes_on(settings: Settings, trained_models, run_service) -> None:
    settings = settings.model_copy(update={"models_dir": trained_models})
    good = real_windows(5)
    producer = kafka.producer(settings)
    for w in [*broken(good), *good]:
        producer.produce(settings.topic("host-windows"), serde.encode("HostWindow", w), w["host"].encode())
    kafka.drain(producer)
    with run_service(settings, "scorer") as scorer:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            snap = runner.snapshot(settings)
            if snap.scored >= len(good) and snap.rejected_windows >= 3:
                break
            assert scorer.poll() is None, "the scorer died"
            time.sleep(0.5)
        assert scorer.poll() is None
    dlq = [json.loads(v) for v in runner.read_topic(settings, "host-windows.dlq", None)]
    scores = runner.read_topic(settings, "scores", "Score")
    assert (snap.scored, snap.rejected_windows) == (len(good), 3)
    assert sorted(d["window_id"].split("#")[1] for d in dlq) == ["nan", "set", "short"]
    assert {s["window_id"] for s in scores} == {w["window_id"] for w in good}
