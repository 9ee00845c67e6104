"""What the CSV-like readers share: reading the header, iterating rows without ever raising on a bad
line, and parsing fields into flow values.

A bad row raises RowError, whose message is the drop reason. Messages name a column or a kind of
fault, never the offending value, so the reasons counted in ReadStats stay a short list however large
and dirty the file.
"""

from __future__ import annotations

import csv
import hashlib
import ipaddress
import math
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.datasets.files import open_text

if TYPE_CHECKING:
    from training.datasets import ReadStats

Row = dict[str, str]
Flow = dict[str, Any]

# IANA numbers of the protocol names datasets write (Argus, UNSW-NB15, nfdump); other names are not IP
# transports a flow model can use (arp, llc, Argus "man" records) and their rows are dropped.
PROTOCOLS = {
    "icmp": 1, "igmp": 2, "ipip": 4, "ipnip": 4, "tcp": 6, "egp": 8, "udp": 17, "ipv6": 41, "rsvp": 46,
    "gre": 47, "esp": 50, "ah": 51, "icmp6": 58, "ipv6-icmp": 58, "icmpv6": 58, "eigrp": 88, "ospf": 89,
    "pim": 103, "vrrp": 112, "l2tp": 115, "sctp": 132, "udplite": 136,
}  # fmt: skip
# TCP flag letters as Argus (State) and nfdump (flg) print them.
FLAG_LETTERS = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16, "U": 32, "E": 64, "C": 128}
MISSING = {"", "-"}
# Several datasets write times without a zone; they are taken as UTC (only their order and spacing
# matter to windows; --shift-to-now moves them anyway).
TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S.%f",  # Improved CIC-IDS2017, nfdump with msec
    "%Y-%m-%d %H:%M:%S",  # nfdump
    "%Y/%m/%d %H:%M:%S.%f",  # Argus binetflow
    "%Y/%m/%d %H:%M:%S",
    "%d/%m/%Y %H:%M:%S",  # CSE-CIC-IDS2018
    "%d/%m/%Y %H:%M",  # original CIC-IDS2017 (day first, no seconds)
    "%d/%m/%Y %I:%M:%S %p",  # CIC-IDS2017 re-exports with AM/PM
    "%d/%m/%Y %I:%M %p",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
)
# Files without addresses get one placeholder pair per row from the IPv6 documentation prefix
# (RFC 3849, never routed), so no two unrelated flows are ever mistaken for one host's behaviour.
PLACEHOLDER_SRC = int(ipaddress.IPv6Address("2001:db8:0:1::"))
PLACEHOLDER_DST = int(ipaddress.IPv6Address("2001:db8:0:2::"))
PLACEHOLDER_NOTE = (
    "no addresses in file: placeholder addresses 2001:db8:0:1::N -> 2001:db8:0:2::N, one pair per row "
    "(per-flow use only: per-host windows hold one flow each)"
)
SYNTHETIC_TIME_NOTE = "no start time in file: first_seen synthesised from row order, 1 ms per row from epoch 0"


class RowError(ValueError):
    """A row that cannot become a flow; the message is the (short, value-free) drop reason."""


class UnusableFileError(ValueError):
    """A recognised format whose file cannot be a flow source; the message says why."""


def norm(name: str) -> str:
    """Column names compared without case or surrounding/doubled spaces (CIC-IDS2017 writes ' Destination Port')."""
    return " ".join(name.strip().lower().split())


def header(head: list[str], delimiter: str = ",") -> list[str]:
    """The normalised column names of the first non-comment line of a file's head."""
    for line in head:
        if line.strip() and not line.startswith("#"):
            return [norm(c) for c in next(csv.reader([line], delimiter=delimiter))]
    return []


def first_line(path: Path) -> str:
    """The file's first line (at most 64 KiB of it): enough to learn its columns and delimiter."""
    with open_text(path) as fh:
        return fh.readline(1 << 16).rstrip("\r\n")


def has_columns(head: list[str], columns: tuple[str, ...], delimiter: str = ",") -> bool:
    present = set(header(head, delimiter))
    return all(norm(c) in present for c in columns)


def pick(columns: list[str] | set[str], *aliases: str) -> str | None:
    """The first of several spellings of one column that the file uses."""
    return next((a for a in aliases if a in columns), None)


def dict_rows(
    path: Path,
    delimiter: str = ",",
    fieldnames: list[str] | None = None,
    until: str | None = None,
    only: set[str] | None = None,
) -> Iterator[Row | None]:
    """Rows as {normalised column: text}, holding only the columns in `only` when given (wide files:
    the NF and CICFlowMeter sets have 40-90 columns, a reader needs a dozen); None for a line that is
    not a row of this file (wrong field count, a CSV syntax error, a truncated gzip tail). Blank lines
    are skipped; a line that is just `until` ends the rows (nfdump's 'Summary'). Streams: one line at
    a time."""
    with open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        names = fieldnames
        picked: list[tuple[str, int]] | None = None
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error:  # an oversized or malformed field: the reader goes on with the next line
                yield None
                continue
            except (EOFError, OSError):  # a cut or corrupt gzip stream: nothing after it can be read
                yield None
                return
            if not values or all(not v.strip() for v in values):
                continue
            if until is not None and values == [until]:
                return
            if names is None:
                names = [norm(v) for v in values]
                continue
            if len(values) == len(names) and norm(values[0]) == names[0] and [norm(v) for v in values] == names:
                continue  # the header again: concatenated exports, CSE-CIC-IDS2018 days; not a row
            if picked is None:
                picked = [(name, i) for i, name in enumerate(names) if only is None or name in only]
            yield {name: values[i] for name, i in picked} if len(values) == len(names) else None


def read_rows(
    stats: ReadStats, fmt: str, rows: Iterator[Row | None], to_flow: Callable[[Row, int], Flow]
) -> Iterator[Flow]:
    """Flows of the rows that convert; each other row counted under `fmt: reason`."""
    for index, row in enumerate(rows):
        stats.rows += 1
        if row is None:
            stats.drop(f"{fmt}: malformed line (field count or CSV syntax)")
            continue
        try:
            flow = to_flow(row, index)
        except RowError as exc:
            stats.drop(f"{fmt}: {exc}")
            continue
        stats.flows += 1
        yield flow


def text(row: Row, key: str) -> str:
    value = (row.get(key) or "").strip()
    if value in MISSING:
        raise RowError(f"missing {key}")
    return value


def number(row: Row, key: str, default: float | None = None) -> float:
    """A finite, non-negative number (counts, durations, times); `default` stands in for a missing value."""
    raw = (row.get(key) or "").strip()
    if raw in MISSING:
        if default is None:
            raise RowError(f"missing {key}")
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RowError(f"non-numeric {key}") from None
    if not math.isfinite(value):
        raise RowError(f"non-numeric {key}")
    if value < 0:
        raise RowError(f"negative {key}")
    return value


def count(row: Row, key: str, default: float | None = None) -> int:
    return int(number(row, key, default))


def port(row: Row, key: str, default: int | None = None) -> int:
    """A port; Argus and UNSW-NB15 write ICMP type/code as hex ('0x0303')."""
    raw = (row.get(key) or "").strip()
    if raw in MISSING:
        if default is None:
            raise RowError(f"missing {key}")
        return default
    try:
        value = int(raw, 16) if raw.lower().startswith("0x") else int(float(raw))
    except (ValueError, OverflowError):  # OverflowError: '1e999' is a float, but no int
        raise RowError(f"non-numeric {key}") from None
    if not 0 <= value <= 0xFFFF:
        raise RowError(f"{key} out of range")
    return value


def address(row: Row, key: str) -> str:
    """A valid IPv4 or IPv6 address (IPv6 in its compressed form); a MAC address or garbage is a RowError."""
    value = text(row, key)
    try:
        if ":" not in value:
            socket.inet_pton(socket.AF_INET, value)  # C-speed check: most rows are IPv4
            return value
        return str(ipaddress.IPv6Address(value))
    except (OSError, ValueError):
        raise RowError(f"non-IP {key}") from None


def protocol(row: Row, key: str) -> int:
    """IANA number from a number or a name; non-IP names are dropped with the name as the reason."""
    value = text(row, key).lower()
    if value.isascii() and value.isdigit():
        if int(value) > 255:
            raise RowError(f"{key} out of range")
        return int(value)
    if value not in PROTOCOLS:
        raise RowError(f"non-IP or unknown protocol {value[:16]!r}")
    return PROTOCOLS[value]


def flag_letters(letters: str) -> int:
    return sum(bit for letter, bit in FLAG_LETTERS.items() if letter in letters.upper())


_time_format = [TIME_FORMATS[0]]  # the format that last worked, tried first: files keep one format


def timestamp(row: Row, key: str) -> float:
    """Epoch seconds from epoch numbers (s, or ms when too large for seconds) or a date in TIME_FORMATS."""
    raw = " ".join(text(row, key).split())
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise RowError(f"bad {key}")
        return value / 1000 if value > 1e11 else value
    if raw[4:5] == "-":  # ISO 8601 (improved CIC-IDS2017, nfdump): the C parser, far faster than strptime
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    for fmt in (_time_format[0], *TIME_FORMATS):
        try:
            parsed = datetime.strptime(raw, fmt)
        except ValueError:
            continue
        _time_format[0] = fmt
        return parsed.replace(tzinfo=UTC).timestamp()
    raise RowError(f"unparsed time {key}")


def placeholder_pair(index: int) -> tuple[str, str]:
    return str(ipaddress.IPv6Address(PLACEHOLDER_SRC + index)), str(ipaddress.IPv6Address(PLACEHOLDER_DST + index))


def flow_id(src: str, sport: int, dst: str, dport: int, proto: int, start: float) -> str:
    """The Flow schema's fallback id: a short hash of the 5-tuple and the start time."""
    key = f"{src}|{sport}|{dst}|{dport}|{proto}|{start:.6f}".encode()
    return hashlib.blake2b(key, digest_size=8).hexdigest()


def capture_name(path: Path) -> str:
    """The file name without its extensions ('botiot_reduced.csv.gz' -> 'botiot_reduced')."""
    return path.name.split(".")[0]


def flow(
    *,
    fid: str | None,
    exporter: str,
    capture: str,
    start: float,
    end: float,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    proto: int,
    counts: tuple[int, int, int, int],
    flags: tuple[int, int] = (0, 0),
    label: str | None = None,
    attack_type: str | None = None,
) -> Flow:
    """A Flow record (schemas/Flow.avsc); counts are (bytes, packets, bytes_rev, packets_rev)."""
    return {
        "flow_id": fid or flow_id(src, sport, dst, dport, proto, start),
        "exporter": exporter,
        "first_seen": start,
        "last_seen": max(end, start),
        "src_addr": src,
        "dst_addr": dst,
        "src_port": sport,
        "dst_port": dport,
        "protocol": proto,
        "bytes": counts[0],
        "packets": counts[1],
        "bytes_rev": counts[2],
        "packets_rev": counts[3],
        "tcp_flags": flags[0] & 0xFF,
        "tcp_flags_rev": flags[1] & 0xFF,
        "sampling_interval": 1,
        "label": label,
        "attack_type": attack_type,
        "capture": capture,
    }
