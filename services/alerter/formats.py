"""Wire formats of an alert, pure: CEF (ArcSight Common Event Format), RFC 5424 syslog messages and
RFC 6587 octet-counting frames. No sockets here."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

VENDOR = "FlowSentinel"
PRODUCT = "FlowSentinel"
VERSION = "0.1.0"
APP_NAME = "flowsentinel"
FACILITY_LOCAL0 = 16
# Alert severity -> (syslog severity, CEF severity 0-10).
SEVERITY_MAP = {"low": (5, 3), "medium": (4, 5), "high": (3, 8), "critical": (2, 10)}
NILVALUE = "-"


def cef_header_escape(value: str) -> str:
    """CEF header fields escape backslash and pipe."""
    return value.replace("\\", "\\\\").replace("|", "\\|")


def cef_ext_escape(value: str) -> str:
    """CEF extension values escape backslash, equals and line breaks (pipes are legal there)."""
    escaped = value.replace("\\", "\\\\").replace("=", "\\=")
    return escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def cef(alert: dict[str, Any]) -> str:
    """CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|Extension for one alert."""
    role = alert["role"]
    ext = {
        "rt": str(int(alert["created_at"] * 1000)),
        # The anomalous host is the source of the traffic it initiated, the destination of what it received.
        ("src" if role == "src" else "dst"): alert["host"],
        "start": str(int(alert["first_seen"] * 1000)),
        "end": str(int(alert["last_seen"] * 1000)),
        "cnt": str(alert["anomaly_count"]),
        "externalId": alert["alert_id"],
        "cs1Label": "incidentId",
        "cs1": alert["incident_id"],
        "cs2Label": "modelsFired",
        "cs2": ",".join(alert["models_fired"]),
        "cs3Label": "topFeatures",
        "cs3": ",".join(alert["top_features"]),
        "cs4Label": "direction",
        "cs4": role,
        "cfp1Label": "peakScoreRatio",
        "cfp1": f"{alert['peak_score']:.3f}",
        "msg": alert["summary"],
    }
    header = [
        "CEF:0",
        cef_header_escape(VENDOR),
        cef_header_escape(PRODUCT),
        cef_header_escape(VERSION),
        cef_header_escape(f"flowsentinel:host-anomaly:{role}"),
        cef_header_escape(f"Anomalous {'outbound' if role == 'src' else 'inbound'} traffic of a host"),
        str(SEVERITY_MAP.get(alert["severity"], (5, 3))[1]),
    ]
    return "|".join(header) + "|" + " ".join(f"{k}={cef_ext_escape(v)}" for k, v in ext.items())


def payload(alert: dict[str, Any], fmt: str) -> str:
    if fmt == "cef":
        return cef(alert)
    if fmt == "json":
        return json.dumps(alert, sort_keys=True, separators=(",", ":"))
    raise ValueError(f"unknown syslog payload format {fmt!r}: use cef or json")


def rfc5424(alert: dict[str, Any], msg: str, hostname: str, procid: int) -> bytes:
    """One RFC 5424 message: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG."""
    severity = SEVERITY_MAP.get(alert["severity"], (5, 3))[0]
    pri = FACILITY_LOCAL0 * 8 + severity
    stamp = datetime.fromtimestamp(alert["created_at"], UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    sd = f'[flowsentinel@32473 incident="{_sd_escape(alert["incident_id"])}" severity="{alert["severity"]}"]'
    header = f"<{pri}>1 {stamp} {_header_token(hostname)} {APP_NAME} {procid} ALERT {sd} "
    return header.encode() + msg.encode()


def _sd_escape(value: str) -> str:
    """SD-PARAM values escape '"', '\\' and ']' (RFC 5424 section 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(value: str, limit: int = 255) -> str:
    """Header fields are printable US-ASCII without spaces; an empty one is the NILVALUE."""
    token = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return token or NILVALUE


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: `LEN SP MSG`, safe for messages holding newlines."""
    return str(len(message)).encode() + b" " + message
