"""Zeek conn.log in its three containers: TSV with a #fields header, CSV with a header row (IoT-23),
and JSON lines. orig_* is source -> destination, resp_* the reverse; history gives the TCP flags."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.datasets.files import open_text
from training.datasets.rows import RowError, read_rows

if TYPE_CHECKING:
    from training.datasets import ReadStats

EXPECTED = "Zeek conn.log (#fields line, CSV header or JSON) with ts, id.orig_h, id.orig_p, id.resp_h, id.resp_p, proto"
REQUIRED = ("ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto")
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "ipv6-icmp": 58}
FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16
# Zeek history letters (upper case: originator, lower case: responder) as the TCP flags they imply.
HISTORY_FLAGS = {"s": SYN, "h": SYN | ACK, "a": ACK, "d": ACK | PSH, "f": FIN | ACK, "r": RST}
# When history is missing: what the connection state says each side sent.
STATE_FLAGS = {
    "S0": (SYN, 0),
    "REJ": (SYN, RST | ACK),
    "S1": (SYN | ACK, SYN | ACK),
    "SF": (SYN | ACK | FIN, SYN | ACK | FIN),
    "S2": (SYN | ACK | FIN, SYN | ACK),
    "S3": (SYN | ACK, SYN | ACK | FIN),
    "RSTO": (SYN | ACK | RST, SYN | ACK),
    "RSTR": (SYN | ACK, SYN | ACK | RST),
    "RSTOS0": (SYN | RST, 0),
    "RSTRH": (0, SYN | ACK | RST),
    "SH": (SYN | FIN, 0),
    "SHR": (0, SYN | ACK | FIN),
    "OTH": (0, 0),
}
MISSING = {"", "-", "(empty)", None}


def sniff(head: list[str]) -> bool:
    for line in head:
        if line.startswith("#fields") and all(col in line.split("\t") for col in REQUIRED):
            return True
        if line.startswith("{") and '"id.orig_h"' in line:
            return True
        if not line.startswith("#") and all(col in line.split(",") for col in REQUIRED):
            return True
    return False


def read(path: Path, stats: ReadStats) -> Iterator[dict[str, Any]]:
    capture = path.name.split(".")[0].removesuffix("-labeled")
    exporter = f"replay:{path.name}"

    def convert(row: dict[str, Any], _: int) -> dict[str, Any]:
        try:
            return to_flow(row, exporter, capture)
        except RowError:
            raise
        except (KeyError, ValueError, TypeError, OverflowError):
            # float()/int() on garbage: the message would quote the value, so the reason is generic.
            raise RowError("malformed field value") from None

    yield from read_rows(stats, "zeek", _rows(path), convert)


def _rows(path: Path) -> Iterator[dict[str, Any] | None]:
    """Rows as dicts; None for a line that is not one (undecodable JSON, a CSV syntax error)."""
    with open_text(path) as fh:
        first = fh.readline()
        fh.seek(0)
        if first.startswith("{"):
            for line in fh:
                if line.strip():
                    yield _json_row(line)
        elif first.startswith("#"):
            fields: list[str] = []
            for line in fh:
                if line.startswith("#fields"):
                    fields = line.rstrip("\n").split("\t")[1:]
                elif not line.startswith("#") and fields:
                    yield dict(zip(fields, line.rstrip("\n").split("\t"), strict=False))
        else:
            reader = csv.DictReader(fh)
            while True:
                try:
                    yield next(reader)
                except StopIteration:
                    return
                except csv.Error:
                    yield None


def _json_row(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def _num(row: dict[str, Any], key: str, default: float = 0.0) -> float:
    value = row.get(key)
    return default if value in MISSING else float(value)


def tcp_flags(history: str | None, conn_state: str | None) -> tuple[int, int]:
    """(originator flags, responder flags) from Zeek's history, else from its conn_state."""
    if history not in MISSING:
        orig = resp = 0
        for ch in str(history):
            flag = HISTORY_FLAGS.get(ch.lower(), 0)
            if ch.isupper():
                orig |= flag
            else:
                resp |= flag
        return orig, resp
    return STATE_FLAGS.get(str(conn_state), (0, 0))


def label_of(raw: str | None) -> str | None:
    if raw in MISSING:
        return None
    text = str(raw).lower()
    if "malicious" in text or "botnet" in text or "attack" in text:
        return "malicious"
    if "benign" in text or "normal" in text:
        return "benign"
    return "unknown"


def to_flow(row: dict[str, Any], exporter: str, capture: str) -> dict[str, Any]:
    for key in REQUIRED:
        if row.get(key) in MISSING:
            raise RowError(f"missing {key}")
    proto_name = str(row["proto"]).lower()
    if proto_name not in PROTOCOLS:
        raise RowError(f"unknown proto {proto_name[:16]!r}")
    protocol = PROTOCOLS[proto_name]
    start = float(row["ts"])
    flags, flags_rev = tcp_flags(row.get("history"), row.get("conn_state")) if protocol == 6 else (0, 0)
    detailed = row.get("detailed-label", row.get("detailedlabel"))
    return {
        "flow_id": str(row.get("uid") or f"{row['id.orig_h']}:{row['id.orig_p']}-{row['id.resp_h']}:{start}"),
        "exporter": exporter,
        "first_seen": start,
        "last_seen": start + _num(row, "duration"),
        "src_addr": str(row["id.orig_h"]),
        "dst_addr": str(row["id.resp_h"]),
        "src_port": int(float(row["id.orig_p"])),
        "dst_port": int(float(row["id.resp_p"])),
        "protocol": protocol,
        # IP-level bytes, as NetFlow counts octets; orig_bytes is payload only and often missing.
        "bytes": int(_num(row, "orig_ip_bytes", _num(row, "orig_bytes"))),
        "packets": int(_num(row, "orig_pkts")),
        "bytes_rev": int(_num(row, "resp_ip_bytes", _num(row, "resp_bytes"))),
        "packets_rev": int(_num(row, "resp_pkts")),
        "tcp_flags": flags,
        "tcp_flags_rev": flags_rev,
        "sampling_interval": 1,
        "label": label_of(row.get("label")),
        "attack_type": None if detailed in MISSING else str(detailed),
        "capture": capture,
    }
