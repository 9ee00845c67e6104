"""The collector over loopback UDP against the real broker and Redis: real packets become Flow records on
`flows`; garbage and truncated packets become counted, dead-lettered records; and real softflowd exports
of attack captures decode to the same flows, bytes and packets as nfdump's decoding of the same export."""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from services import runner
from services.collector.capture import read_datagrams
from services.common.redis_client import sync_redis
from services.common.settings import Settings
from tests.conftest import RunService
from tests.net import udp_queue_bytes
from tests.paths import REPO, SHARED_DATA, needs_shared

VECTORS = REPO / "tests" / "vectors"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(condition: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _wait_bound(port: int, proc: subprocess.Popen[bytes]) -> None:
    _wait_until(lambda: udp_queue_bytes(port) is not None, proc, f"a socket on 127.0.0.1:{port}")


def _send(datagrams: list[tuple[str, bytes]], port: int) -> None:
    """Send each (source address, payload) from that loopback address, paced so no buffer overflows."""
    socks: dict[str, socket.socket] = {}
    try:
        for src, payload in datagrams:
            if src not in socks:
                socks[src] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks[src].bind((src, 0))
            socks[src].sendto(payload, ("127.0.0.1", port))
            time.sleep(0.001)
    finally:
        for s in socks.values():
            s.close()


def _published(settings: Settings, want: int, timeout: float = 60.0) -> int:
    """flows_published in the collector's Redis stats, once it reaches `want` (or the timeout passes)."""
    stats = _stats(settings, lambda s: int(s.get("flows_published", 0)) >= want, timeout)
    return int(stats.get("flows_published", 0))


def test_listener_publishes_flows_and_dead_letters_bad_packets(settings: Settings, run_service: RunService) -> None:
    """Good packets become flows; a truncated v9 packet, garbage, a corrupt v5 header and a data set whose
    template never comes (held one second here) become counted DLQ records with exporter and raw bytes."""
    settings = settings.model_copy(update={"template_hold_s": 1.0})
    good = [dg.payload for p in ("goflow2/nfv9_template.bin", "goflow2/nfv9_data.bin", "goflow2/nfv5_data.bin")
            for dg in read_datagrams(VECTORS / p, "raw")]  # fmt: skip
    truncated = good[1][:700]
    garbage = b"\x00\x0a\xff\xff" + bytes(60)  # an IPFIX header claiming 65535 bytes
    corrupt_v5 = (VECTORS / "logstash-codec-netflow/netflow5_test_invalid01.dat").read_bytes()
    port = _free_udp_port()
    with run_service(settings, "collector", "--listen", f"127.0.0.1:{port}") as proc:
        _wait_bound(port, proc)
        _send([("127.0.0.1", p) for p in [*good, truncated, garbage, corrupt_v5]] + [("127.0.0.3", good[1])], port)
        assert _published(settings, 27) == 27  # 21 v9 + 6 v5 flows
        stats = _stats(settings, until=lambda s: int(s.get("dlq", 0)) >= 4)
        dlq = runner.read_topic(settings, "flows.dlq", None, idle=2.0)
        flows = runner.read_topic(settings, "flows", "Flow", idle=1.0)
    assert len(flows) == 27 and {f["exporter"] for f in flows} == {"127.0.0.1"}
    records = {r["reason"]: r for r in map(json.loads, dlq)}
    assert sorted(records) == ["bad_count", "bad_length", "no_template", "truncated"] and len(dlq) == 4
    assert records["no_template"]["exporter"] == "127.0.0.3"
    assert {r["exporter"] for reason, r in records.items() if reason != "no_template"} == {"127.0.0.1"}
    assert base64.b64decode(records["truncated"]["value_b64"]) == truncated
    counted = (stats["packets"], stats["dlq"], stats["error:truncated"], stats["error:no_template"])
    assert counted == ("7", "4", "1", "1")


def _stats(settings: Settings, until: Callable[[dict[str, str]], bool], timeout: float = 30.0) -> dict[str, str]:
    r = sync_redis(settings)
    deadline = time.monotonic() + timeout
    while True:
        stats = {k.decode(): v.decode() for k, v in r.hgetall(settings.key("collector", "stats")).items()}
        if until(stats) or time.monotonic() > deadline:
            r.close()
            return stats
        time.sleep(0.25)


# --- real exports: softflowd -> collector and nfdump ---------------------------------------------------------------

PCAPS = ["malicious-ssh-bruteforce.pcap", "amp.TCP.reflection.SYNACK.pcap"]
EXPORTERS = {"9": "127.0.0.1", "10": "127.0.0.2"}  # one loopback source per protocol version


@pytest.fixture(scope="session")
def flow_tools() -> None:
    """Debian's softflowd and nfdump, installed when missing (CI runs as root on Debian)."""
    missing = [t for t in ("softflowd", "nfcapd", "nfdump") if not shutil.which(t)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "softflowd", "nfdump"], check=True, env=env, timeout=600)
        missing = [t for t in ("softflowd", "nfcapd", "nfdump") if not shutil.which(t)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: apt-get install softflowd nfdump (as root)")


def softflowd_export(pcap: Path, version: str) -> list[bytes]:
    """The datagrams softflowd exports for a capture, caught on a local UDP socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind(("127.0.0.1", 0))
        s.settimeout(1.0)
        target = f"127.0.0.1:{s.getsockname()[1]}"
        # -c none: without it softflowd -r can wait forever on its control socket (see ../shared/data/README.md)
        cmd = ["softflowd", "-d", "-r", str(pcap), "-n", target, "-v", version, "-a", "-A", "milli", "-c", "none"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        out = []
        try:
            while True:
                out.append(s.recv(65535))
        except TimeoutError:
            pass
    return out


def nfdump_flows(datagrams: list[tuple[str, bytes]], workdir: Path) -> list[dict[str, str]]:
    port = _free_udp_port()
    flowdir = workdir / "nfcapd"
    flowdir.mkdir()
    proc = subprocess.Popen(
        ["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(flowdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_bound(port, proc)
        _send(datagrams, port)
        _wait_until(lambda: udp_queue_bytes(port) == 0, proc, "nfcapd to read the export")  # it writes on SIGTERM
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    out = subprocess.run(["nfdump", "-R", str(flowdir), "-o", "csv"], check=True, capture_output=True, text=True)
    return [row for row in csv.DictReader(out.stdout.splitlines()) if row.get("ra") and row.get("ibyt", "").isdigit()]


@needs_shared
@pytest.mark.parametrize("pcap", PCAPS)
def test_softflowd_exports_match_nfdump(
    pcap: str, flow_tools: None, settings: Settings, run_service: RunService, tmp_path: Path
) -> None:
    datagrams = [(EXPORTERS[v], d) for v in EXPORTERS for d in softflowd_export(SHARED_DATA / "pcaps" / pcap, v)]
    assert datagrams
    reference = nfdump_flows(datagrams, tmp_path)
    port = _free_udp_port()
    with run_service(settings, "collector", "--listen", f"127.0.0.1:{port}") as proc:
        _wait_bound(port, proc)
        _send(datagrams, port)
        _published(settings, len(reference))
        flows = runner.read_topic(settings, "flows", "Flow", idle=2.0)
    for version, exporter in EXPORTERS.items():
        ours = [f for f in flows if f["exporter"] == exporter]
        theirs = [r for r in reference if r["ra"] == exporter]
        assert theirs, f"nfdump decoded nothing for v{version}"
        summary = (len(ours), sum(f["bytes"] for f in ours), sum(f["packets"] for f in ours))
        assert summary == (len(theirs), sum(int(r["ibyt"]) for r in theirs), sum(int(r["ipkt"]) for r in theirs))
        key = Counter((f["src_addr"], f["dst_addr"], f["src_port"], f["protocol"], f["bytes"]) for f in ours)
        ref = Counter((r["sa"], r["da"], int(r["sp"]), _proto(r["pr"]), int(r["ibyt"])) for r in theirs)
        assert key == ref


def _proto(name: str) -> int:
    return {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMP6": 58}.get(name.strip(), int(name) if name.strip().isdigit() else -1)
