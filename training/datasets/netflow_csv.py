"""NF-v2 / NF-v3 NetFlow CSV: the University of Queensland NIDS feature set (NF-BoT-IoT-v2,
NF-UNSW-NB15-v3, ...), nProbe's NetFlow v9 fields with `Label` (0/1) and `Attack`.

IN_* is client -> server (src -> dst), OUT_* the reverse; CLIENT_/SERVER_TCP_FLAGS split the flags
by side (TCP_FLAGS, their union, when they are absent).

Time: v3 files carry FLOW_START_MILLISECONDS / FLOW_END_MILLISECONDS. v2 files have no start time
at all, so first_seen is synthesised from row order (row N starts N ms after epoch 0), which keeps the
file's order and is noted in ReadStats; replay with --shift-to-now to move it to the present.
v2 durations: nProbe wrote many FLOW_DURATION_MILLISECONDS as a negative 32-bit microsecond value
read unsigned (4,293,498 ms = 2**32 us - 1,469 ms); those are replaced by the larger of DURATION_IN
and DURATION_OUT, also noted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from training.datasets import rows
from training.datasets.rows import Flow, Row, RowError

if TYPE_CHECKING:
    from training.datasets import ReadStats

REQUIRED = (
    "IPV4_SRC_ADDR", "L4_SRC_PORT", "IPV4_DST_ADDR", "L4_DST_PORT", "PROTOCOL",
    "IN_BYTES", "IN_PKTS", "OUT_BYTES", "OUT_PKTS",
)  # fmt: skip
EXPECTED = (
    "NF-v2/NF-v3 NetFlow CSV with " + ", ".join(REQUIRED) + " (optional: TCP_FLAGS, CLIENT_TCP_FLAGS, "
    "SERVER_TCP_FLAGS, FLOW_DURATION_MILLISECONDS, FLOW_START_MILLISECONDS, Label, Attack)"
)
# The columns the reader uses (normalised): the rest of the 40-odd are never copied out of the CSV row.
USED = {rows.norm(c) for c in REQUIRED} | {
    "tcp_flags", "client_tcp_flags", "server_tcp_flags", "flow_duration_milliseconds", "flow_start_milliseconds",
    "flow_end_milliseconds", "duration_in", "duration_out", "label", "attack",
}  # fmt: skip
WRAPPED_MS = 2**31 / 1000  # a duration at or above this was a negative signed 32-bit microsecond count
WRAPPED_NOTE = "FLOW_DURATION_MILLISECONDS wrapped (negative in nProbe): used max(DURATION_IN, DURATION_OUT)"


def sniff(head: list[str]) -> bool:
    return rows.has_columns(head, REQUIRED)


def read(path: Path, stats: ReadStats) -> Iterator[Flow]:
    exporter, capture = f"replay:{path.name}", rows.capture_name(path)

    def to_flow(row: Row, index: int) -> Flow:
        src, dst = rows.address(row, "ipv4_src_addr"), rows.address(row, "ipv4_dst_addr")
        sport, dport = rows.port(row, "l4_src_port"), rows.port(row, "l4_dst_port")
        proto = rows.protocol(row, "protocol")
        start, end = _times(row, index, stats)
        label, attack = _label(row)
        client = "client_tcp_flags" if "client_tcp_flags" in row else "tcp_flags"
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
                rows.count(row, "in_bytes"),
                rows.count(row, "in_pkts"),
                rows.count(row, "out_bytes"),
                rows.count(row, "out_pkts"),
            ),
            flags=(rows.count(row, client, 0), rows.count(row, "server_tcp_flags", 0)) if proto == 6 else (0, 0),
            label=label,
            attack_type=attack,
        )

    yield from rows.read_rows(stats, "nf-csv", rows.dict_rows(path, only=USED), to_flow)


def _times(row: Row, index: int, stats: ReadStats) -> tuple[float, float]:
    if "flow_start_milliseconds" in row:
        start = rows.number(row, "flow_start_milliseconds") / 1000
        if "flow_end_milliseconds" in row:
            return start, rows.number(row, "flow_end_milliseconds") / 1000
        return start, start + rows.number(row, "flow_duration_milliseconds", 0.0) / 1000
    stats.note(rows.SYNTHETIC_TIME_NOTE)
    start = index / 1000
    duration = rows.number(row, "flow_duration_milliseconds", 0.0)
    if duration >= WRAPPED_MS:
        stats.note(WRAPPED_NOTE)
        duration = max(rows.number(row, "duration_in", 0.0), rows.number(row, "duration_out", 0.0))
    return start, start + duration / 1000


def _label(row: Row) -> tuple[str | None, str | None]:
    """(label, attack type): Label 0/1 when present, else the Attack name ('Benign' or an attack)."""
    attack = (row.get("attack") or "").strip()
    raw = (row.get("label") or "").strip()
    if raw:
        if raw not in ("0", "1"):
            raise RowError("Label not 0 or 1")
        malicious = raw == "1"
    elif attack:
        malicious = attack.lower() != "benign"
    else:
        return None, None
    return ("malicious", attack or None) if malicious else ("benign", None)
