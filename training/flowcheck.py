"""Is this a flow the pipeline can count? One check for dataset readers and the featurizer, so a value
no exporter could send (a NaN time, a port above 65535, a count past 2^63, a flow from the future)
is rejected with a reason instead of crashing a service or poisoning a watermark."""

from __future__ import annotations

import ipaddress
import math
import numbers
from typing import Any

MAX_COUNT = 2**63 - 1
NUMBERS = (int, float)
MAX_ADDRESS = 64  # an IPv6 address with a zone index fits; a 350 kB "address" would not fit in a message
MAX_LABEL = 256
RANGES = {
    "src_port": 65535,
    "dst_port": 65535,
    "protocol": 255,
    "bytes": MAX_COUNT,
    "packets": MAX_COUNT,
    "bytes_rev": MAX_COUNT,
    "packets_rev": MAX_COUNT,
    "tcp_flags": 0xFFFF,
    "tcp_flags_rev": 0xFFFF,
}


def flow_problem(
    flow: dict[str, Any], now: float | None = None, future_tolerance: float = 3600.0, check_addresses: bool = False
) -> str | None:
    """Why this flow cannot be used, or None. `now` (epoch s) rejects flows starting more than
    `future_tolerance` seconds ahead of it: one such flow would close every window of its partition."""
    # Plain comparisons and exact type tests: this runs once per flow in the featurizer's hot path.
    for name in ("first_seen", "last_seen"):
        value = flow[name]
        if not (type(value) in NUMBERS or isinstance(value, numbers.Real)) or not 0 <= value < math.inf:  # NaN too
            return f"invalid {name}: not a finite epoch time"
    for name, top in RANGES.items():
        value = flow.get(name, 0)
        if not (type(value) is int or isinstance(value, numbers.Integral)) or not 0 <= value <= top:
            return f"invalid {name}: outside 0..{top}"
    if not 1 <= flow.get("sampling_interval", 1) <= 2**31 - 1:
        return "invalid sampling_interval"
    for name in ("src_addr", "dst_addr"):  # a host name travels in every window and alert: keep it sane
        if len(flow[name]) > MAX_ADDRESS:
            return f"invalid {name}: {len(flow[name])} characters, an address has at most {MAX_ADDRESS}"
    if len(flow.get("attack_type") or "") > MAX_LABEL:  # labels are copied into every window of the host
        return f"invalid attack_type: longer than {MAX_LABEL} characters"
    if now is not None and flow["first_seen"] > now + future_tolerance:
        return (
            f"from the future: starts {flow['first_seen'] - now:.0f} s after now (tolerance {future_tolerance:.0f} s)"
        )
    if check_addresses:
        for name in ("src_addr", "dst_addr"):
            try:
                ipaddress.ip_address(flow[name])
            except ValueError:
                return f"invalid {name}: not an IP address"
    return None
