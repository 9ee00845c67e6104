"""Export datagrams out of files: UDP payloads of pcap / pcapng captures, or raw payload files (one
datagram, or several written back to back, as `nc -k` leaves them). Standard library only."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


class CaptureError(ValueError):
    pass


@dataclass(slots=True)
class Datagram:
    exporter: str  # IP source of the UDP datagram, or the name given for raw files
    payload: bytes


def read_datagrams(path: Path, raw_exporter: str) -> Iterator[Datagram]:
    data = path.read_bytes()
    if data[:4] in PCAP_MAGIC:
        yield from _pcap(data)
    elif data[:4] == PCAPNG_MAGIC:
        yield from _pcapng(data)
    else:
        for payload in split_datagrams(data):
            yield Datagram(raw_exporter, payload)


def split_datagrams(data: bytes) -> list[bytes]:
    """Cut back-to-back export datagrams apart: IPFIX by its length field, v5 by its record count.
    Anything else (v9 has no length in its header) is one datagram."""
    out = []
    off = 0
    while off < len(data):
        rest = data[off:]
        version = int.from_bytes(rest[:2], "big") if len(rest) >= 2 else 0
        size = len(rest)
        if version == 10 and len(rest) >= 4:
            size = int.from_bytes(rest[2:4], "big")
        elif version == 5 and len(rest) >= 4:
            size = 24 + 48 * int.from_bytes(rest[2:4], "big")
        if size < 4 or size > len(rest):  # a corrupt length: keep the rest whole, the decoder will say why
            size = len(rest)
        out.append(rest[:size])
        off += size
    return out


def _pcap(data: bytes) -> Iterator[Datagram]:
    e = PCAP_MAGIC[data[:4]]
    if len(data) < 24:
        raise CaptureError("pcap header cut")
    linktype = struct.unpack_from(e + "I", data, 20)[0] & 0xFFFF
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack_from(e + "I", data, off + 8)[0]
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        dgram = _udp(linktype, frame)
        if dgram:
            yield dgram


def _pcapng(data: bytes) -> Iterator[Datagram]:
    e = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    linktypes: list[int] = []
    off = 0
    while off + 12 <= len(data):
        btype, blen = struct.unpack_from(e + "II", data, off)
        if blen < 12 or off + blen > len(data):
            raise CaptureError(f"pcapng block at byte {off} has length {blen}")
        if btype == 0x0A0D0D0A:  # section header: interfaces are numbered per section
            linktypes = []
        elif btype == 1:  # interface description
            linktypes.append(struct.unpack_from(e + "H", data, off + 8)[0])
        elif btype == 6:  # enhanced packet
            iface, _th, _tl, caplen = struct.unpack_from(e + "IIII", data, off + 8)
            if iface < len(linktypes):
                dgram = _udp(linktypes[iface], data[off + 28 : off + 28 + caplen])
                if dgram:
                    yield dgram
        elif btype == 3 and linktypes:  # simple packet: interface 0
            caplen = min(struct.unpack_from(e + "I", data, off + 8)[0], blen - 16)
            dgram = _udp(linktypes[0], data[off + 12 : off + 12 + caplen])
            if dgram:
                yield dgram
        off += blen


def _udp(linktype: int, frame: bytes) -> Datagram | None:
    """The UDP payload of one captured frame, or None for anything else (and for IP fragments)."""
    if linktype == 1:  # Ethernet, with any number of VLAN tags
        off, ethertype = 14, int.from_bytes(frame[12:14], "big")
        while ethertype in (0x8100, 0x88A8) and len(frame) >= off + 4:
            ethertype = int.from_bytes(frame[off + 2 : off + 4], "big")
            off += 4
    elif linktype == 113:  # Linux cooked
        off, ethertype = 16, int.from_bytes(frame[14:16], "big")
    elif linktype == 276:  # Linux cooked v2
        off, ethertype = 20, int.from_bytes(frame[0:2], "big")
    elif linktype == 0:  # BSD loopback: address family in host order
        off = 4
        ethertype = 0x86DD if frame[:4] in (b"\x18\0\0\0", b"\x1c\0\0\0", b"\x1e\0\0\0", b"\0\0\0\x18") else 0x0800
    elif linktype in (101, 228, 229):  # raw IP
        off, ethertype = 0, 0x86DD if frame[:1] and frame[0] >> 4 == 6 else 0x0800
    else:
        return None
    ip = frame[off:]
    if ethertype == 0x0800 and len(ip) >= 20 and ip[0] >> 4 == 4:
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17 or int.from_bytes(ip[6:8], "big") & 0x3FFF:  # not UDP, or a fragment
            return None
        src, udp = socket.inet_ntop(socket.AF_INET, ip[12:16]), ip[ihl:]
    elif ethertype == 0x86DD and len(ip) >= 40 and ip[6] == 17:
        src, udp = socket.inet_ntop(socket.AF_INET6, ip[8:24]), ip[40:]
    else:
        return None
    if len(udp) < 8:
        return None
    length = int.from_bytes(udp[4:6], "big")
    return Datagram(src, udp[8:length] if 8 <= length <= len(udp) else udp[8:])
