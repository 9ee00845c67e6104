"""CICFlowMeter CSV: CIC-IDS2017 (original 'TrafficLabelling' files, whose names start with a space:
' Destination Port'), CSE-CIC-IDS2018 ('Dst Port', 'Tot Fwd Pkts') and the improved CIC-IDS2017 of
Engelen et al. ('Src IP', 'Total Fwd Packet').

Fwd is src -> dst. 'Total Length of Fwd Packets' counts payload bytes, not IP bytes (CICFlowMeter's
definition); Flow Duration is in microseconds. The flag counts cover both directions, so their union
goes in tcp_flags and tcp_flags_rev stays 0. Timestamps come in several formats (see rows.TIME_FORMATS),
without a zone: taken as UTC. The original CIC-IDS2017 CSVs write afternoon times on a 12-hour clock
without AM/PM ('3/7/2017 1:05' for 13:05); nothing in a row tells them apart, so they are read as
written. Files without addresses (most CSE-CIC-IDS2018 days) get placeholder addresses (noted); files
without addresses or times (the MachineLearningCVE CSVs) are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from training.datasets import rows
from training.datasets.rows import Flow, Row, RowError, UnusableFileError

if TYPE_CHECKING:
    from training.datasets import ReadStats

# Each flow field: the spellings of its column across the CICFlowMeter releases, normalised (rows.norm).
ALIASES = {
    "src": ("src ip", "source ip"),
    "dst": ("dst ip", "destination ip"),
    "sport": ("src port", "source port"),
    "dport": ("dst port", "destination port"),
    "proto": ("protocol",),
    "time": ("timestamp",),
    "duration": ("flow duration",),
    "fwd_pkts": ("total fwd packets", "total fwd packet", "tot fwd pkts"),
    "bwd_pkts": ("total backward packets", "total bwd packets", "tot bwd pkts"),
    "fwd_bytes": ("total length of fwd packets", "total length of fwd packet", "totlen fwd pkts"),
    "bwd_bytes": ("total length of bwd packets", "total length of bwd packet", "totlen bwd pkts"),
    "label": ("label",),
    "id": ("id",),
}
SNIFF = ("dport", "duration", "fwd_pkts", "bwd_pkts", "fwd_bytes", "label")
EXPECTED = (
    "CICFlowMeter CSV (CIC-IDS2017/2018) with Dst Port (or Destination Port), Flow Duration, Total Fwd Packets "
    "(Tot Fwd Pkts), Total Backward Packets, Total Length of Fwd/Bwd Packets, Label; optional Src IP, Dst IP, "
    "Src Port, Protocol, Timestamp"
)
# Flag-count columns (both directions) as the TCP flag bit each stands for; 2017 writes 'CWE' for CWR.
FLAG_COUNTS = {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32, "ece": 64, "cwr": 128, "cwe": 128}


def sniff(head: list[str]) -> bool:
    columns = set(rows.header(head))
    return all(rows.pick(columns, *ALIASES[key]) for key in SNIFF)


def read(path: Path, stats: ReadStats) -> Iterator[Flow]:
    exporter, capture = f"replay:{path.name}", rows.capture_name(path)
    col, flag_columns = _resolve(rows.header([rows.first_line(path)]), path)
    used = {name for name in col.values() if name} | set(flag_columns)

    def to_flow(row: Row, index: int) -> Flow:
        if col["src"] and col["dst"]:
            src, dst = rows.address(row, col["src"]), rows.address(row, col["dst"])
        else:
            stats.note(rows.PLACEHOLDER_NOTE)
            src, dst = rows.placeholder_pair(index)
        if col["time"]:
            start = rows.timestamp(row, col["time"])
        else:
            stats.note(rows.SYNTHETIC_TIME_NOTE)
            start = index / 1000
        proto = rows.protocol(row, col["proto"]) if col["proto"] else 0
        flags = 0
        if proto == 6:
            for column, bit in flag_columns.items():
                if rows.number(row, column, 0.0) > 0:
                    flags |= bit
        label, attack = _label(row.get("label", ""))
        return rows.flow(
            fid=(row.get(col["id"]) or None) if col["id"] else None,
            exporter=exporter,
            capture=capture,
            start=start,
            end=start + rows.number(row, col["duration"]) / 1e6,
            src=src,
            dst=dst,
            sport=rows.port(row, col["sport"]) if col["sport"] else 0,
            dport=rows.port(row, col["dport"]),
            proto=proto,
            counts=(
                rows.count(row, col["fwd_bytes"]),
                rows.count(row, col["fwd_pkts"]),
                rows.count(row, col["bwd_bytes"]),
                rows.count(row, col["bwd_pkts"]),
            ),
            flags=(flags, 0),
            label=label,
            attack_type=attack,
        )

    yield from rows.read_rows(stats, "cicflowmeter", rows.dict_rows(path, only=used), to_flow)


def _resolve(names: list[str], path: Path) -> tuple[dict[str, str | None], dict[str, int]]:
    """The file's spelling of each flow field, and its flag-count columns with the flag bit of each."""
    columns = {key: rows.pick(names, *aliases) for key, aliases in ALIASES.items()}
    if not (columns["src"] and columns["dst"]) and not columns["time"]:
        raise UnusableFileError(
            f"{path}: CICFlowMeter file without addresses (Src IP, Dst IP) and without Timestamp: a feature matrix, "
            "not a flow log; nothing ties its rows to a host or a moment, so it cannot be replayed"
        )
    flag_columns = {}
    for name in names:
        parts = name.split()
        if len(parts) == 3 and parts[1] == "flag" and parts[2] in ("count", "cnt") and parts[0] in FLAG_COUNTS:
            flag_columns[name] = FLAG_COUNTS[parts[0]]
    return columns, flag_columns


def _label(raw: str) -> tuple[str | None, str | None]:
    text = " ".join(raw.split())
    if not text:
        raise RowError("missing Label")
    if text.upper() == "BENIGN":
        return "benign", None
    return "malicious", text
