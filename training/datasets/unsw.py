"""UNSW-NB15 CSV (Moustafa and Slay, 2015), in the forms it is published and passed around:

- the original UNSW-NB15_1..4.csv: 49 columns and NO header line (srcip, sport, dstip, dsport, proto,
  ..., Stime, Ltime, ..., attack_cat, Label); recognised by 49 fields with an IP address first;
- the same columns with a header (srcip, ..., Stime, Ltime, ...);
- samples with the addresses removed but the times kept (Stime, Ltime; e.g. the aucad/sensor-data
  'sampled' file): placeholder addresses, one pair per row (rows.PLACEHOLDER_NOTE), so the flows serve
  per-flow scoring and evaluation but never fabricate a host's behaviour;
- the training/testing partitions and Weka one-hot exports, which have neither addresses nor times:
  refused with a clear error, since nothing ties a row to a host or a moment.

sbytes/Spkts are src -> dst, dbytes/Dpkts the reverse; dur in seconds; Stime/Ltime epoch seconds.
The state column is not TCP flags, so flags stay 0. Label is 0/1 (or Benign/Malicious after Weka);
attack_cat is the attack type.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from training.datasets import rows
from training.datasets.rows import Flow, Row, RowError, UnusableFileError

if TYPE_CHECKING:
    from training.datasets import ReadStats

# The original files' columns (UNSW-NB15_features.csv), normalised.
_ORIGINAL = (
    "srcip sport dstip dsport proto state dur sbytes dbytes sttl dttl sloss dloss service Sload Dload Spkts "
    "Dpkts swin dwin stcpb dtcpb smeansz dmeansz trans_depth res_bdy_len Sjit Djit Stime Ltime Sintpkt "
    "Dintpkt tcprtt synack ackdat is_sm_ips_ports ct_state_ttl ct_flw_http_mthd is_ftp_login ct_ftp_cmd "
    "ct_srv_src ct_srv_dst ct_dst_ltm ct_src_ltm ct_src_dport_ltm ct_dst_sport_ltm ct_dst_src_ltm attack_cat Label"
)
COLUMNS = [rows.norm(c) for c in _ORIGINAL.split(" ")]
SNIFF = ("sbytes", "dbytes", "dur", "label")
EXPECTED = (
    "UNSW-NB15 CSV with srcip, sport, dstip, dsport, proto, dur, sbytes, dbytes, Spkts, Dpkts, Stime, Ltime, "
    "attack_cat, Label (or the headerless 49-column original)"
)
BENIGN = {"0", "benign", "normal"}
MALICIOUS = {"1", "malicious", "attack"}


def sniff(head: list[str]) -> bool:
    return _headerless(head) or rows.has_columns(head, SNIFF)


def _headerless(head: list[str]) -> bool:
    fields = rows.header(head)
    if len(fields) != len(COLUMNS):
        return False
    try:
        ipaddress.ip_address(fields[0])
    except ValueError:
        return False
    return True


def read(path: Path, stats: ReadStats) -> Iterator[Flow]:
    exporter, capture = f"replay:{path.name}", rows.capture_name(path)
    names = COLUMNS if _headerless([rows.first_line(path)]) else None
    checked: list[bool] = []

    def to_flow(row: Row, index: int) -> Flow:
        if not checked:
            _check(set(row), path)
            checked.append(True)
        if "srcip" in row:
            src, dst = rows.address(row, "srcip"), rows.address(row, "dstip")
            # ICMP and some other rows carry '-' for ports.
            sport, dport = rows.port(row, "sport", 0), rows.port(row, "dsport", 0)
        else:
            stats.note(rows.PLACEHOLDER_NOTE)
            (src, dst), sport, dport = rows.placeholder_pair(index), 0, 0
        proto = rows.protocol(row, "proto")
        start = rows.timestamp(row, "stime")
        duration = rows.number(row, "dur", 0.0)
        end = max(start + duration, rows.number(row, "ltime", start))
        label, attack = _label(row)
        return rows.flow(
            fid=None,
            exporter=exporter,
            capture=capture,
            start=start,
            end=end,
            src=src,
            dst=dst,
            sport=sport,
            dport=dport,
            proto=proto,
            counts=(
                rows.count(row, "sbytes"),
                rows.count(row, "spkts", 0),
                rows.count(row, "dbytes"),
                rows.count(row, "dpkts", 0),
            ),
            label=label,
            attack_type=attack,
        )

    yield from rows.read_rows(stats, "unsw-nb15", rows.dict_rows(path, fieldnames=names), to_flow)


def _check(columns: set[str], path: Path) -> None:
    if "stime" not in columns and "srcip" not in columns:
        raise UnusableFileError(
            f"{path}: UNSW-NB15 file without addresses (srcip, dstip) and without times (Stime): a preprocessed "
            "feature matrix (training/testing partition or Weka export), not a flow log; nothing ties its rows to "
            "a host or a moment, so it cannot be replayed. Use the original UNSW-NB15_1..4.csv."
        )
    if "stime" not in columns:
        raise UnusableFileError(f"{path}: UNSW-NB15 file without Stime: flows cannot be placed in time")


def _label(row: Row) -> tuple[str | None, str | None]:
    raw = (row.get("label") or "").strip().lower()
    attack = " ".join((row.get("attack_cat") or "").split())
    if raw in BENIGN:
        return "benign", None
    if raw in MALICIOUS:
        return "malicious", attack or None
    if not raw:
        return None, None
    raise RowError("Label not 0/1 or Benign/Malicious")
