"""CTU Argus binetflow (CTU-13, Stratosphere captures): Argus bidirectional flows, comma or tab
separated, with StartTime, Dur, Proto, SrcAddr, Sport, Dir, DstAddr, Dport, State, TotPkts, TotBytes,
SrcBytes (SrcPkts in newer files) and Label ('flow=From-Botnet-V42-UDP-DNS', 'flow=Background-...').

SrcAddr is the side Argus saw start the flow, whatever Dir says. SrcBytes/SrcPkts are src -> dst and
the rest of TotBytes/TotPkts the reverse; without SrcPkts every packet counts src -> dst (noted).
For TCP the State column is the flags each side sent ('FSPA_FSA'). Argus management records (man) and
non-IP flows (arp, llc: MAC addresses) are dropped, counted by protocol. Labels: Botnet / Malware /
Malicious / Attack -> malicious, Normal / Benign -> benign, Background and the rest -> unknown (CTU-13's
background traffic is unlabelled); the text after 'flow=' is the attack type of malicious flows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from training.datasets import rows
from training.datasets.rows import Flow, Row, RowError

if TYPE_CHECKING:
    from training.datasets import ReadStats

REQUIRED = ("StartTime", "Dur", "Proto", "SrcAddr", "Sport", "Dir", "DstAddr", "Dport", "TotPkts", "TotBytes")
EXPECTED = "CTU Argus binetflow (comma or tab separated) with " + ", ".join(REQUIRED) + ", SrcBytes, Label"
MALICIOUS_WORDS = ("botnet", "malware", "malicious", "attack")
BENIGN_WORDS = ("normal", "benign")
NO_SRC_PKTS_NOTE = "no SrcPkts column: all packets counted src -> dst"


def _delimiter(line: str) -> str:
    return "\t" if "\t" in line else ","


def sniff(head: list[str]) -> bool:
    first = next((line for line in head if line.strip()), "")
    return rows.has_columns(head, REQUIRED, _delimiter(first))


def read(path: Path, stats: ReadStats) -> Iterator[Flow]:
    exporter, capture = f"replay:{path.name}", rows.capture_name(path)
    delimiter = _delimiter(rows.first_line(path))

    def to_flow(row: Row, index: int) -> Flow:
        proto_name = rows.text(row, "proto").lower()
        if proto_name == "man":
            raise RowError("Argus management record")
        proto = rows.protocol(row, "proto")
        src, dst = rows.address(row, "srcaddr"), rows.address(row, "dstaddr")
        start = rows.timestamp(row, "starttime")
        total_bytes, total_pkts = rows.count(row, "totbytes"), rows.count(row, "totpkts")
        src_bytes = rows.count(row, "srcbytes", total_bytes)
        if "srcpkts" in row:
            src_pkts = rows.count(row, "srcpkts")
        else:
            stats.note(NO_SRC_PKTS_NOTE)
            src_pkts = total_pkts
        if src_bytes > total_bytes or src_pkts > total_pkts:
            raise RowError("SrcBytes/SrcPkts above TotBytes/TotPkts")
        flags = _flags(row.get("state") or "") if proto == 6 else (0, 0)
        label, attack = _label(row.get("label") or "")
        return rows.flow(
            fid=None,
            exporter=exporter,
            capture=capture,
            start=start,
            end=start + rows.number(row, "dur", 0.0),
            src=src,
            dst=dst,
            sport=rows.port(row, "sport", 0),
            dport=rows.port(row, "dport", 0),
            proto=proto,
            counts=(src_bytes, src_pkts, total_bytes - src_bytes, total_pkts - src_pkts),
            flags=flags,
            label=label,
            attack_type=attack,
        )

    yield from rows.read_rows(stats, "argus", rows.dict_rows(path, delimiter), to_flow)


def _flags(state: str) -> tuple[int, int]:
    """('FSPA_FSA') -> flags of each side; states without '_' (CON, INT, REQ) carry no flags."""
    if "_" not in state:
        return 0, 0
    src, _, dst = state.partition("_")
    return rows.flag_letters(src), rows.flag_letters(dst)


def _label(raw: str) -> tuple[str | None, str | None]:
    text = raw.strip().removeprefix("flow=")
    if not text:
        return None, None
    lower = text.lower()
    if any(word in lower for word in MALICIOUS_WORDS):
        return "malicious", text
    if any(word in lower for word in BENIGN_WORDS):
        return "benign", None
    return "unknown", None
