"""Information elements (IANA IPFIX numbers, which NetFlow v9 shares below 128) mapped onto Flow fields,
and the per-template plan that turns one unpacked record into a Flow dict.

A template is compiled once: each Flow role (source address, bytes, start time, ...) gets the index of
the value that carries it in the unpacked record tuple, chosen by a fixed preference when a template
carries several candidates (delta counters before totals). Decoding a record is then a handful of
tuple look-ups, with no per-field loop.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Flow = dict[str, Any]

REVERSE_PEN = 29305  # RFC 5103: reverse-direction IEs are the forward IE numbers under this enterprise number
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)

# Role -> IEs that carry it, most preferred first: (enterprise, element id).
ROLES: dict[str, tuple[tuple[int, int], ...]] = {
    "src4": ((0, 8),),
    "dst4": ((0, 12),),
    "src6": ((0, 27),),
    "dst6": ((0, 28),),
    "src_port": ((0, 7),),
    "dst_port": ((0, 11),),
    "protocol": ((0, 4),),
    "icmp": ((0, 32), (0, 139)),  # icmpTypeCodeIPv4 / IPv6: type * 256 + code
    # octetDeltaCount, initiatorOctets (Cisco ASA), octetTotalCount
    "bytes": ((0, 1), (0, 231), (0, 85)),
    "packets": ((0, 2), (0, 298), (0, 86)),
    "bytes_rev": ((REVERSE_PEN, 1), (0, 232), (REVERSE_PEN, 85)),
    "packets_rev": ((REVERSE_PEN, 2), (0, 299), (REVERSE_PEN, 86)),
    "tcp_flags": ((0, 6),),
    "tcp_flags_rev": ((REVERSE_PEN, 6),),
    "sampling_interval": ((0, 34), (0, 50)),  # samplingInterval, samplerRandomInterval
    "sampler_id": ((0, 48), (0, 302)),  # samplerId (v9 FLOW_SAMPLER_ID), selectorId
}
# Timestamps: role -> (IE, form). Forms are converted by TIME_FORMS below.
START_IES = ((152, "ms"), (150, "s"), (154, "ntp"), (156, "ntp"), (22, "uptime"), (158, "delta_us"))
END_IES = ((153, "ms"), (151, "s"), (155, "ntp"), (157, "ntp"), (21, "uptime"), (159, "delta_us"))

# IEs whose value is an address or text rather than a number (used when decoding option records).
ADDRESS_IES = frozenset({8, 12, 15, 27, 28, 62, 130, 131, 225, 226})
TEXT_IES = frozenset({82, 83, 84, 96, 100, 335, 336})
INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


@dataclass(slots=True)
class Header:
    """What a data record needs from its packet: exporter, export time and (v9) the uptime clock."""

    exporter: str
    version: int  # 9 or 10: a v9 source id and an IPFIX observation domain of one exporter are kept apart
    domain: int
    export_time: int  # Unix seconds in the packet header
    uptime_ms: int | None = None  # v9 sysUpTime; None in IPFIX
    init_ms: int | None = None  # IPFIX systemInitTimeMilliseconds, from an option record


def since_uptime(uptime_ms: int, at_ms: int) -> float:
    """Seconds from `at_ms` to the header's uptime. Uptime wraps at 2**32 ms (49.7 days): the difference is
    read as signed so that a wrap, or a flow stamped slightly after its header, gives a small offset."""
    delta = (uptime_ms - at_ms) & 0xFFFFFFFF
    return (delta - 0x100000000 if delta >= 0x80000000 else delta) / 1000.0


def _uptime(h: Header) -> Callable[[int], float]:
    if h.uptime_ms is not None:
        export, up = h.export_time, h.uptime_ms
        return lambda v: export - since_uptime(up, v)
    if h.init_ms is not None:
        init = h.init_ms
        return lambda v: (init + v) / 1000.0
    export_f = float(h.export_time)  # IPFIX uptime without a systemInitTime option: the export time is the best bound
    return lambda _v: export_f


def _ntp(_h: Header) -> Callable[[int], float]:
    return lambda v: (v >> 32) - NTP_EPOCH_OFFSET + (v & 0xFFFFFFFF) / 4294967296.0


def _delta_us(h: Header) -> Callable[[int], float]:
    export = h.export_time
    return lambda v: export - v / 1e6


# Timestamp form -> converter for one packet's header (its export time and clocks bound once per data set).
TIME_FORMS: dict[str, Callable[[Header], Callable[[int], float]]] = {
    "s": lambda _h: float,
    "ms": lambda _h: lambda v: v / 1000.0,
    "ntp": _ntp,
    "uptime": _uptime,
    "delta_us": _delta_us,
}


def flow_id(exporter: str, src: str, sport: int, dst: str, dport: int, proto: int, start: float) -> str:
    """Deterministic: the same flow exported twice (a retransmission, a replayed capture) has the same id."""
    key = f"{exporter}|{src}|{sport}|{dst}|{dport}|{proto}|{round(start * 1000)}".encode()
    return hashlib.blake2b(key, digest_size=10).hexdigest()


class AddressText:
    """Address bytes -> text, memoised: a busy exporter repeats the same few thousand hosts, and a dict hit
    costs a fraction of inet_ntop. Cleared when large, so hostile traffic cannot grow it without bound."""

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self.memo: dict[bytes, str] = {}

    def __call__(self, raw: bytes) -> str:
        text = self.memo.get(raw)
        if text is None:
            if len(self.memo) >= self.limit:
                self.memo.clear()
            text = self.memo[raw] = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
        return text


ADDRESS_TEXT = AddressText()


@dataclass(slots=True)
class FieldSpec:
    ie: int
    length: int  # 65535: variable length (RFC 7011 section 7)
    enterprise: int = 0


@dataclass(slots=True)
class RecordPlan:
    """Where each Flow role sits in the tuple of used values of one template; -1 when the template lacks it."""

    used: list[tuple[int, str]] = field(default_factory=list)  # (position in template, kind: int/addr4/addr6)
    index: dict[str, int] = field(default_factory=dict)
    start: tuple[int, str] | None = None
    end: tuple[int, str] | None = None


def plan_record(fields: list[FieldSpec]) -> RecordPlan:
    """Choose, for each role, the template field that carries it, and list the fields worth unpacking."""
    plan = RecordPlan()
    where = {(f.enterprise, f.ie): pos for pos, f in reversed(list(enumerate(fields)))}
    wanted: dict[int, str] = {}  # template position -> kind

    def take(pos: int, kind: str) -> int:
        wanted[pos] = kind
        return pos

    for role, candidates in ROLES.items():
        for key in candidates:
            pos = where.get(key)
            if pos is None:
                continue
            length = fields[pos].length
            if role in ("src4", "dst4"):
                if length == 4:
                    plan.index[role] = take(pos, "addr4")
                    break
            elif role in ("src6", "dst6"):
                if length == 16:
                    plan.index[role] = take(pos, "addr6")
                    break
            elif length not in (0, 65535) and length <= 8:
                plan.index[role] = take(pos, "int")
                break
    for attr, candidates in (("start", START_IES), ("end", END_IES)):
        for ie, form in candidates:
            pos = where.get((0, ie))
            if pos is not None and 0 < fields[pos].length <= 8:
                setattr(plan, attr, (take(pos, "int"), form))
                break
    order = sorted(wanted)
    slot = {pos: i for i, pos in enumerate(order)}
    plan.used = [(pos, wanted[pos]) for pos in order]
    plan.index = {role: slot[pos] for role, pos in plan.index.items()}
    if plan.start:
        plan.start = (slot[plan.start[0]], plan.start[1])
    if plan.end:
        plan.end = (slot[plan.end[0]], plan.end[1])
    return plan


Builder = Callable[[list[tuple[Any, ...]], Header, "int | list[int]"], list[Flow]]
ZERO4 = b"\0\0\0\0"
LONG_MAX = (1 << 63) - 1  # Avro long
INT_MAX = (1 << 31) - 1  # Avro int


def make_builder(plan: RecordPlan) -> Builder:
    """A function (records of one data set, header, sampling interval(s)) -> Flows for one template, with
    every index resolved up front and the loop's names bound locally (this loop is the decoder's hot path)."""
    ix = plan.index.get
    i_src4, i_dst4, i_src6, i_dst6 = ix("src4", -1), ix("dst4", -1), ix("src6", -1), ix("dst6", -1)
    i_sport, i_dport, i_proto, i_icmp = ix("src_port", -1), ix("dst_port", -1), ix("protocol", -1), ix("icmp", -1)
    i_bytes, i_pkts, i_rbytes, i_rpkts = ix("bytes", -1), ix("packets", -1), ix("bytes_rev", -1), ix("packets_rev", -1)
    i_flags, i_rflags = ix("tcp_flags", -1), ix("tcp_flags_rev", -1)
    start_i, start_form = plan.start if plan.start else (-1, "")
    end_i, end_form = plan.end if plan.end else (-1, "")

    def build(rows: list[tuple[Any, ...]], h: Header, sampling: int | list[int]) -> list[Flow]:
        text, exporter = ADDRESS_TEXT, h.exporter
        start_conv = TIME_FORMS[start_form](h) if start_i >= 0 else None
        end_conv = TIME_FORMS[end_form](h) if end_i >= 0 else None
        export = float(h.export_time)
        samplings = sampling if isinstance(sampling, list) else None
        rate = 1 if samplings else sampling
        flows = []
        for n, t in enumerate(rows):
            if samplings:
                rate = samplings[n]
            src = dst = ""
            if i_src4 >= 0 and (t[i_src4] != ZERO4 or i_src6 < 0):
                src = text(t[i_src4])
            elif i_src6 >= 0:
                src = text(t[i_src6])
            if i_dst4 >= 0 and (t[i_dst4] != ZERO4 or i_dst6 < 0):
                dst = text(t[i_dst4])
            elif i_dst6 >= 0:
                dst = text(t[i_dst6])
            # Masked to their protocol widths: a template may give any field any length, and the Flow schema's
            # ints must hold what the decoder emits (a hostile template must not crash the publisher).
            sport = t[i_sport] & 0xFFFF if i_sport >= 0 else 0
            dport = t[i_dport] & 0xFFFF if i_dport >= 0 else 0
            proto = t[i_proto] & 0xFF if i_proto >= 0 else 0
            if i_icmp >= 0 and not dport and proto in (1, 58):
                dport = t[i_icmp] & 0xFFFF  # the usual convention (nfdump, goflow2): ICMP type and code in the port
            first = start_conv(t[start_i]) if start_conv else export
            last = end_conv(t[end_i]) if end_conv else first
            if last < first:  # seen from softflowd and others: an end before the start; keep it, order the times
                last = first
            n_bytes = (t[i_bytes] if i_bytes >= 0 else 0) * rate
            n_pkts = (t[i_pkts] if i_pkts >= 0 else 0) * rate
            r_bytes = (t[i_rbytes] if i_rbytes >= 0 else 0) * rate
            r_pkts = (t[i_rpkts] if i_rpkts >= 0 else 0) * rate
            if n_bytes > LONG_MAX or n_pkts > LONG_MAX or r_bytes > LONG_MAX or r_pkts > LONG_MAX:
                n_bytes, n_pkts = min(n_bytes, LONG_MAX), min(n_pkts, LONG_MAX)  # unsigned 64-bit counters
                r_bytes, r_pkts = min(r_bytes, LONG_MAX), min(r_pkts, LONG_MAX)
            flows.append(
                {
                    "flow_id": flow_id(exporter, src, sport, dst, dport, proto, first),
                    "exporter": exporter,
                    "first_seen": first,
                    "last_seen": last,
                    "src_addr": src,
                    "dst_addr": dst,
                    "src_port": sport,
                    "dst_port": dport,
                    "protocol": proto,
                    "bytes": n_bytes,
                    "packets": n_pkts,
                    "bytes_rev": r_bytes,
                    "packets_rev": r_pkts,
                    "tcp_flags": (t[i_flags] & 0xFF) if i_flags >= 0 else 0,
                    "tcp_flags_rev": (t[i_rflags] & 0xFF) if i_rflags >= 0 else 0,
                    "sampling_interval": rate,
                    "label": None,
                    "attack_type": None,
                    "capture": None,
                }
            )
        return flows

    return build


def option_value(ie: int, raw: bytes) -> int | str:
    """An option record's field as an operator reads it: number, address or text."""
    if ie in TEXT_IES:
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    if ie in ADDRESS_IES and len(raw) in (4, 16):
        return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
    if len(raw) <= 8:
        return int.from_bytes(raw, "big")
    return raw.hex()
