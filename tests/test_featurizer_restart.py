"""The featurizer against the real broker and Redis: the windows it streams equal the training code's
windows on the same real flows, and a worker killed mid-replay and restarted loses no flow and counts
none twice."""

import time

import pytest

from services import runner
from services.common.settings import Settings
from tests.paths import SAMPLE
from training.datasets import load_flows
from training.windows import build_windows

CAPTURE = SAMPLE / "CTU-Malware-Capture-8-1-labeled.csv.gz"


def wait_featurized(settings: Settings, published: int, timeout: float = 180.0) -> runner.Snapshot:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = runner.snapshot(settings)
        if snap.published == published and snap.featurizer_done():
            return snap
        time.sleep(0.5)
    pytest.fail(f"featurizer did not finish: {runner.snapshot(settings).line()}")


def streamed_windows(settings: Settings) -> dict[str, dict]:
    return {w["window_id"]: w for w in runner.read_topic(settings, "host-windows", "HostWindow") if w["final"]}


def replay_all(settings: Settings, run_service) -> int:
    with run_service(settings, "replay", str(CAPTURE)) as replay:
        assert replay.wait(120) == 0
    return runner.snapshot(settings).published


@pytest.mark.e2e
def test_killed_featurizer_resumes_without_loss_or_double_count(settings: Settings, run_service) -> None:
    flows, _ = load_flows([CAPTURE])
    offline = {
        w["window_id"]: w for role in ("src", "dst") for w in build_windows(flows, settings.window_seconds, role)
    }
    # Small batches, so the kill lands mid-stream with state and offsets in flight.
    settings = settings.model_copy(update={"featurizer_batch": 100})
    published = replay_all(settings, run_service)
    assert published == len(flows)

    with run_service(settings, "featurizer") as first:
        deadline = time.monotonic() + 120
        while runner.snapshot(settings).featurized < len(flows) // 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        runner.stop_process(first, kill=True)
    killed_at = runner.snapshot(settings).featurized
    assert 0 < killed_at < len(flows), "the kill must land mid-replay"

    with run_service(settings, "featurizer"):
        snap = wait_featurized(settings, published)
        windows = streamed_windows(settings)

    assert snap.featurized == snap.dst_featurized == len(flows), "every flow counted exactly once in each role"
    assert snap.late == snap.undecodable == snap.dst_rejected == 0
    assert snap.windows + snap.dst_windows == len(offline), "every window closed exactly once"
    assert set(windows) == set(offline)
    for wid, w in offline.items():
        assert windows[wid]["features"] == w["features"], wid
        assert windows[wid]["flow_count"] == w["flow_count"]
