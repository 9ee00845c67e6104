"""The replay file formats: each reader on a real excerpt committed under tests/data/ (runs anywhere),
on the real files in ../shared/data (needs_shared), on a wrong header (a clear UnknownFormatError, and
`flowsentinel replay` exits 2 with it before touching the broker), and on malformed rows (dropped and
counted by reason, never an exception).

Expected values are read from the files themselves with the csv module, or are the counts the datasets'
own documentation gives (../shared/data/README.md), never numbers copied from a run of the readers.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services import runner
from services.common import serde
from services.common.settings import Settings
from services.common.stack import free_port
from tests.conftest import RunService
from tests.net import udp_queue_bytes
from tests.paths import REPO, SHARED_DATA, needs_shared
from training.datasets import READERS, ReadStats, UnknownFormatError, UnusableFileError, detect_format, read_flows
from training.datasets import rows as rowlib
from training.datasets.unsw import COLUMNS as UNSW_COLUMNS

DATA = REPO / "tests" / "data"
NF = DATA / "nf-bot-iot-v2.head50.csv.gz"
CIC = DATA / "cicids2017-improved.benign25-portscan25.csv"
UNSW = DATA / "unsw-nb15-sampled.head40-malicious10.csv"
ARGUS = DATA / "ctu-test5-mixed.head50.binetflow"
NFDUMP = DATA / "nfdump-ssh-bruteforce-ipfix.csv"
ZEEK_JSON = DATA / "stratosphere-002-port-scanning.head50.conn.log"
ZEEK_TSV = DATA / "stratosphere-008-mixed.head50.conn.log.labeled"
# Each excerpt, its format, and a column name whose renaming makes the header unrecognisable.
EXCERPTS = [
    (NF, "nf-csv", "IPV4_SRC_ADDR"),
    (CIC, "cicflowmeter", "Dst Port"),
    (UNSW, "unsw-nb15", "sbytes"),
    (ARGUS, "argus", "SrcAddr"),
    (NFDUMP, "nfdump", "ibyt"),
    (ZEEK_JSON, "zeek", "id.orig_h"),
    (ZEEK_TSV, "zeek", "id.orig_h"),
]


def read(path: Path) -> tuple[list[dict], ReadStats]:
    stats = ReadStats()
    return list(read_flows(path, stats)), stats


def raw_rows(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


def epoch(text: str, fmt: str) -> float:
    return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()


def write_text(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def read_text(path: Path) -> str:
    return gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()


# --- each format on its committed real excerpt -------------------------------------------------------


@pytest.mark.parametrize(("path", "fmt", "_"), EXCERPTS, ids=[p.name for p, _, _ in EXCERPTS])
def test_excerpt_detected(path: Path, fmt: str, _: str) -> None:
    assert detect_format(path) == fmt


def test_nf_v2_excerpt() -> None:
    flows, stats = read(NF)
    raw = raw_rows(NF)
    assert stats.rows == stats.flows == len(raw) == 50 and not stats.dropped
    # No start time in NF-v2: synthesised from row order, and said so for every row.
    assert stats.notes[rowlib.SYNTHETIC_TIME_NOTE] == 50
    assert [f["first_seen"] for f in flows] == sorted({f["first_seen"] for f in flows})
    for flow, row in zip(flows, raw, strict=True):
        assert (flow["src_addr"], flow["src_port"]) == (row["IPV4_SRC_ADDR"], int(row["L4_SRC_PORT"]))
        assert (flow["dst_addr"], flow["dst_port"]) == (row["IPV4_DST_ADDR"], int(row["L4_DST_PORT"]))
        assert (flow["protocol"], flow["bytes"], flow["packets"]) == tuple(
            int(row[k]) for k in ("PROTOCOL", "IN_BYTES", "IN_PKTS")
        )
        assert (flow["bytes_rev"], flow["packets_rev"]) == (int(row["OUT_BYTES"]), int(row["OUT_PKTS"]))
        assert flow["label"] == ("malicious" if row["Label"] == "1" else "benign")
        assert flow["attack_type"] == (row["Attack"] if row["Label"] == "1" else None)
    first = flows[0]
    # Row 1: 192.168.100.149:43600 -> 192.168.100.6:80, CLIENT_TCP_FLAGS 2 (SYN), SERVER_TCP_FLAGS 20 (RST|ACK),
    # FLOW_DURATION_MILLISECONDS 4293498 = 2**32 us - 1469 ms wrapped: the reader uses DURATION_IN, 1469 ms.
    assert (first["tcp_flags"], first["tcp_flags_rev"]) == (2, 20)
    assert first["last_seen"] - first["first_seen"] == pytest.approx(1.469)
    assert stats.notes[next(n for n in stats.notes if "wrapped" in n)] == sum(
        float(r["FLOW_DURATION_MILLISECONDS"]) >= 2**31 / 1000 for r in raw
    )


def test_nf_v3_times(tmp_path: Path) -> None:
    """NF-v3 adds FLOW_START_MILLISECONDS / FLOW_END_MILLISECONDS: the v2 excerpt's rows with those two
    columns added (start 1 s apart from 2024-01-01, end = start + DURATION_IN) take their times from them."""
    raw = raw_rows(NF)
    base_ms = 1_704_067_200_000
    path = tmp_path / "nf-v3.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, [*raw[0], "FLOW_START_MILLISECONDS", "FLOW_END_MILLISECONDS"])
        writer.writeheader()
        for i, row in enumerate(raw):
            start = base_ms + 1000 * i
            writer.writerow(
                {**row, "FLOW_START_MILLISECONDS": start, "FLOW_END_MILLISECONDS": start + int(row["DURATION_IN"])}
            )
    flows, stats = read(path)
    assert stats.flows == 50 and not stats.notes and not stats.dropped
    for i, (flow, row) in enumerate(zip(flows, raw, strict=True)):
        assert flow["first_seen"] == (base_ms + 1000 * i) / 1000
        assert flow["last_seen"] == pytest.approx(flow["first_seen"] + int(row["DURATION_IN"]) / 1000)


def test_repeated_header_is_not_a_row(tmp_path: Path) -> None:
    text = read_text(CIC)
    header, *body = text.splitlines(keepends=True)
    path = write_text(tmp_path / "concatenated.csv", header + "".join(body[:10]) + header + "".join(body[10:]))
    flows, stats = read(path)
    assert stats.rows == stats.flows == 50 and not stats.dropped


def test_cicflowmeter_improved_excerpt() -> None:
    flows, stats = read(CIC)
    raw = raw_rows(CIC)
    assert stats.rows == stats.flows == len(raw) == 50 and not stats.dropped and not stats.notes
    assert Counter(f["label"] for f in flows) == {"benign": 25, "malicious": 25}
    assert {f["attack_type"] for f in flows if f["label"] == "malicious"} == {"Portscan"}
    for flow, row in zip(flows, raw, strict=True):
        assert flow["flow_id"] == row["id"]
        assert flow["first_seen"] == pytest.approx(epoch(row["Timestamp"], "%Y-%m-%d %H:%M:%S.%f"))
        assert flow["last_seen"] - flow["first_seen"] == pytest.approx(int(row["Flow Duration"]) / 1e6, abs=1e-6)
        assert (flow["bytes"], flow["packets"]) == (
            int(row["Total Length of Fwd Packet"]),
            int(row["Total Fwd Packet"]),
        )
        assert (flow["bytes_rev"], flow["packets_rev"]) == (
            int(row["Total Length of Bwd Packet"]),
            int(row["Total Bwd packets"]),
        )
    # Row 1: 192.168.10.15:59164 -> 68.67.178.196:443 TCP; FIN, SYN, PSH and ACK counts are non-zero, RST zero.
    first = flows[0]
    assert (first["src_addr"], first["src_port"], first["dst_addr"], first["dst_port"], first["protocol"]) == (
        "192.168.10.15", 59164, "68.67.178.196", 443, 6,
    )  # fmt: skip
    assert first["tcp_flags"] == 1 | 2 | 8 | 16


# The improved excerpt's columns as the original CIC-IDS2017 (leading spaces, 'day/month/year h:m' times)
# and CSE-CIC-IDS2018 (abbreviated names, no addresses) releases spell them: the same real rows, renamed.
CIC2017_NAMES = {
    "Src IP": " Source IP", "Src Port": " Source Port", "Dst IP": " Destination IP", "Dst Port": " Destination Port",
    "Protocol": " Protocol", "Timestamp": " Timestamp", "Flow Duration": " Flow Duration",
    "Total Fwd Packet": " Total Fwd Packets", "Total Bwd packets": " Total Backward Packets",
    "Total Length of Fwd Packet": "Total Length of Fwd Packets",
    "Total Length of Bwd Packet": " Total Length of Bwd Packets",
    "Label": " Label", "SYN Flag Count": " SYN Flag Count",
}  # fmt: skip
CIC2018_NAMES = {
    "Dst Port": "Dst Port", "Protocol": "Protocol", "Timestamp": "Timestamp", "Flow Duration": "Flow Duration",
    "Total Fwd Packet": "Tot Fwd Pkts", "Total Bwd packets": "Tot Bwd Pkts",
    "Total Length of Fwd Packet": "TotLen Fwd Pkts", "Total Length of Bwd Packet": "TotLen Bwd Pkts",
    "SYN Flag Count": "SYN Flag Cnt", "Label": "Label",
}  # fmt: skip


@pytest.mark.parametrize(
    ("names", "time_format"),
    [(CIC2017_NAMES, "%d/%m/%Y %H:%M"), (CIC2018_NAMES, "%d/%m/%Y %H:%M:%S")],
    ids=["cic-ids2017-original", "cse-cic-ids2018"],
)
def test_cicflowmeter_other_releases(tmp_path: Path, names: dict[str, str], time_format: str) -> None:
    raw = raw_rows(CIC)
    path = tmp_path / "renamed.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names.values())
        for row in raw:
            when = datetime.strptime(row["Timestamp"], "%Y-%m-%d %H:%M:%S.%f")
            writer.writerow([when.strftime(time_format) if k == "Timestamp" else row[k] for k in names])
    assert detect_format(path) == "cicflowmeter"
    flows, stats = read(path)
    assert stats.flows == 50 and not stats.dropped
    for flow, row in zip(flows, raw, strict=True):
        when = datetime.strptime(row["Timestamp"], "%Y-%m-%d %H:%M:%S.%f")
        assert flow["first_seen"] == epoch(when.strftime(time_format), time_format)
        assert flow["dst_port"] == int(row["Dst Port"]) and flow["bytes"] == int(row["Total Length of Fwd Packet"])
        assert flow["tcp_flags"] == (2 if int(row["SYN Flag Count"]) else 0)
        assert flow["label"] == ("benign" if row["Label"] == "BENIGN" else "malicious")
    if "Src IP" not in names:  # 2018 days without addresses: one placeholder pair per row, said so
        assert stats.notes[rowlib.PLACEHOLDER_NOTE] == 50
        assert len({f["src_addr"] for f in flows}) == 50
        assert all(f["src_addr"].startswith("2001:db8:0:1::") for f in flows)


def test_unsw_nb15_excerpt() -> None:
    flows, stats = read(UNSW)
    raw = raw_rows(UNSW)
    other = sum(r["proto"] == "other" for r in raw)  # Weka merged rarer protocols into 'other': not usable
    assert stats.rows == len(raw) == 50 and stats.flows == 50 - other
    assert stats.dropped == {"unsw-nb15: non-IP or unknown protocol 'other'": other}
    assert stats.notes[rowlib.PLACEHOLDER_NOTE] == 50  # this sample has no addresses
    kept = [r for r in raw if r["proto"] != "other"]
    assert Counter(f["label"] for f in flows) == Counter(r["label"].lower() for r in kept)
    for flow, row in zip(flows, kept, strict=True):
        assert flow["first_seen"] == float(row["Stime"])
        assert flow["protocol"] == {"tcp": 6, "udp": 17}[row["proto"]]
        assert (flow["bytes"], flow["packets"], flow["bytes_rev"], flow["packets_rev"]) == tuple(
            int(row[k]) for k in ("sbytes", "Spkts", "dbytes", "Dpkts")
        )
        assert flow["last_seen"] == pytest.approx(max(float(row["Stime"]) + float(row["dur"]), float(row["Ltime"])))


def test_unsw_nb15_headerless_original(tmp_path: Path) -> None:
    """The original UNSW-NB15_1..4.csv have no header: 49 columns, srcip first. One row built from the
    excerpt's first real row in that layout (documentation addresses, since the sample has none)."""
    row = raw_rows(UNSW)[0]
    values = {c: row.get(c, "0") for c in ("proto", "state", "dur", "sbytes", "dbytes", "Spkts", "Dpkts", "Stime")}
    values |= {"srcip": "192.0.2.1", "sport": "0x000b", "dstip": "198.51.100.7", "dsport": "80"}
    values |= {"Ltime": row["Ltime"], "attack_cat": "Exploits", "Label": "1"}
    lowered = {k.lower(): v for k, v in values.items()}
    line = ",".join(lowered.get(c, "0") for c in UNSW_COLUMNS)
    path = write_text(tmp_path / "UNSW-NB15_1.csv", line + "\n")
    assert detect_format(path) == "unsw-nb15"
    [flow], stats = read(path)
    assert (flow["src_addr"], flow["src_port"], flow["dst_addr"], flow["dst_port"]) == (
        "192.0.2.1",
        11,
        "198.51.100.7",
        80,
    )
    assert (flow["label"], flow["attack_type"], flow["bytes"]) == ("malicious", "Exploits", int(row["sbytes"]))
    assert not stats.notes


def test_argus_excerpt() -> None:
    flows, stats = read(ARGUS)
    raw = raw_rows(ARGUS, "\t")
    protos = Counter(r["Proto"] for r in raw)
    assert stats.rows == len(raw) == 50
    assert stats.dropped == {
        "argus: Argus management record": protos["man"],
        "argus: non-IP or unknown protocol 'llc'": protos["llc"],
        "argus: non-IP or unknown protocol 'arp'": protos["arp"],
    }
    kept = [r for r in raw if r["Proto"] not in ("man", "llc", "arp")]
    assert stats.flows == len(kept)
    for flow, row in zip(flows, kept, strict=True):
        assert flow["first_seen"] == pytest.approx(epoch(row["StartTime"], "%Y/%m/%d %H:%M:%S.%f"))
        assert (flow["src_addr"], flow["dst_addr"]) == (row["SrcAddr"], row["DstAddr"])
        assert flow["bytes"] == int(row["SrcBytes"]) and flow["bytes_rev"] == int(row["TotBytes"]) - int(
            row["SrcBytes"]
        )
        assert flow["packets"] + flow["packets_rev"] == int(row["TotPkts"])
        label = row["Label"].removeprefix("flow=")
        expected = "malicious" if "Malware" in label else "unknown"  # this capture: Malware-* and Background-*
        assert (flow["label"], flow["attack_type"]) == (expected, label if expected == "malicious" else None)
    tcp = next(f for f, r in zip(flows, kept, strict=True) if r["State"] == "FSA_SRA")
    assert (tcp["tcp_flags"], tcp["tcp_flags_rev"]) == (1 | 2 | 16, 2 | 4 | 16)


def nfdump_summary(path: Path) -> dict[str, int]:
    """nfdump's own totals, printed after the flows: an independent check of the reader's sums."""
    lines = path.read_text().splitlines()
    at = lines.index("Summary")
    names, values = lines[at + 1].split(","), lines[at + 2].split(",")
    return {name: int(float(value)) for name, value in zip(names, values, strict=True)}


def test_nfdump_excerpt() -> None:
    flows, stats = read(NFDUMP)
    totals = nfdump_summary(NFDUMP)
    assert stats.rows == stats.flows == totals["flows"] and not stats.dropped
    assert sum(f["bytes"] + f["bytes_rev"] for f in flows) == totals["bytes"]
    assert sum(f["packets"] + f["packets_rev"] for f in flows) == totals["packets"]
    with NFDUMP.open(newline="") as fh:
        raw = [r for r in csv.DictReader(fh)][: totals["flows"]]
    for flow, row in zip(flows, raw, strict=True):
        assert (flow["src_addr"], flow["dst_addr"]) == (row["sa"], row["da"])
        assert (flow["protocol"], flow["bytes"], flow["packets"]) == (
            {"TCP": 6}[row["pr"]],
            int(row["ibyt"]),
            int(row["ipkt"]),
        )
    first = flows[0]  # '2026-03-22 22:47:16,...,147.32.80.37,147.32.80.40,902,36679,TCP,...A..S.,...,1,44'
    assert (first["src_addr"], first["dst_addr"], first["src_port"], first["dst_port"]) == (
        "147.32.80.37", "147.32.80.40", 902, 36679,
    )  # fmt: skip
    assert (first["first_seen"], first["tcp_flags"], first["bytes"], first["packets"]) == (
        epoch("2026-03-22 22:47:16", "%Y-%m-%d %H:%M:%S"), 16 | 2, 44, 1,
    )  # fmt: skip


def test_zeek_json_excerpt_without_labels() -> None:
    flows, stats = read(ZEEK_JSON)
    raw = [json.loads(line) for line in ZEEK_JSON.read_text().splitlines()]
    assert stats.flows == len(raw) == 50 and not stats.dropped
    assert {f["label"] for f in flows} == {None}  # the port-scan capture has no label column
    assert [f["flow_id"] for f in flows] == [r["uid"] for r in raw]
    assert {f["src_addr"] for f in flows} == {"172.16.1.11"}


def test_zeek_tsv_excerpt() -> None:
    flows, stats = read(ZEEK_TSV)
    lines = ZEEK_TSV.read_text().splitlines()
    fields = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
    raw = [dict(zip(fields, line.split("\t"), strict=True)) for line in lines if not line.startswith("#")]
    assert stats.flows == len(raw) == 50 and not stats.dropped
    assert [f["label"] for f in flows] == [r["label"].lower() for r in raw]


# --- the real files in ../shared/data ----------------------------------------------------------------


@needs_shared
def test_nf_bot_iot_v2_full() -> None:
    path = SHARED_DATA / "nf_bot_iot_v2" / "botiot_reduced.csv.gz"
    flows, stats = read(path)
    with gzip.open(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        head = next(reader)
        label_at, attack_at = head.index("Label"), head.index("Attack")
        raw = Counter((r[label_at], r[attack_at]) for r in reader)
    assert stats.rows == stats.flows == 278_781 and not stats.dropped  # the data README's row count
    assert Counter(f["label"] for f in flows)["benign"] == 1_285  # "only 1,285 benign"
    assert Counter((f["label"], f["attack_type"]) for f in flows) == {
        ("malicious" if label == "1" else "benign", attack if label == "1" else None): n
        for (label, attack), n in raw.items()
    }


@needs_shared
def test_cicids2017_all_classes() -> None:
    files = sorted((SHARED_DATA / "cicids2017").glob("*.csv"))
    total = 0
    for path in files:
        flows, stats = read(path)
        labels = {r["Label"] for r in raw_rows(path)}
        assert stats.rows == stats.flows == len(flows) and not stats.dropped, path.name
        assert {f["attack_type"] or "BENIGN" for f in flows} == labels
        assert {f["label"] for f in flows} == ({"benign"} if labels == {"BENIGN"} else {"malicious"})
        total += stats.flows
    assert total == 38_409  # the data README's row count


@needs_shared
def test_unsw_nb15_samples() -> None:
    sampled = SHARED_DATA / "unsw_nb15" / "unsw-nb15_1_sampled.csv"
    flows, stats = read(sampled)
    raw = raw_rows(sampled)
    assert stats.rows == 7_000  # 6,796 benign and 204 malicious in the dataset's readme
    other = sum(r["proto"] == "other" for r in raw)
    assert sum(stats.dropped.values()) == other and stats.flows == 7_000 - other
    kept = Counter(r["label"].lower() for r in raw if r["proto"] != "other")
    assert Counter(f["label"] for f in flows) == kept
    assert kept["benign"] + sum(r["label"] == "Benign" and r["proto"] == "other" for r in raw) == 6_796
    assert stats.notes[rowlib.PLACEHOLDER_NOTE] == 7_000
    # The 10K training partition after Weka: no addresses, no times. Recognised, and refused clearly.
    matrix = SHARED_DATA / "unsw_nb15" / "unsw-nb15_training_10K.csv"
    assert detect_format(matrix) == "unsw-nb15"
    with pytest.raises(UnusableFileError, match="feature matrix"):
        read(matrix)


@needs_shared
def test_ctu_binetflow_full() -> None:
    path = SHARED_DATA / "stratosphere" / "ctu_test5-mixed.binetflow"
    flows, stats = read(path)
    raw = raw_rows(path, "\t")
    protos = Counter(r["Proto"] for r in raw)
    assert stats.rows == len(raw)
    assert stats.dropped == {
        "argus: Argus management record": protos["man"],
        "argus: non-IP or unknown protocol 'llc'": protos["llc"],
        "argus: non-IP or unknown protocol 'arp'": protos["arp"],
    }
    assert stats.flows == len(raw) - protos["man"] - protos["llc"] - protos["arp"]
    malware = sum("Malware" in r["Label"] for r in raw if r["Proto"] not in ("man", "llc", "arp"))
    assert Counter(f["label"] for f in flows)["malicious"] == malware


@needs_shared
def test_zeek_port_scan_json_full() -> None:
    flows, stats = read(SHARED_DATA / "stratosphere" / "002-zeek-scenario-port-scanning.conn.log")
    assert stats.flows == 4_504 and not stats.dropped  # the data README's row count
    assert {f["label"] for f in flows} == {None}


@pytest.fixture(scope="module")
def netflow_tools() -> None:
    """softflowd, nfcapd and nfdump (Debian's softflowd and nfdump): installed when missing and root."""
    missing = [tool for tool in ("softflowd", "nfcapd", "nfdump") if not shutil.which(tool)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "softflowd", "nfdump"], check=True, env=env, capture_output=True
        )
    missing = [tool for tool in ("softflowd", "nfcapd", "nfdump") if not shutil.which(tool)]
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"{', '.join(missing)} missing and could not be installed")
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian packages softflowd, nfdump)")


def wait_for(condition: Callable[[], bool], what: str) -> None:
    for _ in range(400):
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@needs_shared
def test_nfdump_csv_made_from_real_pcap(tmp_path: Path, netflow_tools: None) -> None:
    """The committed excerpt's recipe (tests/data/README.md) run again: softflowd exports the SSH
    brute-force capture as IPFIX to nfcapd, nfdump writes CSV; the reader's totals equal nfdump's and its
    flows equal the committed file's."""
    port = free_port()
    collector = subprocess.Popen(
        ["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: udp_queue_bytes(port) is not None, f"nfcapd to bind 127.0.0.1:{port}")
        pcap = SHARED_DATA / "pcaps" / "malicious-ssh-bruteforce.pcap"
        cmd = [
            "softflowd",
            "-d",
            "-r",
            str(pcap),
            "-n",
            f"127.0.0.1:{port}",
            "-v",
            "10",
            "-a",
            "-A",
            "milli",
            "-c",
            "none",
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        # softflowd has sent everything; nfcapd must read it all before it is stopped.
        wait_for(lambda: udp_queue_bytes(port) == 0, "nfcapd to read the export")
    finally:
        collector.send_signal(signal.SIGTERM)  # nfcapd writes its file when told to stop
        collector.wait(timeout=30)
    out = tmp_path / "made.csv"
    csv_text = subprocess.run(["nfdump", "-R", str(tmp_path), "-o", "csv"], check=True, capture_output=True, text=True)
    out.write_text(csv_text.stdout)
    flows, stats = read(out)
    totals = nfdump_summary(out)
    assert stats.flows == totals["flows"] > 0 and not stats.dropped
    assert sum(f["bytes"] for f in flows) == totals["bytes"]
    assert sum(f["packets"] for f in flows) == totals["packets"]

    def key(f: dict) -> tuple:
        return (f["first_seen"], f["src_addr"], f["src_port"], f["dst_addr"], f["dst_port"], f["bytes"], f["packets"])

    assert sorted(map(key, flows)) == sorted(map(key, read(NFDUMP)[0]))


# --- wrong headers: a clear error naming every reader's columns ------------------------------------------


def assert_clear_error(message: str, path: Path) -> None:
    assert str(path) in message and "unrecognised flow file" in message
    for name, _, _, expected in READERS:
        assert f"{name}: {expected}" in message


@pytest.mark.parametrize(("path", "fmt", "column"), EXCERPTS, ids=[p.name for p, _, _ in EXCERPTS])
def test_wrong_header(tmp_path: Path, path: Path, fmt: str, column: str) -> None:
    bad = write_text(tmp_path / f"renamed-{path.name}", read_text(path).replace(column, column + "_renamed"))
    with pytest.raises(UnknownFormatError) as err:
        read(bad)
    assert_clear_error(str(err.value), bad)
    assert f"{column}_renamed" in str(err.value) or path == ZEEK_TSV  # the first line is quoted
    # A header cut short (a truncated export) is no better.
    cut = read_text(path).splitlines()[0][:12]
    short = write_text(tmp_path / f"cut-{path.name}", cut + "\n")
    with pytest.raises(UnknownFormatError):
        read(short)


@pytest.mark.parametrize(
    "content", [b"", b"\x00\x01garbage\xff" * 100, b"x" * (1 << 22)], ids=["empty", "binary", "one-huge-line"]
)
def test_not_a_flow_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(UnknownFormatError) as err:
        read(path)
    assert_clear_error(str(err.value), path)
    assert len(str(err.value)) < 4000  # the first line is quoted, not the whole file


@pytest.mark.parametrize("target", ["wrong-header", "feature-matrix"])
def test_replay_command_rejects_before_connecting(tmp_path: Path, target: str) -> None:
    if target == "wrong-header":
        path = write_text(tmp_path / "flows.csv", read_text(CIC).replace("Dst Port", "Port"))
    else:  # a recognised UNSW-NB15 export that cannot be replayed: its own clear message
        path = write_text(tmp_path / "matrix.csv", "dur,proto=tcp,sbytes,dbytes,label\n0.1,1,200,0,Malicious\n")
    # Nothing listens on port 1: the command must fail on the file, before it tries the broker or Redis.
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "FLOWSENTINEL_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "FLOWSENTINEL_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "replay", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    if target == "wrong-header":
        assert_clear_error(done.stderr, path)
    else:
        assert "feature matrix" in done.stderr
    assert done.stderr.startswith("flowsentinel replay: ")


# --- malformed rows: dropped and counted, never raised ---------------------------------------------------

# Per delimited excerpt: a row with every field present but garbage, a row cut short, and one where a
# count is negative, each dropped under a reason that names the fault.
BAD_ROWS = {
    NF: ("IPV4_SRC_ADDR", "IN_BYTES"),
    CIC: ("Src IP", "Total Length of Fwd Packet"),
    UNSW: ("Stime", "sbytes"),
    ARGUS: ("SrcAddr", "TotBytes"),
}


@pytest.mark.parametrize("path", list(BAD_ROWS), ids=[p.name for p in BAD_ROWS])
def test_malformed_rows_are_counted(tmp_path: Path, path: Path) -> None:
    delimiter = "\t" if path == ARGUS else ","
    raw = raw_rows(path, delimiter)
    address_column, bytes_column = BAD_ROWS[path]
    header = list(raw[0])
    good = [r for r in raw if r.get("proto") != "other" and r.get("Proto") not in ("man", "llc")][0]

    def line(row: dict[str, str]) -> str:
        out = io.StringIO()
        csv.writer(out, delimiter=delimiter, lineterminator="\n").writerow([row[c] for c in header])
        return out.getvalue()

    text = read_text(path)
    extra = [
        line({**good, address_column: "not-an-address"}),
        line({**good, bytes_column: "12abc"}),
        line({**good, bytes_column: "-5"}),
        delimiter.join(list(good.values())[:4]) + "\n",  # cut short
        "\n",  # blank: not a row
        line(good),  # still fine after all that
    ]
    bad = write_text(tmp_path / path.name, text + "".join(extra))
    before_flows, before = read(path)
    flows, stats = read(bad)
    assert stats.rows == before.rows + 5
    assert stats.flows == before.flows + 1 and flows[-1] == {**before_flows[0], **_same_position(flows[-1])}
    new = stats.dropped - before.dropped
    fmt = next(reason.split(":")[0] for reason in new)
    short_address = address_column.lower()
    assert new[f"{fmt}: malformed line (field count or CSV syntax)"] == 1
    assert new[f"{fmt}: non-numeric {bytes_column.lower()}"] == 1
    assert new[f"{fmt}: negative {bytes_column.lower()}"] == 1
    assert sum(new.values()) == 4
    assert any(short_address in reason for reason in new)


def _same_position(flow: dict) -> dict:
    """Fields of a re-appended row that depend on its position in the file (synthesised time, placeholder)."""
    return {k: flow[k] for k in ("first_seen", "last_seen", "src_addr", "dst_addr", "flow_id")}


def test_truncated_gzip_keeps_what_it_can(tmp_path: Path) -> None:
    whole = NF.read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    flows, stats = read(cut)
    assert 0 < stats.flows < 50
    assert stats.dropped == {"nf-csv: malformed line (field count or CSV syntax)": 1}


# Byte-level damage a file picks up in transit or by hand-editing: whatever it is, rows are dropped and
# counted, and only the two file-level errors can ever come out of a reader.
DAMAGE = [b",", b"\t", b"\x00", b'"', b"\n", b"\r", b"-", b"nan", b"inf", b"1e999", b"-1", b"0x", b"\xff\xfe", b"{"]


@pytest.mark.parametrize(("path", "fmt", "_"), EXCERPTS, ids=[p.name for p, _, _ in EXCERPTS])
def test_damaged_rows_never_raise(tmp_path: Path, path: Path, fmt: str, _: str) -> None:
    rng = random.Random(path.name)  # seeded: the same damage on every run
    lines = read_text(path).encode().split(b"\n")
    keep = 8 if path == ZEEK_TSV else 1  # the header stays intact, so the reader itself is exercised
    head, body = b"\n".join(lines[:keep]) + b"\n", b"\n".join(lines[keep:])
    for attempt in range(40):
        damaged = bytearray(body)
        for _ in range(rng.randint(1, 20)):
            at = rng.randrange(len(damaged) or 1)
            choice = rng.random()
            if choice < 0.3:
                damaged[at : at + 1] = bytes([rng.randrange(256)])
            elif choice < 0.6:
                damaged[at:at] = rng.choice(DAMAGE)
            elif choice < 0.9:
                del damaged[at : at + rng.randint(1, 50)]
            else:
                del damaged[at:]
        target = tmp_path / f"{attempt}-{path.name.removesuffix('.gz')}"
        target.write_bytes(head + bytes(damaged))
        try:
            flows, stats = read(target)
        except (UnknownFormatError, UnusableFileError):
            continue
        assert stats.rows >= stats.flows == len(flows)
        assert stats.rows - stats.flows == sum(stats.dropped.values())


@pytest.mark.parametrize(("path", "fmt", "_"), EXCERPTS, ids=[p.name for p, _, _ in EXCERPTS])
def test_flows_are_valid_flow_records(path: Path, fmt: str, _: str) -> None:
    """What every reader yields round-trips through the Flow Avro schema the collector publishes with."""
    flows, _stats = read(path)
    assert flows
    for flow in flows:
        assert serde.decode_as(serde.encode("Flow", flow), "Flow") == flow
        assert flow["label"] in (None, "benign", "malicious", "unknown")
        assert flow["first_seen"] <= flow["last_seen"]


def test_replay_publishes_every_format(settings: Settings, run_service: RunService, tmp_path: Path) -> None:
    """`flowsentinel replay` on one excerpt of each format at once: every flow the readers yield reaches
    the flows topic of the real broker, labels included."""
    files = [path for path, _, _ in EXCERPTS]
    expected = [flow for path in files for flow in read(path)[0]]
    with run_service(settings, "replay", *map(str, files)) as replay:
        assert replay.wait(120) == 0
    published = runner.read_topic(settings, "flows", "Flow")
    assert len(published) == len(expected)
    assert Counter((f["capture"], f["label"]) for f in published) == Counter(
        (f["capture"], f["label"]) for f in expected
    )
