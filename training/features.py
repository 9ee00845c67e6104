"""The window features: ONE module that the streaming featurizer and training both call, so a model
never sees features at serving time that differ from those it was trained on.

A host window is the flows one host took part in within one event-time tumbling window, in one role:
"src", the flows it started (a scanner, a bot, a brute-forcer), or "dst", the flows it received (the
victim of a flood, a scanned server). The role decides only who the peer is and which direction is
"out": peer addresses and bytes/packets are taken from the host's side. Everything that describes the
connection itself (ports: the service port is dst_port whoever looks; protocol; TCP flags; whether the
responder replied; times) reads the same in both roles, so "half-open connections" means the same thing
to a scanner and to its victim. Every feature is a pure function of that window's flows and
order-independent: sums are exact (math.fsum) and times are sorted, so the featurizer (flows in
partition order) and training (flows in file order) compute bit-identical vectors.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

Flow = dict[str, Any]

FEATURE_SET = "v1"
TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
SYN, RST, ACK = 2, 4, 16

# name: one-line meaning. Order is the vector order the models are trained on. "Peer": the other end
# (src role: the hosts it contacted; dst role: the hosts that contacted it).
FEATURES: dict[str, str] = {
    "flow_count": "flows in the window (src: started by the host; dst: received by it)",
    "bytes_out": "bytes the host sent to its peers",
    "bytes_in": "bytes its peers sent to it",
    "packets_out": "packets the host sent",
    "packets_in": "packets it received",
    "bytes_per_packet_out": "mean size of packets sent",
    "bytes_per_packet_in": "mean size of packets received",
    "duration_mean": "mean flow duration, seconds",
    "duration_max": "longest flow, seconds",
    "distinct_dst_addrs": "distinct peers (src: scans, spreading; dst: many sources, as in a (spoofed) flood)",
    "distinct_dst_ports": "distinct service ports (src: vertical scans; dst: its own ports probed)",
    "distinct_src_ports": "distinct client ports (many for a flood or a scan with random source ports)",
    "dst_port_entropy": "Shannon entropy of destination ports, bits",
    "flows_per_dst": "flows per distinct peer (brute force, floods: many flows to few peers)",
    "share_tcp": "share of TCP flows",
    "share_udp": "share of UDP flows",
    "share_icmp": "share of ICMP flows",
    "share_no_reply": "share of flows that got no packet back (failed, scans, spoofed floods)",
    "share_syn_only": "share of TCP flows whose sender set SYN but never ACK (half-open)",
    "share_reset": "share of TCP flows with a RST in either direction (rejected)",
    "share_well_known_port": "share of flows to destination ports below 1024",
    "interarrival_mean": "mean time between flow starts, seconds",
    "interarrival_std": "standard deviation of the time between flow starts",
    "interarrival_cv": "std/mean of inter-arrival times: near 0 for periodic beaconing (C&C)",
}
FEATURE_NAMES: list[str] = list(FEATURES)
N_FEATURES = len(FEATURE_NAMES)


def _entropy(counts: Counter[Any], total: int) -> float:
    return -math.fsum((c / total) * math.log2(c / total) for c in sorted(counts.values()))


# role -> (peer address field, the host's sent bytes/packets fields, its received ones)
ROLE_FIELDS: dict[str, tuple[str, str, str, str, str]] = {
    "src": ("dst_addr", "bytes", "packets", "bytes_rev", "packets_rev"),
    "dst": ("src_addr", "bytes_rev", "packets_rev", "bytes", "packets"),
}
ROLES: tuple[str, ...] = tuple(ROLE_FIELDS)
# The same fields as getters: map(itemgetter) is about twice as fast as a generator per field, and this
# runs for every window the featurizer emits.
_ROLE_GETTERS = {role: tuple(map(itemgetter, fields)) for role, fields in ROLE_FIELDS.items()}
_FIRST, _LAST = itemgetter("first_seen"), itemgetter("last_seen")
_DST_PORT, _SRC_PORT, _PROTOCOL = itemgetter("dst_port"), itemgetter("src_port"), itemgetter("protocol")
_TCP_FLAGS = itemgetter("protocol", "tcp_flags", "tcp_flags_rev")
_REPLY_PACKETS = itemgetter("packets_rev")


def window_features(flows: Sequence[Flow], role: str = "src") -> list[float]:
    """The feature vector of one host window, in FEATURE_NAMES order."""
    n = len(flows)
    if n == 0:
        return [0.0] * N_FEATURES
    peer, sent_bytes, sent_packets, recv_bytes, recv_packets = _ROLE_GETTERS[role]
    bytes_out = sum(map(sent_bytes, flows))
    bytes_in = sum(map(recv_bytes, flows))
    packets_out = sum(map(sent_packets, flows))
    packets_in = sum(map(recv_packets, flows))
    firsts = list(map(_FIRST, flows))
    durations = [max(0.0, last - first) for first, last in zip(firsts, map(_LAST, flows), strict=True)]
    dst_addrs = set(map(peer, flows))
    dst_ports: Counter[int] = Counter(map(_DST_PORT, flows))
    protocols = Counter(map(_PROTOCOL, flows))
    tcp = syn_only = reset = 0
    for protocol, flags, flags_rev in map(_TCP_FLAGS, flows):
        if protocol == TCP:
            tcp += 1
            syn_only += flags & SYN and not flags & ACK
            reset += (flags | flags_rev) & RST != 0
    starts = sorted(firsts)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    gap_mean = math.fsum(gaps) / len(gaps) if gaps else 0.0
    gap_std = math.sqrt(math.fsum((g - gap_mean) ** 2 for g in gaps) / len(gaps)) if gaps else 0.0
    return [
        float(n),
        float(bytes_out),
        float(bytes_in),
        float(packets_out),
        float(packets_in),
        bytes_out / packets_out if packets_out else 0.0,
        bytes_in / packets_in if packets_in else 0.0,
        math.fsum(durations) / n,
        max(durations),
        float(len(dst_addrs)),
        float(len(dst_ports)),
        float(len(set(map(_SRC_PORT, flows)))),
        _entropy(dst_ports, n),
        n / len(dst_addrs),
        protocols[TCP] / n,
        protocols[UDP] / n,
        (protocols[ICMP] + protocols[ICMP6]) / n,
        list(map(_REPLY_PACKETS, flows)).count(0) / n,
        syn_only / tcp if tcp else 0.0,
        reset / tcp if tcp else 0.0,
        sum(c for p, c in dst_ports.items() if p < 1024) / n,
        gap_mean,
        gap_std,
        gap_std / gap_mean if gap_mean > 0 else 0.0,
    ]
