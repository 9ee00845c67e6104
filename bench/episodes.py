"""Real attack episodes for time-to-alert: packet captures turned into NetFlow by softflowd and decoded by
our own decoders, and a Zeek log of a port scan. Each episode is cut to its busiest 30 s of event time,
and every injection gets fresh addresses so that each is a new incident."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.collector.decoders import PacketDecoder
from services.collector.listener import set_rcvbuf
from training.datasets import load_flows

Flow = dict[str, Any]
PEAK_SECONDS = 30.0


@dataclass(frozen=True)
class Episode:
    name: str  # scan, flood, bruteforce
    source: str  # the capture it came from
    flows: list[Flow]  # sorted by first_seen

    @property
    def span(self) -> float:
        return self.flows[-1]["first_seen"] - self.flows[0]["first_seen"]


def ensure_softflowd() -> str:
    """Path of softflowd; as root on Debian, installs the package when missing (as CI machines start bare)."""
    found = shutil.which("softflowd")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise RuntimeError("softflowd is not installed (Debian: apt-get install softflowd)")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "softflowd"]):
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return shutil.which("softflowd") or "softflowd"


def pcap_flows(pcap: Path, timeout: float = 120.0) -> list[Flow]:
    """softflowd reads the capture and exports IPFIX to a socket of ours; PacketDecoder decodes it.
    Flags as in /work/shared/data/README.md: -a flow times from the capture, -c none avoids a hang with -r."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    set_rcvbuf(sock, 64 << 20)  # softflowd sends as fast as it reads the file: no datagram may be dropped
    argv = [ensure_softflowd(), "-d", "-r", str(pcap), "-n", f"127.0.0.1:{sock.getsockname()[1]}"]
    argv += ["-v", "10", "-a", "-A", "milli", "-c", "none"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    decoder, flows, deadline = PacketDecoder(), [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data, _ = sock.recvfrom(65535)
            except TimeoutError:
                if proc.poll() is not None:  # exited and nothing more in flight
                    break
                continue
            flows += decoder.decode(data, "softflowd", time.monotonic()).flows
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        sock.close()
    return sorted(flows, key=lambda f: f["first_seen"])


def busiest(flows: list[Flow], seconds: float = PEAK_SECONDS) -> list[Flow]:
    """The flows of the `seconds`-long stretch of event time holding the most flows (input sorted)."""
    best, lo = (0, 0), 0
    for hi, flow in enumerate(flows):
        while flow["first_seen"] - flows[lo]["first_seen"] > seconds:
            lo += 1
        if hi + 1 - lo > best[1] - best[0]:
            best = (lo, hi + 1)
    return flows[best[0] : best[1]]


def episode(name: str, source: Path, flows: list[Flow]) -> Episode:
    if not flows:
        raise ValueError(f"{source}: no flows")
    return Episode(name, source.name, busiest(flows))


def load_episodes(pcaps: Path, scan_log: Path) -> list[Episode]:
    return [
        episode("scan", scan_log, load_flows([scan_log])[0]),
        episode("flood", pcaps / "pkt.TCP.synflood.spoofed.pcap", pcap_flows(pcaps / "pkt.TCP.synflood.spoofed.pcap")),
        episode(
            "bruteforce",
            pcaps / "malicious-ssh-bruteforce.pcap",
            pcap_flows(pcaps / "malicious-ssh-bruteforce.pcap"),
        ),
    ]


def injection(ep: Episode, n: int, start: float) -> tuple[list[Flow], set[str]]:
    """The episode's flows moved to begin at `start`, every address renamed into 10.(100+n).0.0/16, so
    each injection is new hosts (a spoofed flood's thousands of sources too); returns the flows and the
    renamed addresses, the hosts an alert about this injection can name: its sources (source-host windows)
    and its targets (destination-host windows: a spoofed flood's victim)."""
    if not 0 <= n < 150:
        raise ValueError("injection number must be in 0..149")
    base = int(ipaddress.ip_address(f"10.{100 + n}.0.0"))
    names: dict[str, str] = {}

    def rename(addr: str) -> str:
        if addr not in names:
            if len(names) >= 65534:
                raise ValueError(f"{ep.name}: more than 65,534 addresses")
            names[addr] = str(ipaddress.ip_address(base + 1 + len(names)))
        return names[addr]

    shift = start - ep.flows[0]["first_seen"]
    out = [
        {
            **f,
            "src_addr": rename(f["src_addr"]),
            "dst_addr": rename(f["dst_addr"]),
            "first_seen": f["first_seen"] + shift,
            "last_seen": max(f["first_seen"], f["last_seen"]) + shift,
            "label": "malicious",
            "attack_type": ep.name,
        }
        for f in ep.flows
    ]
    return out, {f[field] for f in out for field in ("src_addr", "dst_addr")}
