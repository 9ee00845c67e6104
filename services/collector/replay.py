"""`flowsentinel replay FILE...`: publish dataset flows into the flows topic, in event-time order,
as fast as possible or at a multiple of real time. Labels travel along for evaluation only.

`--rate N --duration D` is the load-test mode: the flows, looped, are published at N flows/s of wall
time for D seconds, each stamped with the wall-clock time it is published (dataset order and flow
durations kept), and the rate achieved is printed and stored in Redis (`<ns>fs:replay:stats`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.collector.publisher import FlowPublisher
from services.common import log, preflight
from services.common.redis_client import sync_redis
from services.common.settings import Settings, load_settings
from training.datasets import UnknownFormatError, UnusableFileError, load_flows

Flow = dict[str, Any]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "files",
        nargs="+",
        type=Path,
        help="flow files, plain or .gz, format detected from the header: Zeek conn.log (TSV/CSV/JSON), NF-v2/v3 "
        "NetFlow CSV, CICFlowMeter CSV (CIC-IDS2017/2018), UNSW-NB15 CSV, CTU Argus binetflow, nfdump CSV",
    )
    p.add_argument("--speed", default="max", help="'max', or a multiple of real time (1 = as recorded)")
    p.add_argument("--loop", action="store_true", help="replay again and again, shifted forward each time")
    p.add_argument("--shift-to-now", action="store_true", help="move flow times so the replay starts now")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="load test: flows/s of wall time, looped, each stamped with the time it is sent (overrides --speed)",
    )
    p.add_argument("--duration", type=float, default=60.0, help="with --rate: seconds to publish for")


def paced(flows: list[Flow], speed: float | None, shift: float, clock: Any = time) -> Iterator[Flow]:
    """Flows with times shifted by `shift`, released no faster than `speed` x real time (None: at once)."""
    if not flows:
        return
    t0_event, t0_wall = flows[0]["first_seen"], clock.monotonic()
    for flow in flows:
        if speed:
            due = t0_wall + (flow["first_seen"] - t0_event) / speed
            delay = due - clock.monotonic()
            if delay > 0:
                clock.sleep(delay)
        if shift:
            flow = {**flow, "first_seen": flow["first_seen"] + shift, "last_seen": flow["last_seen"] + shift}
        yield flow


def rate_batches(
    rate: float, duration: float, clock: Any = time, tick: float = 0.02, most: int = 5000
) -> Iterator[int]:
    """How many flows to send now, repeatedly, so that flow i leaves at start + i/rate and no flow after
    `duration` seconds. A sender that falls behind catches up in batches of at most `most`, so the
    achieved rate shows its real limit instead of one late burst."""
    if rate <= 0 or duration <= 0:
        raise ValueError("--rate and --duration must be positive")
    total = int(rate * duration)
    start, sent = clock.monotonic(), 0
    while sent < total:
        due = min(total, int(rate * (clock.monotonic() - start)) + 1)
        if due > sent:
            n = min(due - sent, most)
            sent += n
            yield n
        else:
            # At least 1 ms: sleeping a rounding error's worth would spin.
            clock.sleep(max(0.001, min(tick, sent / rate - (clock.monotonic() - start))))


def looped(flows: list[Flow]) -> Iterator[Flow]:
    while True:
        yield from flows


def stamped(flow: Flow, now: float) -> Flow:
    """The flow moved to start at `now`, its duration kept."""
    return {**flow, "first_seen": now, "last_seen": now + max(0.0, flow["last_seen"] - flow["first_seen"])}


def parse_speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        speed = float("nan")
    if not 1e-6 <= speed <= 1e6:  # also rejects nan and inf
        raise ValueError(f"--speed must be 'max' or a multiple of real time between 1e-6 and 1e6, not {text!r}")
    return speed


class DeliveredCounter:
    """Adds the flows the broker acknowledged to the collector's Redis counter, which the demo and the
    tests read. Best effort: Redis being away must not stop (and so duplicate) a replay."""

    def __init__(self, settings: Settings, publisher: FlowPublisher, logger: Any) -> None:
        self.redis = sync_redis(settings)
        self.key = settings.key("collector", "stats")
        self.publisher, self.logger = publisher, logger
        self.reported = 0
        self.warned = False

    def report(self) -> None:
        delta = self.publisher.stats.delivered - self.reported
        if not delta:
            return
        try:
            self.redis.hincrby(self.key, "flows_published", delta)
            self.reported += delta
        except RedisError as exc:
            if not self.warned:
                self.logger.warning("cannot update the published-flows counter in Redis (%s); replay goes on", exc)
                self.warned = True


def _load(files: list[Path], logger: Any) -> list[Flow]:
    flows, stats = load_flows(files)
    for reason, n in stats.dropped.items():
        logger.warning("dropped %d rows: %s", n, reason)
    for note, n in stats.notes.items():
        logger.warning("%d rows: %s", n, note)
    if not flows:
        raise SystemExit(f"no flows in {', '.join(map(str, files))}")
    logger.info("loaded %d flows from %d rows (%d dropped)", len(flows), stats.rows, sum(stats.dropped.values()))
    return flows


def replay(settings: Settings, files: list[Path], speed: float | None, shift_to_now: bool, loop: bool) -> int:
    logger = log.setup("replay")
    flows = _load(files, logger)
    span = flows[-1]["first_seen"] - flows[0]["first_seen"]
    shift = time.time() - flows[0]["first_seen"] if shift_to_now else 0.0
    preflight.check(settings, redis=False)
    publisher = FlowPublisher(settings)
    counter = DeliveredCounter(settings, publisher, logger)
    total = 0
    with Progress(
        TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    ) as progress:
        task = progress.add_task("flows", total=len(flows))
        while True:
            for chunk in _chunks(paced(flows, speed, shift), 2000):
                publisher.publish(chunk)
                counter.report()
                total += len(chunk)
                progress.advance(task, len(chunk))
            if not loop:
                break
            shift += span + 1.0
            progress.reset(task)
    result = publisher.close()
    counter.report()
    if result.delivery_errors:
        logger.error("%d flows not delivered: %s", result.delivery_errors, "; ".join(result.errors))
        return 1
    logger.info("published %d flows", total)
    return 0


def replay_at_rate(settings: Settings, files: list[Path], rate: float, duration: float) -> int:
    logger = log.setup("replay")
    source = looped(_load(files, logger))
    preflight.check(settings, redis=False)
    publisher = FlowPublisher(settings)
    counter = DeliveredCounter(settings, publisher, logger)
    redis = sync_redis(settings)
    total = 0
    start = time.monotonic()
    with Progress(
        TextColumn(f"replay at {rate:,.0f} flows/s"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as progress:
        task = progress.add_task("flows", total=int(rate * duration))
        for n in rate_batches(rate, duration):
            now = time.time()
            publisher.publish(stamped(next(source), now) for _ in range(n))
            counter.report()
            total += n
            progress.advance(task, n)
        result = publisher.close()
        counter.report()
    # Delivered, not merely queued: the rate counts the time until the broker acknowledged the last flow.
    elapsed = time.monotonic() - start
    achieved = total / elapsed if elapsed > 0 else 0.0
    redis.hset(
        settings.key("replay", "stats"),
        mapping={"target_rate": rate, "achieved_rate": round(achieved, 1), "flows": total, "seconds": elapsed},
    )
    print(f"replay: {total} flows in {elapsed:.1f} s = {achieved:,.0f} flows/s (target {rate:,.0f})")
    if result.delivery_errors:
        logger.error("%d flows not delivered: %s", result.delivery_errors, "; ".join(result.errors))
        return 1
    return 0


def _chunks(items: Iterator[Flow], size: int) -> Iterator[list[Flow]]:
    chunk: list[Flow] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run(args: argparse.Namespace) -> int:
    try:
        if args.rate is not None:
            if args.rate <= 0 or args.duration <= 0:
                raise ValueError("--rate and --duration must be positive")
            return replay_at_rate(load_settings(), args.files, args.rate, args.duration)
        return replay(load_settings(), args.files, parse_speed(args.speed), args.shift_to_now, args.loop)
    except (UnknownFormatError, UnusableFileError, FileNotFoundError, ValueError, preflight.PreflightError) as exc:
        # Bad input fails here, before any connection to the broker or Redis is made.
        print(f"flowsentinel replay: {exc}", file=sys.stderr)
        return 2
