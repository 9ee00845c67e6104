"""Collector benchmark: decode flows/s on one core for NetFlow v5, v9 and IPFIX (real vector packets,
templates learned first, data datagrams decoded over and over), and end to end UDP -> collector ->
Kafka flows/s on the embedded stack (`flowsentinel stack up` first).

    python bench/decode_bench.py [--seconds 3] [--e2e-flows 200000]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

from services.collector.capture import read_datagrams
from services.collector.decoders import PacketDecoder
from services.common.redis_client import sync_redis
from services.common.settings import load_settings

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors"
CASES = {
    "v5 (Juniper MX80, 29 flows/datagram)": (["logstash-codec-netflow/netflow5_test_juniper_mx80.dat"], 0),
    "v9 (ASR9k via goflow2, 21 flows/datagram)": (["goflow2/nfv9_template.bin", "goflow2/nfv9_data.bin"], 1),
    "IPFIX (softflowd, 16 flows/datagram)": (["softflowd-local/softflowd-ipfix-abs.pcap"], 0),
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


def e2e_rate(total: int) -> tuple[float, int]:
    """Send v9 datagrams to a collector process as fast as it keeps up, time until Redis counts them all."""
    settings = load_settings()
    packets = [dg.payload for f in CASES["v9 (ASR9k via goflow2, 21 flows/datagram)"][0] for dg in read_datagrams(
        VECTORS / f, "bench")]  # fmt: skip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = sync_redis(settings)
    key = settings.key("collector", "stats")
    before = int(redis.hget(key, "flows_published") or 0)
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "collector", "--listen", f"127.0.0.1:{port}"])
    try:
        time.sleep(8)  # imports and broker connection
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.sendto(packets[0], ("127.0.0.1", port))
        n_data = total // 21
        start = time.monotonic()
        for i in range(n_data):
            sender.sendto(packets[1], ("127.0.0.1", port))
            if i % 50 == 0:  # pace to the collector: ~1 ms per 50 datagrams keeps the socket buffer from overflowing
                time.sleep(0.001)
        want = before + n_data * 21
        while int(redis.hget(key, "flows_published") or 0) < want and time.monotonic() - start < 120:
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        got = int(redis.hget(key, "flows_published") or 0) - before
        return got / elapsed, n_data * 21 - got
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--e2e-flows", type=int, default=200_000, help="0 skips the end-to-end run")
    args = p.parse_args()
    for name, (files, data_from) in CASES.items():
        print(f"decode {name}: {decode_rate(files, data_from, args.seconds):,.0f} flows/s per core")
    if args.e2e_flows:
        rate, lost = e2e_rate(args.e2e_flows)
        print(f"end to end UDP -> collector -> Kafka: {rate:,.0f} flows/s ({lost} flows not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
