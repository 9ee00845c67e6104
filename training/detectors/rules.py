"""A traditional rule-based IDS over flows and host windows, with the published defaults of real tools.

Each rule looks at the flows the window's host started, over the rule's own look-back ending at the
window's end (when the window closes, as the featurizer emits it), and yields a ratio observed / threshold.
The detector's score is the largest ratio; it alerts when a ratio exceeds 1 (observed > threshold). Zeek's
SumStats thresholds fire on reaching the value, one count earlier: immaterial at these counts. Nothing is
fitted or tuned: `fit` does nothing, so the rule IDS cannot learn the test data (nor the training data).

Thresholds and where they come from (also in docs/evaluation/report.md):
- address scan: > 25 distinct hosts with failed TCP connections on one port in 5 min — Zeek
  policy/misc/scan.zeek, Scan::addr_scan_threshold = 25.0, Scan::addr_scan_interval = 5min.
- port scan: > 15 distinct ports with failed TCP connections on one host in 5 min — Zeek scan.zeek,
  Scan::port_scan_threshold = 15.0, Scan::port_scan_interval = 5min.
- SYN flood: > 256 SYN/s sent — ntopng host check syn_flood (check_definitions/host/syn_flood.lua,
  default threshold 256, unit syn/sec).
- SYN scan: > 256 SYN/min sent — ntopng host check syn_scan (host/syn_scan.lua, 256, unit syn/min).
- flow flood: > 256 flows/s started — ntopng host check flow_flood (host/flow_flood.lua, 256, flows/sec).
- SSH brute force: > 30 SSH connections in 30 min — Zeek policy/protocols/ssh/detect-bruteforcing.zeek,
  SSH::password_guesses_limit = 30, SSH::guessing_timeout = 30 mins. Zeek counts failed logins, which
  flows cannot see; every established SSH connection counts here. Telnet (23, 2323: Mirai's vector) uses
  the same values: OUR extension, Zeek ships no Telnet policy.
- FTP brute force: > 20 FTP connections in 15 min — Zeek policy/protocols/ftp/detect-bruteforcing.zeek,
  FTP::bruteforce_threshold = 20, FTP::bruteforce_measurement_interval = 15mins (again connections, not
  rejected logins).
- amplification: UDP answers from reflection-prone services (DNS, NTP, SNMP, SSDP, CharGEN, QOTD, CLDAP,
  memcached) whose bytes exceed the request by the protocol's bandwidth amplification factor of US-CERT
  alert TA14-017A, or unsolicited answers from those ports; > 10 such flows per minute. The factors are
  published; the count of 10 is OUR choice (ntopng's DNS/NTP traffic checks ship without a default).
- beaconing: > 23 connections of one host to one peer and port within 24 h — RITA (Active
  Countermeasures) Beacon.DefaultConnectionThresh = 23, compared with "$gt" — whose inter-arrival times
  are regular: RITA's timestamp score, the mean of (1 - |Bowley skewness|) and (1 - MAD/median) of the
  intervals, at least 0.8 (RITA reports the score; the 0.8 cut is OUR choice).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.detectors.base import DetectorConfig, Flow, WindowData, WindowDetector

TCP, UDP = 6, 17
SYN, RST, ACK = 2, 4, 16

ADDR_SCAN_HOSTS, ADDR_SCAN_S = 25.0, 300.0  # Zeek Scan::addr_scan_threshold / addr_scan_interval
PORT_SCAN_PORTS, PORT_SCAN_S = 15.0, 300.0  # Zeek Scan::port_scan_threshold / port_scan_interval
SYN_FLOOD_PER_S = 256.0  # ntopng host check syn_flood
SYN_SCAN_PER_MIN = 256.0  # ntopng host check syn_scan
FLOW_FLOOD_PER_S = 256.0  # ntopng host check flow_flood
SSH_GUESSES, SSH_S = 30.0, 1800.0  # Zeek SSH::password_guesses_limit / guessing_timeout
SSH_PORTS = {22, 23, 2323}  # 22 per Zeek; Telnet 23/2323 with the same values is our extension
FTP_ATTEMPTS, FTP_S = 20.0, 900.0  # Zeek FTP::bruteforce_threshold / bruteforce_measurement_interval
FTP_PORTS = {21}
# US-CERT TA14-017A bandwidth amplification factors (the lower bound where a range is given).
AMPLIFICATION_FACTOR = {53: 28.0, 123: 556.9, 161: 6.3, 1900: 30.8, 19: 358.8, 17: 140.3, 389: 46.0, 11211: 10000.0}
AMPLIFIED_PER_MIN, AMPLIFICATION_S = 10.0, 60.0  # our choice: no tool publishes a default count
BEACON_CONNECTIONS, BEACON_S = 23.0, 86400.0  # RITA Beacon.DefaultConnectionThresh over one day of logs
BEACON_TS_SCORE = 0.8  # our cut on RITA's timestamp score

RULES = (
    "address_scan",
    "port_scan",
    "syn_flood",
    "syn_scan",
    "flow_flood",
    "ssh_telnet_bruteforce",
    "ftp_bruteforce",
    "amplification",
    "beaconing",
)
LOOKBACK_S = max(ADDR_SCAN_S, PORT_SCAN_S, SSH_S, FTP_S, AMPLIFICATION_S, 60.0)


def failed_tcp(f: Flow) -> bool:
    """A TCP connection whose handshake never completed: the responder sent no SYN back or the originator
    never acknowledged (Zeek's S0, REJ, RSTOS0, SH... states), what Zeek's scan policy counts."""
    return f["protocol"] == TCP and not (f["tcp_flags_rev"] & SYN and f["tcp_flags"] & ACK)


def syn_packets(f: Flow) -> int:
    """SYNs the originator sent: every packet of a half-open attempt (retransmissions), else one."""
    if f["protocol"] != TCP or not f["tcp_flags"] & SYN:
        return 0
    return max(1, f["packets"]) if not f["tcp_flags"] & ACK else 1


def amplified(f: Flow) -> bool:
    if f["protocol"] != UDP:
        return False
    to_service = AMPLIFICATION_FACTOR.get(f["dst_port"])
    if to_service is not None and f["bytes_rev"] >= to_service * max(f["bytes"], 1):
        return True  # a request answered with an amplified reply
    # An answer nobody asked for: from a reflection-prone source port, with nothing coming back.
    return f["src_port"] in AMPLIFICATION_FACTOR and f["dst_port"] > 1023 and f["packets_rev"] == 0


def timestamp_score(times: np.ndarray) -> float:
    """RITA-style regularity of connection times: mean of (1 - |Bowley skew|) and (1 - MAD / median) of the
    intervals; 1 for a perfect metronome."""
    gaps = np.diff(np.sort(times))
    if len(gaps) < 3:
        return 0.0
    q1, q2, q3 = np.quantile(gaps, [0.25, 0.5, 0.75])
    skew = 0.0 if q3 == q1 else (q3 + q1 - 2 * q2) / (q3 - q1)
    madm = float(np.median(np.abs(gaps - q2)))
    return float((1.0 - abs(skew) + max(0.0, 1.0 - madm / q2 if q2 > 0 else 0.0)) / 2.0)


@dataclass
class HostFlows:
    """One host's flows in start order, for look-backs by binary search."""

    starts: list[float]
    flows: list[Flow]


def rule_ratios(window: dict[str, Any], host: HostFlows, pairs: dict[tuple[str, str, int], np.ndarray]) -> list[float]:
    """observed / threshold per rule (RULES order) for one host window, closing at its end."""
    end = window["window_end"]
    span = window["window_end"] - window["window_start"]

    def recent(seconds: float) -> list[Flow]:
        lo, hi = bisect_left(host.starts, end - seconds), bisect_left(host.starts, end)
        return host.flows[lo:hi]

    scan = [f for f in recent(ADDR_SCAN_S) if failed_tcp(f)]
    hosts_per_port: dict[int, set[str]] = defaultdict(set)
    ports_per_host: dict[str, set[int]] = defaultdict(set)
    for f in scan:
        hosts_per_port[f["dst_port"]].add(f["dst_addr"])
        ports_per_host[f["dst_addr"]].add(f["dst_port"])
    now = recent(span)
    syns = sum(syn_packets(f) for f in now)
    ssh = sum(1 for f in recent(SSH_S) if f["dst_port"] in SSH_PORTS and not failed_tcp(f))
    ftp = sum(1 for f in recent(FTP_S) if f["dst_port"] in FTP_PORTS and not failed_tcp(f))
    amp = sum(1 for f in recent(AMPLIFICATION_S) if amplified(f))
    beacon = 0.0
    for key in {(f["dst_addr"], f["dst_port"]) for f in now}:
        all_times = pairs[(window["host"], *key)]
        times = all_times[np.searchsorted(all_times, end - BEACON_S) : np.searchsorted(all_times, end)]
        if len(times) > BEACON_CONNECTIONS * 0.5:  # below half the count the ratio cannot matter
            beacon = max(beacon, min(len(times) / BEACON_CONNECTIONS, timestamp_score(times) / BEACON_TS_SCORE))
    return [
        max((len(s) for s in hosts_per_port.values()), default=0) / ADDR_SCAN_HOSTS,
        max((len(s) for s in ports_per_host.values()), default=0) / PORT_SCAN_PORTS,
        syns / span / SYN_FLOOD_PER_S,
        syns / (span / 60.0) / SYN_SCAN_PER_MIN,
        len(now) / span / FLOW_FLOOD_PER_S,
        ssh / SSH_GUESSES,
        ftp / FTP_ATTEMPTS,
        amp / (AMPLIFICATION_S / 60.0) / AMPLIFIED_PER_MIN,
        beacon,
    ]


class RuleIds(WindowDetector):
    name = "rule_ids"
    kind = "traditional rule-based IDS: Zeek scan/SSH/FTP policies, ntopng host checks, RITA beaconing defaults"
    fixed_threshold = 1.0

    def __init__(self, config: DetectorConfig | None = None) -> None:
        pass  # nothing to configure: the thresholds are the published defaults above

    def fit(self, train: WindowData, validation: WindowData) -> None:
        """Nothing to learn: a rule IDS ships with its thresholds."""

    def ratios(self, data: WindowData) -> np.ndarray:
        """(N, len(RULES)) observed / threshold of every rule for every window."""
        by_host: dict[str, list[Flow]] = defaultdict(list)
        pair_times: dict[tuple[str, str, int], list[float]] = defaultdict(list)
        for w, flows in zip(data.windows, data.flows, strict=True):
            by_host[w["host"]].extend(flows)
            for f in flows:
                pair_times[(w["host"], f["dst_addr"], f["dst_port"])].append(f["first_seen"])
        hosts = {}
        for h, flows in by_host.items():
            flows.sort(key=lambda f: f["first_seen"])
            hosts[h] = HostFlows([f["first_seen"] for f in flows], flows)
        pairs = {k: np.sort(np.asarray(v)) for k, v in pair_times.items()}
        out = np.zeros((len(data), len(RULES)))
        for i, w in enumerate(data.windows):
            out[i] = rule_ratios(w, hosts[w["host"]], pairs)
        return out

    def score(self, data: WindowData) -> np.ndarray:
        if len(data) == 0:
            return np.zeros(0)
        return self.ratios(data).max(axis=1)

    def params(self) -> dict[str, Any]:
        return {"rules": list(RULES), "alert": "any rule's observed value above its published threshold"}
