"""NetFlow v5: a 24-byte header and up to 30 fixed 48-byte records, IPv4 only, sysUptime-relative times."""

from __future__ import annotations

import struct

from services.collector.decoders.errors import DecodeError
from services.collector.decoders.fields import ADDRESS_TEXT, Flow, flow_id, since_uptime

HEADER = struct.Struct(">HHIIIIBBH")  # version, count, uptime, secs, nsecs, sequence, engine type/id, sampling
# src, dst, nexthop, in/out ifindex, packets, bytes, first, last, ports, pad, flags, proto, tos, AS, masks, pad
RECORD = struct.Struct(">4s4s4xHHIIIIHHxBBB4xBBxx")
MAX_RECORDS = 30  # the v5 format's own limit: a larger count is a corrupt header


def decode_v5(data: bytes, exporter: str) -> list[Flow]:
    if len(data) < HEADER.size:
        raise DecodeError("truncated", f"v5 header needs {HEADER.size} bytes, got {len(data)}")
    version, count, uptime, secs, nsecs, _seq, _etype, _eid, sampling = HEADER.unpack_from(data)
    if version != 5:
        raise DecodeError("bad_version", f"expected 5, got {version}")
    if count > MAX_RECORDS:
        raise DecodeError("bad_count", f"header counts {count} records, v5 allows {MAX_RECORDS}")
    need = HEADER.size + count * RECORD.size
    if len(data) < need:
        raise DecodeError("truncated", f"{count} records need {need} bytes, got {len(data)}")
    interval = sampling & 0x3FFF or 1  # top two bits: sampling mode; the rest: 1 in N
    export = secs + nsecs / 1e9
    ntoa = ADDRESS_TEXT
    flows = []
    for rec in RECORD.iter_unpack(data[HEADER.size : need]):
        src, dst, _inif, _outif, pkts, octets, first, last, sport, dport, flags, proto, _tos, _sm, _dm = rec
        start = export - since_uptime(uptime, first)
        end = max(start, export - since_uptime(uptime, last))
        s, d = ntoa(src), ntoa(dst)
        flows.append(
            {
                "flow_id": flow_id(exporter, s, sport, d, dport, proto, start),
                "exporter": exporter,
                "first_seen": start,
                "last_seen": end,
                "src_addr": s,
                "dst_addr": d,
                "src_port": sport,
                "dst_port": dport,
                "protocol": proto,
                "bytes": octets * interval,
                "packets": pkts * interval,
                "bytes_rev": 0,
                "packets_rev": 0,
                "tcp_flags": flags,
                "tcp_flags_rev": 0,
                "sampling_interval": interval,
                "label": None,
                "attack_type": None,
                "capture": None,
            }
        )
    return flows
