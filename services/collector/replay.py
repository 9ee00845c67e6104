"""`flowsentinel replay FILE...`: publish dataset flows into the flows topic, in event-time order,
as fast as possible or at a multiple of real time. Labels travel along for evaluation only."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.collector.publisher import FlowPublisher
from services.common import log
from services.common.redis_client import sync_redis
from services.common.settings import Settings, load_settings
from training.datasets import UnknownFormatError, load_flows

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


def parse_speed(text: str) -> float | None:
    if text == "max":
        return None
    speed = float(text)
    if speed <= 0:
        raise ValueError("--speed must be 'max' or a positive multiple of real time")
    return speed


def replay(settings: Settings, files: list[Path], speed: float | None, shift_to_now: bool, loop: bool) -> int:
    logger = log.setup("replay")
    flows, stats = load_flows(files)
    for reason, n in stats.dropped.items():
        logger.warning("dropped %d rows: %s", n, reason)
    for note, n in stats.notes.items():
        logger.warning("%d rows: %s", n, note)
    if not flows:
        raise SystemExit(f"no flows in {', '.join(map(str, files))}")
    span = flows[-1]["first_seen"] - flows[0]["first_seen"]
    shift = time.time() - flows[0]["first_seen"] if shift_to_now else 0.0
    publisher = FlowPublisher(settings)
    redis = sync_redis(settings)
    total = 0
    with Progress(
        TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    ) as progress:
        task = progress.add_task("flows", total=len(flows))
        while True:
            for chunk in _chunks(paced(flows, speed, shift), 2000):
                publisher.publish(chunk)
                redis.hincrby(settings.key("collector", "stats"), "flows_published", len(chunk))
                total += len(chunk)
                progress.advance(task, len(chunk))
            if not loop:
                break
            shift += span + 1.0
            progress.reset(task)
    result = publisher.close()
    if result.delivery_errors:
        logger.error("%d flows not delivered: %s", result.delivery_errors, "; ".join(result.errors))
        return 1
    logger.info("published %d flows from %d rows (%d dropped)", total, stats.rows, sum(stats.dropped.values()))
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
        return replay(load_settings(), args.files, parse_speed(args.speed), args.shift_to_now, args.loop)
    except (UnknownFormatError, FileNotFoundError, ValueError) as exc:
        # Bad input fails here, before any connection to the broker or Redis is made.
        print(f"flowsentinel replay: {exc}", file=sys.stderr)
        return 2
