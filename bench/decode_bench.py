"""Collector benchmark: decode flows/s on one core for NetFlow v5, v9 and IPFIX (real vector packets,
templates learned first, then the datagrams decoded over and over, template sets included where the
exporter sends them in every datagram), and end to end: UDP -> `flowsentinel collector` -> Kafka, on a
private embedded stack (its own Tansu broker; the Redis of the settings) so nothing else is disturbed.

    python bench/decode_bench.py [--seconds 3] [--e2e-flows 300000]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services.collector.capture import read_datagrams
from services.collector.decoders import PacketDecoder
from services.common.redis_client import sync_redis
from services.common.settings import Settings, to_env
from services.common.stack import free_port, start_stack, stop_stack

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors"
V9 = ["goflow2/nfv9_template.bin", "goflow2/nfv9_data.bin"]
CASES = {
    "v5 (Juniper MX80, 29 flows/datagram)": (["logstash-codec-netflow/netflow5_test_juniper_mx80.dat"], 0),
    "v9 (ASR9k via goflow2, 21 flows/datagram)": (V9, 1),
    "IPFIX (softflowd: 5 templates, 1 option record, 16 flows per datagram)": (
        ["softflowd-local/softflowd-ipfix-abs.pcap"],
        0,
    ),
}


def decode_rate(files: list[str], data_from: int, seconds: float) -> float:
    decoder = PacketDecoder()
    packets = [dg for f in files for dg in read_datagrams(VECTORS / f, "bench")]
    for dg in packets:
        decoder.decode(dg.payload, dg.exporter, 0.0)
    data = [(dg.payload, dg.exporter) for dg in packets[data_from:]]
    flows = 0
    start = time.process_time()
    while time.process_time() - start < seconds:
        for payload, exporter in data:
            flows += len(decoder.decode(payload, exporter, 1.0).flows)
    return flows / (time.process_time() - start)


def e2e_rate(total: int) -> tuple[float, int, int]:
    """Send `total` v9 flows to a collector as fast as one Python sender can; the time runs from the first
    datagram until the collector has every flow delivered to the broker (it drains its producer on exit).
    Returns (flows/s, flows published, kernel drops)."""
    run_dir = Path(tempfile.mkdtemp(prefix="fs-bench-"))
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        run_dir=run_dir,
        namespace=f"bench{os.getpid()}-",
        collector_rcvbuf=64 << 20,  # the whole burst fits: the figure measures the collector, not the buffer
    )
    start_stack(settings, timeout=60)
    packets = [dg.payload for f in V9 for dg in read_datagrams(VECTORS / f, "bench")]
    port = free_port()
    env = {**os.environ, **to_env(settings)}
    log = (run_dir / "collector.log").open("wb")
    cmd = [sys.executable, "-m", "services.cli", "collector", "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    redis = sync_redis(settings)
    key = settings.key("collector", "stats")
    try:
        while b"listening on" not in (run_dir / "collector.log").read_bytes():
            time.sleep(0.2)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.sendto(packets[0], ("127.0.0.1", port))
        n_data = total // 21
        start = time.monotonic()
        for _ in range(n_data):
            sender.sendto(packets[1], ("127.0.0.1", port))
        stats: dict[bytes, bytes] = {}
        while time.monotonic() - start < 300:
            stats = redis.hgetall(key)
            if int(stats.get(b"flows_published", 0)) >= n_data * 21 or int(stats.get(b"kernel_drops", 0)):
                break
            time.sleep(0.05)
        proc.terminate()
        proc.wait(120)
        elapsed = time.monotonic() - start
        stats = redis.hgetall(key)
        published = int(stats.get(b"flows_published", 0))
        return published / elapsed, published, int(stats.get(b"kernel_drops", 0))
    finally:
        if proc.poll() is None:
            proc.kill()
        redis.delete(key)
        redis.close()
        stop_stack(settings)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--e2e-flows", type=int, default=300_000, help="0 skips the end-to-end run")
    args = p.parse_args()
    for name, (files, data_from) in CASES.items():
        print(f"decode {name}: {decode_rate(files, data_from, args.seconds):,.0f} flows/s per core", flush=True)
    if args.e2e_flows:
        rate, published, drops = e2e_rate(args.e2e_flows)
        print(f"end to end UDP -> collector -> Kafka: {rate:,.0f} flows/s ({published:,} flows, {drops} kernel drops)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
