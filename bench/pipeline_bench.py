"""Pipeline benchmark: end-to-end flows/s and flow-to-alert latency, against a raw Kafka baseline, same run.

On a dedicated embedded stack (its own Tansu broker, a fresh namespace):
1. preload: the bundled IoT-23 sample, looped and shifted in time, into `flows` (--flows records);
2. raw baseline (a): bench/raw_copy.py copies `flows` unchanged to another topic, as fast as it can;
3. pipeline drain (b): featurizer, scorer and alerter consume the same preloaded records; py-spy profiles
   each service meanwhile; flows/s through the featurizer (the first stage: every flow passes it) and
   the time until the last anomaly reached the alerter;
4. sustained rate: `flowsentinel replay --rate` steps from 0.5 to 1.15 x the drain rate, up to the first
   that is not sustained: a step is when the replay achieved its rate and the featurizer's lag did not
   keep growing;
5. time-to-alert: background load at half the sustained rate while real attack episodes (a port scan,
   a SYN flood, an SSH brute force, from ../shared/data) are injected with fresh addresses and times
   shifted to now; latency = first flow of an episode published -> first alert naming one of its hosts;
6. scaling: the featurizer alone with 1 and then 2 worker processes.
CPU s per 1,000 flows and peak RSS come from /proc of each service's process group.

    PYTHONPATH=. python bench/pipeline_bench.py [--flows 100000] [--no-docs]

Writes bench/results.json, bench/profiles/<service>.txt and the measured section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402

from bench import episodes, profiling  # noqa: E402
from bench.featurizer_bench import looped_flows  # noqa: E402
from bench.pipeline_report import render  # noqa: E402
from bench.procstats import GroupUsage, group_usage  # noqa: E402
from services import runner  # noqa: E402
from services.collector.publisher import FlowPublisher  # noqa: E402
from services.common import stack  # noqa: E402
from services.common.kafka import ensure_topics  # noqa: E402
from services.common.redis_client import sync_redis  # noqa: E402
from services.common.settings import REPO_ROOT, Settings  # noqa: E402
from services.demo import REPLAY_CAPTURES, TRAIN_CAPTURES, sample_files  # noqa: E402

BENCH = REPO_ROOT / "bench"
DOC = REPO_ROOT / "docs" / "benchmarks.md"
SHARED = REPO_ROOT.parent / "shared" / "data"
SCAN_LOG = SHARED / "stratosphere" / "002-zeek-scenario-port-scanning.conn.log"
RAMP = (0.5, 0.65, 0.8, 0.9, 1.0, 1.15)
BEGIN, END = "<!-- pipeline_bench: begin (generated) -->", "<!-- pipeline_bench: end -->"
AIM_RATE, AIM_P99 = 20_000, 2.0


class Run:
    """The stack, the settings of this run's namespace and the services it started."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.dir = Path(tempfile.mkdtemp(prefix="fs-pipeline-bench-"))
        self.base = Settings(kafka_bootstrap=f"127.0.0.1:{stack.free_port()}", run_dir=self.dir)
        self.info = stack.start_stack(self.base)
        self.settings = self.base.model_copy(
            update={
                "kafka_bootstrap": self.info.kafka_bootstrap,
                "redis_url": self.info.redis_url,
                "namespace": f"pbench{uuid.uuid4().hex[:6]}-",
                "alerts_file": self.dir / "alerts.jsonl",
                "alerts_stdout": False,
                "alert_sinks": "jsonl",
            }
        )
        ensure_topics(self.settings)
        self.services: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        proc = runner.start_service(self.settings, name, *args, log_dir=self.dir / "logs")
        self.services[name] = proc
        return proc

    def check(self) -> None:
        for name, proc in self.services.items():
            if name != "replay" and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}: see {self.dir}/logs/{name}.log")

    def usage(self) -> dict[str, GroupUsage]:
        out = {name: group_usage(proc.pid) for name, proc in self.services.items() if name != "replay"}
        out["broker (Tansu)"] = group_usage(self.info.broker.pid)
        if self.info.redis is not None:  # a Redis the stack did not start is shared: not ours to measure
            out["redis"] = group_usage(self.info.redis.pid)
        return out

    def close(self, keep: bool) -> None:
        """Stops everything; the run folder (logs, alerts) stays only when `keep` (after a failure)."""
        for proc in self.services.values():
            runner.stop_process(proc)
        r = sync_redis(self.settings)
        # This run's namespace and those of the worker-scaling runs, which extend it.
        keys = list(r.scan_iter(match=f"{self.settings.namespace}*fs:*", count=1000))
        for i in range(0, len(keys), 500):
            r.delete(*keys[i : i + 500])
        stack.stop_stack(self.base)
        if keep:
            self.console.print(f"logs kept in {self.dir}/logs")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def wait_for(what: str, check: Callable[[], bool], timeout: float, run: Run, poll: float = 0.2) -> float:
    """Waits until check() holds; returns the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    while not check():
        run.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s; logs in {run.dir}/logs")
        time.sleep(poll)
    return time.monotonic()


def models_dir(run: Run) -> tuple[Path, str]:
    from services.scorer.backends import MODEL_NAMES, latest_version

    given = REPO_ROOT / "models"
    if all(latest_version(given, m) is not None for m in MODEL_NAMES):
        return given, f"reused from {given}"
    from training.train_cli import train_and_export

    out = run.dir / "models"
    started = time.monotonic()
    train_and_export(sample_files(TRAIN_CAPTURES), out, run.settings, console=Console(file=io.StringIO()))
    return out, f"trained on the benign sample flows in {time.monotonic() - started:.0f} s"


def preload(settings: Settings, n: int) -> None:
    flows = looped_flows(n)
    publisher = FlowPublisher(settings)
    publisher.publish(flows)
    result = publisher.close()
    if result.delivery_errors:
        raise RuntimeError(f"preload: {result.delivery_errors} flows not delivered: {result.errors[:3]}")
    sync_redis(settings).hincrby(settings.key("collector", "stats"), "flows_published", n)


def raw_baseline(run: Run, n: int) -> dict[str, float]:
    source, target = run.settings.topic("flows"), run.settings.topic("flows-copy")
    ensure_topics(run.settings, [target])
    argv = [sys.executable, "-m", "bench.raw_copy", "--bootstrap", run.settings.kafka_bootstrap]
    argv += ["--source", source, "--target", target, "--expect", str(n)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": "."})
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["copied"] < n:
        raise RuntimeError(f"raw baseline copied {out['copied']} of {n} records")
    return {
        "flows_per_s": out["copied"] / out["seconds"],
        "cpu_s_per_1k_flows": 1000 * out["cpu_s"] / out["copied"],
        "peak_rss_mb": out["peak_rss_mb"],
    }


def idle(pid: int, quiet: float = 0.05, timeout: float = 120.0) -> None:
    """Waits until a process group used under `quiet` CPU seconds in one second: its start-up is over."""
    deadline = time.monotonic() + timeout
    last = group_usage(pid).cpu_s
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = group_usage(pid).cpu_s
        if now - last < quiet:
            return
        last = now


def pipeline_drain(run: Run, n: int, profile_s: float) -> dict[str, Any]:
    """Scorer and alerter start first and settle (TensorFlow's import is not throughput), then the
    featurizer meets the preloaded flows. Timed from its first featurized flow."""
    for name in ("scorer", "alerter"):
        run.start(name)
    for name in ("scorer", "alerter"):
        idle(run.services[name].pid)
    before = run.usage()
    run.start("featurizer")
    wait_for("first featurized flow", lambda: runner.snapshot(run.settings).featurized > 0, 120, run, 0.05)
    t0, snap0 = time.monotonic(), runner.snapshot(run.settings)
    before.update({"featurizer": group_usage(run.services["featurizer"].pid)})
    raw_dir = run.dir / "profiles"
    raw_dir.mkdir()
    spies = {
        name: profiling.start(proc.pid, profile_s, raw_dir / f"{name}.raw")
        for name, proc in run.services.items()
        if name in runner.STREAMING_SERVICES
    }
    t_featurized = wait_for("featurizer drain", lambda: runner.snapshot(run.settings).flows_done >= n, 900, run, 0.1)
    snap1 = runner.snapshot(run.settings)
    t_done = wait_for("pipeline drain", lambda: runner.snapshot(run.settings).drained(), 300, run, 0.1)
    after = run.usage()
    for spy in spies.values():
        if spy is not None:
            spy.wait(profile_s + 30)
    (BENCH / "profiles").mkdir(exist_ok=True)
    hot = {
        name: profiling.summarise(raw_dir / f"{name}.raw", BENCH / "profiles" / f"{name}.txt", name) for name in spies
    }
    counted = snap1.flows_done - snap0.flows_done
    snap = runner.snapshot(run.settings)
    return {
        "flows": n,
        "featurizer_flows_per_s": counted / (t_featurized - t0),
        "end_to_end_s": t_done - t0,
        "end_to_end_flows_per_s": (n - snap0.flows_done) / (t_done - t0),
        "windows": snap.windows,
        "early_windows": snap.early_windows,
        "scored": snap.scored,
        "anomalies": snap.anomalies,
        "alerts": snap.alerts,
        "cpu_s_per_1k_flows": {
            name: round(1000 * (after[name].cpu_s - before[name].cpu_s) / (n - snap0.flows_done), 3)
            for name in after
            if name in before
        },
        "hot_spots": {name: [[f, round(s, 3)] for f, s in spots[:5]] for name, spots in hot.items()},
    }


def featurizer_workers(run: Run, n: int, workers: int) -> float:
    """Flows/s of `workers` featurizer processes alone, in a namespace of their own. They join first and
    the flows are published after, so no rebalance falls inside the timing."""
    settings = run.settings.model_copy(update={"namespace": f"{run.settings.namespace}w{workers}-"})
    ensure_topics(settings)
    procs = [
        # A run folder each, as separate deployments would have.
        runner.start_service(
            settings.model_copy(update={"run_dir": run.dir / f"w{workers}-{i}"}),
            "featurizer",
            log_dir=run.dir / "logs" / f"w{workers}-{i}",
        )
        for i in range(workers)
    ]
    try:
        for proc in procs:
            idle(proc.pid)
        time.sleep(settings.session_timeout_s)  # the group settled on its assignment
        preload(settings, n)
        wait_for("first featurized flow", lambda: runner.snapshot(settings).featurized > 0, 120, run, 0.05)
        t0, c0 = time.monotonic(), runner.snapshot(settings).flows_done
        t1 = wait_for("featurizer drain", lambda: runner.snapshot(settings).flows_done >= n, 600, run, 0.1)
        return (n - c0) / (t1 - t0)
    finally:
        for proc in procs:
            runner.stop_process(proc)


def lag(run: Run) -> int:
    snap = runner.snapshot(run.settings)
    return snap.published - snap.flows_done


def rate_step(run: Run, rate: float, seconds: float) -> dict[str, Any]:
    """One step of the ramp: lag samples each second while `replay --rate` runs."""
    r = sync_redis(run.settings)
    r.delete(run.settings.key("replay", "stats"))
    published0 = runner.snapshot(run.settings).published
    files = [str(f) for f in sample_files(REPLAY_CAPTURES)]
    proc = run.start("replay", "--rate", str(rate), "--duration", str(seconds), *files)
    wait_for("replay start", lambda: runner.snapshot(run.settings).published > published0, 120, run, 0.05)
    start, samples = time.monotonic(), []
    while proc.poll() is None:
        samples.append((time.monotonic() - start, lag(run)))
        run.check()
        time.sleep(1.0)
    stats = {k.decode(): float(v) for k, v in r.hgetall(run.settings.key("replay", "stats")).items()}
    achieved = stats.get("achieved_rate", 0.0)
    tail = [s for s in samples if s[0] >= seconds / 3]
    growth = float(np.polyfit([t for t, _ in tail], [v for _, v in tail], 1)[0]) if len(tail) >= 3 else float("inf")
    return {
        "target": rate,
        "achieved": achieved,
        "lag_growth_per_s": growth,
        "max_lag": max((v for _, v in samples), default=0),
        # Bounded: the lag grew by less than 5% of the offered rate (what a consumer keeping up shows,
        # its batches making the lag saw-tooth), and the load generator delivered what was asked.
        "sustained": achieved >= 0.95 * rate and growth < 0.05 * rate,
    }


def ramp(run: Run, drain_rate: float, seconds: float) -> dict[str, Any]:
    steps = []
    for factor in RAMP:
        rate = max(100.0, round(drain_rate * factor, -2))
        run.console.print(f"  ramp: {rate:,.0f} flows/s for {seconds:.0f} s")
        step = rate_step(run, rate, seconds)
        steps.append(step)
        run.console.print(
            f"    achieved {step['achieved']:,.0f}/s, lag growth {step['lag_growth_per_s']:,.0f} flows/s, "
            f"max lag {step['max_lag']:,} -> {'sustained' if step['sustained'] else 'NOT sustained'}"
        )
        wait_for("lag back to zero", lambda: lag(run) <= 0, 180, run, 0.5)
        if not step["sustained"]:
            break
    sustained = max((s["achieved"] for s in steps if s["sustained"]), default=0.0)
    return {"method": "rate ramp with replay --rate", "steps": steps, "sustained_flows_per_s": sustained}


class AlertWatcher(threading.Thread):
    """Tails the JSONL sink; remembers the wall time each host was first named by an alert."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.first: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        # Alerts written before the watch began are not about what is injected after it.
        offset, partial = (self.path.stat().st_size if self.path.exists() else 0), b""
        while not self.stop.is_set():
            if self.path.exists():
                with self.path.open("rb") as f:
                    f.seek(offset)
                    data = f.read()
                offset += len(data)
                now = time.time()
                lines = (partial + data).split(b"\n")
                partial = lines.pop()
                for line in lines:
                    if line.strip():
                        self.first.setdefault(json.loads(line)["host"], now)
            time.sleep(0.02)


def injection_starts(eps: list[episodes.Episode], rounds: int, gap: float) -> list[tuple[float, episodes.Episode]]:
    """(offset s, episode) of each injection: grouped by episode, one every `gap` s; a flood (a flow per
    spoofed packet, thousands a second) only after the previous injection ended and last, so that its
    volume does not delay the alerts of the others."""
    out: list[tuple[float, episodes.Episode]] = []
    at, end = 0.0, 0.0
    for ep in sorted(eps, key=lambda e: e.name == "flood"):
        for _ in range(rounds):
            if out:
                at = max(at + gap, end + gap) if ep.name == "flood" else at + gap
            out.append((at, ep))
            end = max(end, at + ep.span)
    return out


def time_to_alert(run: Run, eps: list[episodes.Episode], background: float, rounds: int, gap: float) -> dict:
    """Injects the episodes under background load, each flow published as an exporter would send it: when
    it ends, at most 20 s after it starts (an active timeout within the featurizer's lateness)."""
    plan = injection_starts(eps, rounds, gap)
    total_s = max(at + ep.span for at, ep in plan) + 90
    watcher = AlertWatcher(run.settings.alerts_file)
    watcher.start()
    files = [str(f) for f in sample_files(REPLAY_CAPTURES)]
    run.start("replay", "--rate", str(background), "--duration", str(total_s), *files)
    published0 = runner.snapshot(run.settings).published
    wait_for("background load", lambda: runner.snapshot(run.settings).published > published0, 120, run, 0.05)
    time.sleep(5)  # the background settles into its rate first
    t0 = time.time() + 1
    schedule: list[tuple[float, int, dict]] = []
    injected = []
    for i, (at, ep) in enumerate(plan):
        flows, hosts = episodes.injection(ep, i, t0 + at)
        injected.append({"episode": ep.name, "source": ep.source, "flows": len(flows), "hosts": hosts})
        schedule += [(min(f["last_seen"], f["first_seen"] + 20.0), i, f) for f in flows]
    schedule.sort(key=lambda s: s[0])
    publisher, first_sent = FlowPublisher(run.settings), {}
    redis = sync_redis(run.settings)
    k = 0
    while k < len(schedule):
        now = time.time()
        if schedule[k][0] > now:
            publisher.producer.poll(0)
            time.sleep(min(0.01, schedule[k][0] - now))
            continue
        due = k
        while due < len(schedule) and schedule[due][0] <= now:  # everything due goes in one batch
            due += 1
        publisher.publish(flow for _, _, flow in schedule[k:due])
        sent = time.time()
        for _, i, _ in schedule[k:due]:
            first_sent.setdefault(i, sent)
        redis.hincrby(run.settings.key("collector", "stats"), "flows_published", due - k)
        k = due
    publisher.close()
    deadline = time.time() + 60
    while time.time() < deadline and not all(inj["hosts"] & watcher.first.keys() for inj in injected):
        run.check()
        time.sleep(0.5)
    watcher.stop.set()
    runner.stop_process(run.services.pop("replay"))
    wait_for("lag back to zero after the injections", lambda: lag(run) <= 0, 600, run, 0.5)
    for i, inj in enumerate(injected):
        seen = [watcher.first[h] for h in inj.pop("hosts") if h in watcher.first]
        inj["latency_s"] = round(min(seen) - first_sent[i], 3) if seen else None
    return {"background_flows_per_s": background, "injections": injected, **latency_stats(injected)}


def latency_stats(injected: list[dict]) -> dict[str, Any]:
    def pct(values: list[float]) -> dict[str, float | int | None]:
        if not values:
            return {"n": 0, "p50": None, "p95": None, "p99": None}
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {"n": len(values), "p50": round(p50, 2), "p95": round(p95, 2), "p99": round(p99, 2)}

    alerted = [i["latency_s"] for i in injected if i["latency_s"] is not None]
    per_type = {}
    for name in dict.fromkeys(i["episode"] for i in injected):
        mine = [i for i in injected if i["episode"] == name]
        per_type[name] = {
            **pct([i["latency_s"] for i in mine if i["latency_s"] is not None]),
            "injected": len(mine),
            "source": mine[0]["source"],
        }
    return {"latency_s": pct(alerted), "missed": len(injected) - len(alerted), "per_episode": per_type}


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mb": mem, "kernel": platform.release()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=100_000, help="records preloaded for the drain measurements")
    parser.add_argument("--step-seconds", type=float, default=15.0, help="length of one rate-ramp step")
    parser.add_argument("--rounds", type=int, default=3, help="injections of each attack episode")
    parser.add_argument("--gap", type=float, default=4.0, help="seconds between injections")
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=BENCH / "results.json")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite the section in docs/benchmarks.md")
    args = parser.parse_args()
    console = Console()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    run = Run(console)
    failed = True
    try:
        models, how = models_dir(run)
        console.print(f"models: {how}")
        run.settings = run.settings.model_copy(update={"models_dir": models})
        console.print(f"preloading {args.flows:,} flows (IoT-23 sample, looped)")
        preload(run.settings, args.flows)
        console.print("(a) raw baseline: consume flows -> produce unchanged")
        results["raw_baseline"] = raw_baseline(run, args.flows)
        console.print(f"    {results['raw_baseline']['flows_per_s']:,.0f} flows/s")
        console.print("(b) FlowSentinel pipeline: drain of the same records, profiled")
        results["pipeline_drain"] = pipeline_drain(run, args.flows, args.profile_seconds)
        drain_rate = results["pipeline_drain"]["featurizer_flows_per_s"]
        console.print(f"    {drain_rate:,.0f} flows/s through the featurizer")
        results["ratio_to_raw"] = drain_rate / results["raw_baseline"]["flows_per_s"]
        console.print("sustained rate (featurizer lag bounded):")
        results["sustained"] = ramp(run, drain_rate, args.step_seconds)
        if SCAN_LOG.exists():
            console.print("time-to-alert: real attack episodes injected under background load")
            eps = episodes.load_episodes(SHARED / "pcaps", SCAN_LOG)
            background = max(100.0, round(results["sustained"]["sustained_flows_per_s"] / 2, -2))
            results["time_to_alert"] = time_to_alert(run, eps, background, args.rounds, args.gap)
        else:
            console.print(f"time-to-alert: skipped, {SHARED} is absent (the attack captures live there)")
            results["time_to_alert"] = None
        console.print("scaling: featurizer alone, 1 and 2 worker processes")
        results["featurizer_workers"] = {str(w): round(featurizer_workers(run, args.flows // 2, w)) for w in (1, 2)}
        console.print(f"    flows/s by workers: {results['featurizer_workers']}")
        usage = run.usage()
        results["peak_rss_mb"] = {name: round(u.peak_rss_mb, 1) for name, u in usage.items()}
        results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        failed = False
    finally:
        run.close(keep=failed)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    console.print(render(results, AIM_RATE, AIM_P99))
    if not args.no_docs:
        write_doc(render(results, AIM_RATE, AIM_P99))
        console.print(f"updated {DOC}")


def write_doc(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + f"\n\n## Pipeline: throughput and time-to-alert\n\n{block}\n"
    DOC.write_text(text)


if __name__ == "__main__":
    main()
