"""Running the pipeline as an operator would: the services as separate processes, their progress read
from the counters they keep in Redis, and the results read back from the topics. Used by
`flowsentinel demo` and by the end-to-end tests, so both exercise exactly the same path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.common import serde
from services.common.redis_client import sync_redis
from services.common.settings import Settings, to_env
from services.featurizer.store import FLOW_COUNTERS, stats_field

STREAMING_SERVICES = ("featurizer", "scorer", "alerter")


def start_service(settings: Settings, command: str, *args: str, log_dir: Path) -> subprocess.Popen:
    """`flowsentinel <command>` in its own process group, configured only through FLOWSENTINEL_* vars."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{command}.log", "ab")  # noqa: SIM115 - owned by the child from here on
    env = {**os.environ, **to_env(settings), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", command, *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_process(proc: subprocess.Popen, timeout: float = 20.0, kill: bool = False) -> int:
    """SIGTERM (or SIGKILL with kill=True) the whole process group; escalate after `timeout`."""
    if proc.poll() is None:
        with _suppress_missing():
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with _suppress_missing():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


class _suppress_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, *_: Any) -> bool:
        return exc_type is ProcessLookupError


@dataclass(frozen=True)
class Snapshot:
    published: int
    featurized: int
    late: int
    undecodable: int
    invalid: int
    windows: int
    early_windows: int
    open_windows: int
    dst_expected: int  # flows the dst role must account for: all published, or 0 when dst windows are off
    dst_featurized: int
    dst_rejected: int  # late, undecodable or invalid in the dst role
    dst_windows: int
    dst_early_windows: int
    scored: int
    rejected_windows: int
    anomalies: int
    alerter_consumed: int
    alerts: int

    @property
    def flows_accounted(self) -> int:
        return self.featurized + self.late + self.undecodable + self.invalid

    @property
    def flows_done(self) -> int:
        """Flows through the featurizer in every role (featurized or sent to the DLQ)."""
        dst = self.dst_featurized + self.dst_rejected
        return min(self.flows_accounted, dst) if self.dst_expected else self.flows_accounted

    @property
    def all_windows(self) -> int:
        """Every window the scorer must score: closed and early, both roles."""
        return self.windows + self.early_windows + self.dst_windows + self.dst_early_windows

    def featurizer_done(self) -> bool:
        return (
            self.flows_accounted >= self.published
            and self.dst_featurized + self.dst_rejected >= self.dst_expected
            and self.open_windows == 0
        )

    def drained(self) -> bool:
        return (
            self.published > 0
            and self.featurizer_done()
            and self.scored + self.rejected_windows >= self.all_windows
            and self.alerter_consumed >= self.anomalies
        )

    def line(self) -> str:
        return (
            f"flows {self.flows_accounted}/{self.published} featurized | windows {self.windows} "
            f"(+{self.early_windows} early, dst {self.dst_windows}+{self.dst_early_windows}, open {self.open_windows})"
            f" | scored {self.scored} | "
            f"anomalies {self.anomalies} | alerts {self.alerts}"
        )


def snapshot(settings: Settings) -> Snapshot:
    r = sync_redis(settings)

    def stats(service: str) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in r.hgetall(settings.key(service, "stats")).items()}

    collector, feat, scorer, alerter = (stats(s) for s in ("collector", "featurizer", "scorer", "alerter"))
    slots = [(role, p) for role in settings.roles() for p in range(settings.partitions)]
    open_windows = sum(int(r.zcard(settings.key("feat", role, "open", p))) for role, p in slots)
    return Snapshot(
        published=collector.get("flows_published", 0),
        featurized=feat.get("flows_featurized", 0),
        late=feat.get("flows_late", 0),
        undecodable=feat.get("flows_undecodable", 0),
        invalid=feat.get("flows_invalid", 0),
        windows=feat.get("windows_emitted", 0),
        early_windows=feat.get("windows_early", 0),
        open_windows=open_windows,
        dst_expected=collector.get("flows_published", 0) if "dst" in settings.roles() else 0,
        dst_featurized=feat.get(stats_field("dst", "flows_featurized"), 0),
        dst_rejected=sum(feat.get(stats_field("dst", f"flows_{kind}"), 0) for kind in FLOW_COUNTERS),
        dst_windows=feat.get(stats_field("dst", "windows_emitted"), 0),
        dst_early_windows=feat.get(stats_field("dst", "windows_early"), 0),
        scored=scorer.get("windows_scored", 0),
        rejected_windows=scorer.get("windows_rejected", 0),
        anomalies=scorer.get("anomalies", 0),
        alerter_consumed=alerter.get("consumed", 0),
        alerts=alerter.get("alerts", 0),
    )


def wait_until_drained(
    settings: Settings,
    timeout: float,
    processes: dict[str, subprocess.Popen],
    on_progress: Callable[[Snapshot], None] = lambda _: None,
    settle: float = 2.0,
) -> Snapshot:
    """Poll the services' counters until every published flow went all the way through, and stayed so
    for `settle` seconds. Raises if a service died or time ran out."""
    deadline = time.monotonic() + timeout
    drained_since: float | None = None
    while True:
        snap = snapshot(settings)
        on_progress(snap)
        for name, proc in processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see its log")
        now = time.monotonic()
        if snap.drained():
            drained_since = drained_since or now
            if now - drained_since >= settle:
                return snap
        else:
            drained_since = None
        if now > deadline:
            raise TimeoutError(f"pipeline not drained after {timeout:.0f}s: {snap.line()}")
        time.sleep(0.5)


def read_topic(settings: Settings, topic: str, schema: str | None, idle: float = 2.0, limit: float = 60.0) -> list[Any]:
    """Every record on a topic from the beginning, until it is idle. Partitions are assigned directly:
    no consumer group, so no join to wait for and no offsets left behind."""
    name = settings.topic(topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
    consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
    out: list[Any] = []
    last = start = time.monotonic()
    try:
        while time.monotonic() - last < idle and time.monotonic() - start < limit:
            for m in consumer.consume(5000, 0.5):
                if m.error():
                    continue
                out.append(serde.decode_as(m.value(), schema) if schema else m.value())
                last = time.monotonic()
    finally:
        consumer.close()
    return out


def window_metrics(scores: list[dict[str, Any]], role: str = "src") -> dict[str, float]:
    """Window-level detection quality over one role's closed windows: an alerted window is one the models
    flagged; it is truly malicious when any of its flows is labelled malicious. Unlabelled windows are left out."""
    latest = {s["window_id"]: s for s in scores if s["final"] and s["role"] == role}.values()
    tp = fp = fn = tn = 0
    for s in latest:
        if not s["labelled_flows"]:
            continue
        malicious = s["malicious_flows"] > 0
        tp += s["is_anomaly"] and malicious
        fp += s["is_anomaly"] and not malicious
        fn += (not s["is_anomaly"]) and malicious
        tn += (not s["is_anomaly"]) and not malicious
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr = fp / (fp + tn) if fp + tn else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall, "f1": f1, "fpr": fpr}
