"""Featurizer benchmark: flows/s of one worker and Redis memory per tracked host, on the embedded stack.

Publishes the bundled real captures, looped and shifted in time to reach --flows, then starts one
featurizer worker and times it from its first featurized flow until every flow is featurized in every
role (the consumer-group join and the idle close at the end are left out). Runs twice: with source- and
destination-host windows (the
default: each flow is windowed twice) and with source-host windows only. Prints the figures; `--json`
writes them too. Run: `make bench` or `python -m bench.featurizer_bench --flows 200000`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from rich.progress import Progress

from bench.procstats import group_usage
from services import runner
from services.collector.publisher import FlowPublisher
from services.common import stack
from services.common.kafka import ensure_topics
from services.common.redis_client import sync_redis
from services.common.settings import Settings
from training.datasets import load_flows

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "iot23"


def looped_flows(n: int) -> list[dict]:
    base, _ = load_flows(sorted(SAMPLE.glob("*.csv.gz")))
    span = base[-1]["first_seen"] - base[0]["first_seen"] + 3600
    out: list[dict] = []
    loop = 0
    while len(out) < n:
        shift = loop * span
        out.extend({**f, "first_seen": f["first_seen"] + shift, "last_seen": f["last_seen"] + shift} for f in base)
        loop += 1
    return out[:n]


def measure(base: Settings, flows: list[dict], roles: str) -> dict:
    """One worker on a fresh namespace: flows/s from its first featurized flow until all are featurized in
    every role, and the Redis history kept per tracked host."""
    settings = base.model_copy(update={"namespace": f"bench{uuid.uuid4().hex[:6]}-", "window_roles": roles})
    ensure_topics(settings)
    redis = sync_redis(settings)
    try:
        publisher = FlowPublisher(settings)
        publisher.publish(flows)
        publisher.close()
        redis.hincrby(settings.key("collector", "stats"), "flows_published", len(flows))
        proc = runner.start_service(settings, "featurizer", log_dir=base.run_dir / "logs" / roles.replace(",", "-"))
        try:
            first = None
            with Progress(transient=True) as progress:
                task = progress.add_task(f"featurizing ({roles})", total=len(flows) * len(settings.roles()))
                while True:
                    snap = runner.snapshot(settings)
                    now = time.monotonic()
                    done = snap.flows_accounted + snap.dst_featurized + snap.dst_rejected
                    if first is None and done:
                        first = now
                    progress.update(task, completed=done)
                    if done >= len(flows) * len(settings.roles()):  # the idle close at the end is not timed
                        break
                    if proc.poll() is not None:
                        raise SystemExit(f"featurizer exited: see {base.run_dir}/logs")
                    time.sleep(0.2)
            assert first is not None
            rate = len(flows) / (now - first)
            usage = group_usage(proc.pid)
            hist_keys = list(redis.scan_iter(match=f"{settings.namespace}fs:hist:*", count=1000))
            hist_bytes = sum(redis.memory_usage(k) or 0 for k in hist_keys)
        finally:
            runner.stop_process(proc)
        return {
            "roles": roles,
            "flows": len(flows),
            "windows": snap.windows + snap.dst_windows,
            "early_windows": snap.early_windows + snap.dst_early_windows,
            "flows_per_second_one_worker": round(rate),
            "tracked_host_roles": len(hist_keys),
            "redis_history_bytes_per_host": round(hist_bytes / max(1, len(hist_keys))),
            "worker_peak_rss_mb": round(usage.peak_rss_mb),
        }
    finally:
        keys = list(redis.scan_iter(match=f"{settings.namespace}fs:*", count=1000))
        for i in range(0, len(keys), 500):
            redis.delete(*keys[i : i + 500])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=200_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="fs-bench-"))
    base = Settings(kafka_bootstrap=f"127.0.0.1:{stack.free_port()}", run_dir=run_dir)
    info = stack.start_stack(base)
    base = base.model_copy(update={"kafka_bootstrap": info.kafka_bootstrap, "redis_url": info.redis_url})
    try:
        flows = looped_flows(args.flows)
        result = {"runs": [measure(base, flows, roles) for roles in ("src,dst", "src")]}
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        stack.stop_stack(base)


if __name__ == "__main__":
    main()
