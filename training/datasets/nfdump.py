"""nfdump CSV (`nfdump -R DIR -o csv`, nfdump 1.6 and 1.7): ts, te, td, sa, da, sp, dp, pr, flg, ...,
ipkt, ibyt, opkt, obyt, ..., then a 'Summary' section (nfdump's totals), which is not flows: the
'Summary' line ends the read.

ipkt/ibyt are src -> dst; opkt/obyt the reverse (non-zero only for biflows, e.g. NSEL or IPFIX
RFC 5103). ts/te are local dates without a zone, taken as UTC; flg is nfdump's flag string
('...APRSF'), kept in tcp_flags (tcp_flags_rev 0: a record carries one set of flags). No labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from training.datasets import rows
from training.datasets.rows import Flow, Row

if TYPE_CHECKING:
    from training.datasets import ReadStats

REQUIRED = ("ts", "te", "td", "sa", "da", "sp", "dp", "pr", "flg", "ipkt", "ibyt", "opkt", "obyt")
EXPECTED = "nfdump CSV (nfdump -o csv) with " + ", ".join(REQUIRED)
SUMMARY = "Summary"


def sniff(head: list[str]) -> bool:
    return rows.has_columns(head, REQUIRED)


def read(path: Path, stats: ReadStats) -> Iterator[Flow]:
    exporter, capture = f"replay:{path.name}", rows.capture_name(path)

    def to_flow(row: Row, index: int) -> Flow:
        proto = rows.protocol(row, "pr")
        start = rows.timestamp(row, "ts")
        end = rows.timestamp(row, "te")
        flags = rows.flag_letters(row.get("flg") or "") if proto == 6 else 0
        return rows.flow(
            fid=None,
            exporter=exporter,
            capture=capture,
            start=start,
            end=max(end, start + rows.number(row, "td", 0.0)),
            src=rows.address(row, "sa"),
            dst=rows.address(row, "da"),
            sport=rows.port(row, "sp", 0),
            dport=rows.port(row, "dp", 0),
            proto=proto,
            counts=(
                rows.count(row, "ibyt"),
                rows.count(row, "ipkt"),
                rows.count(row, "obyt", 0),
                rows.count(row, "opkt", 0),
            ),
            flags=(flags, 0),
        )

    yield from rows.read_rows(stats, "nfdump", rows.dict_rows(path, until=SUMMARY), to_flow)
