"""The featurizer against the real broker and Redis: several workers share the partitions and together
produce the training code's windows; late and malformed flows go to the DLQ without stopping it."""

import json
import time

import pytest

from services import runner
from services.collector.publisher import FlowPublisher
from services.common import kafka, serde
from services.common.redis_client import sync_redis
from services.common.settings import Settings
from tests.paths import SAMPLE
from training.datasets import load_flows
from training.windows import build_windows

CAPTURES = [
    SAMPLE / f"{c}-labeled.csv.gz"
    for c in (
        "CTU-Honeypot-Capture-4-1",
        "CTU-Honeypot-Capture-5-1",
        "CTU-Honeypot-Capture-7-1",
        "CTU-Malware-Capture-42-1",
    )
]


def wait_for(settings: Settings, done, timeout: float = 180.0) -> runner.Snapshot:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = runner.snapshot(settings)
        if done(snap):
            return snap
        time.sleep(0.5)
    pytest.fail(f"featurizer did not finish: {runner.snapshot(settings).line()}")


def publish(settings: Settings, flows: list[dict]) -> None:
    publisher = FlowPublisher(settings)
    publisher.publish(flows)
    publisher.close()
    sync_redis(settings).hincrby(settings.key("collector", "stats"), "flows_published", len(flows))


@pytest.mark.e2e
def test_two_workers_split_the_hosts_and_produce_the_same_windows_as_one(settings: Settings, run_service) -> None:
    flows, _ = load_flows(CAPTURES)
    hosts = {f["src_addr"] for f in flows}
    offline = {
        w["window_id"]: w for role in ("src", "dst") for w in build_windows(flows, settings.window_seconds, role)
    }
    with run_service(settings, "featurizer"), run_service(settings, "featurizer"):
        time.sleep(8)  # both join the group before the flows arrive, so the partitions are split
        publish(settings, flows)
        snap = wait_for(settings, lambda s: s.published == len(flows) and s.featurizer_done())
    streamed = {w["window_id"]: w for w in runner.read_topic(settings, "host-windows", "HostWindow") if w["final"]}
    r = sync_redis(settings)
    workers = {r.hget(settings.key("feat", "src", "p", p), "worker") for p in range(settings.partitions)} - {None}
    assert len(hosts) > settings.partitions / 2, "enough hosts to spread over the partitions"
    assert len(workers) == 2, f"both workers applied partitions: {workers}"
    assert snap.featurized == snap.dst_featurized == len(flows)
    assert snap.windows + snap.dst_windows == len(offline)
    assert streamed.keys() == offline.keys()
    assert all(streamed[k]["features"] == offline[k]["features"] for k in offline)


@pytest.mark.e2e
def test_late_and_malformed_flows_land_in_the_dlq_and_the_agent_keeps_going(settings: Settings, run_service) -> None:
    flows, _ = load_flows([CAPTURES[0]])
    head, tail = flows[:200], flows[200:400]
    host_window = serde.encode("HostWindow", build_windows(head, 60)[0])
    late = dict(head[0], first_seen=head[0]["first_seen"] - 7200, last_seen=head[0]["first_seen"] - 7100)
    producer = kafka.producer(settings)
    with run_service(settings, "featurizer") as featurizer:
        publish(settings, head)
        wait_for(settings, lambda s: s.featurized >= len(head))
        topic = settings.topic("flows")
        key = head[0]["src_addr"].encode()  # same partition as the host, whose watermark is far past `late`
        for value in (b"not avro at all", serde.encode("Flow", head[0])[:-4], host_window, serde.encode("Flow", late)):
            producer.produce(topic, value, key)
        kafka.drain(producer)
        publish(settings, tail)  # the 4 written to flows alone are not counted as published: dst never sees them
        snap = wait_for(settings, lambda s: s.flows_accounted >= len(head) + len(tail) + 4 and s.featurizer_done())
        assert featurizer.poll() is None, "the featurizer survived"
    dlq = [json.loads(v) for v in runner.read_topic(settings, "flows.dlq", None)]
    reasons = sorted(d["reason"].split(" ")[0].rstrip(":") for d in dlq)
    assert snap.featurized == snap.dst_featurized == len(head) + len(tail)
    assert (snap.undecodable, snap.late) == (3, 1)
    assert snap.dst_rejected == 0, "the bad records were written to flows only"
    assert len(dlq) == 4
    assert reasons.count("late") == 1
    assert any("not Avro single-object" in d["reason"] for d in dlq)
    assert any("expected a Flow record, got HostWindow" in d["reason"] for d in dlq)
    assert all(d["topic"] == settings.topic("flows") and d["offset"] >= 0 and d["value_b64"] for d in dlq)
