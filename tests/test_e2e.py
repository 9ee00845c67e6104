"""End to end on a real sample: replay -> featurizer -> scorer -> alerter, all four running as
processes against the real broker and Redis, with models trained on other real captures."""

import json

import pytest

from services import runner
from services.common.settings import Settings
from tests.paths import SAMPLE
from training.datasets import load_flows
from training.windows import build_windows

CAPTURE = SAMPLE / "CTU-Malware-Capture-8-1-labeled.csv.gz"
MALICIOUS_HOST = "192.168.100.113"  # the Hakai-infected device of IoT-23 capture 8-1


@pytest.mark.e2e
def test_sample_flows_all_the_way_to_alerts(settings: Settings, trained_models, run_service) -> None:
    settings = settings.model_copy(update={"models_dir": trained_models})
    flows, _ = load_flows([CAPTURE])
    offline_src = build_windows(flows, settings.window_seconds, "src")
    offline_dst = build_windows(flows, settings.window_seconds, "dst")
    offline = {w["window_id"] for w in offline_src + offline_dst}
    malicious_windows = {w["window_id"] for w in offline_src if w["malicious_flows"]}
    with (
        run_service(settings, "featurizer") as featurizer,
        run_service(settings, "scorer") as scorer,
        run_service(settings, "alerter") as alerter,
    ):
        with run_service(settings, "replay", str(CAPTURE)) as replay:
            assert replay.wait(120) == 0
        procs = {"featurizer": featurizer, "scorer": scorer, "alerter": alerter}
        snap = runner.wait_until_drained(settings, 300, procs)
        dlq = runner.read_topic(settings, "flows.dlq", None)
        all_scores = runner.read_topic(settings, "scores", "Score")
        scores = {s["window_id"]: s for s in all_scores if s["final"]}
        anomalies = runner.read_topic(settings, "anomalies", "Anomaly")

    # Every replayed flow is accounted for in both roles: featurized or in the DLQ.
    assert snap.published == len(flows)
    assert snap.featurized + snap.dst_featurized + len(dlq) == 2 * snap.published
    # Every window of both roles was scored once the services drained, each role by its own models, and busy
    # windows were also scored before they closed.
    assert set(scores) == offline
    assert {s["role"] for s in scores.values()} == {"src", "dst"}
    assert all(any(m.endswith("-dst") for m in s["model_versions"]) == (s["role"] == "dst") for s in scores.values())
    early = [s for s in all_scores if not s["final"]]
    assert early and all(s["window_id"].split("#")[0] in offline for s in early)
    # The infected host raises alerts; the alert count is plausible, not one per anomaly.
    alerts = [json.loads(line) for line in settings.alerts_file.read_text().splitlines()]
    assert alerts and any(a["host"] == MALICIOUS_HOST for a in alerts)
    assert 1 <= len(alerts) <= len(anomalies) == snap.anomalies
    assert len(alerts) < len(offline_src) / 10
    # The models find the attack: most flagged windows are truly malicious, and many malicious ones are flagged.
    metrics = runner.window_metrics(list(scores.values()))
    flagged = {wid for wid, s in scores.items() if s["is_anomaly"]}
    assert len(flagged & malicious_windows) > 0.5 * len(malicious_windows), metrics
    assert metrics["precision"] > 0.8, metrics
    for a in anomalies:
        assert a["explanation"] and a["models_fired"]
