"""Incident logic, pure: anomalies of one host (and role) closer together than a gap join one
incident; an alert goes out when an incident opens, when its severity rises, and at most once per
digest interval (event time) while it goes on, not on every anomaly."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

SEVERITIES = ("low", "medium", "high", "critical")
RECENT_WINDOWS = 64  # window ids remembered per incident, so a replayed anomaly is not counted twice


def anomaly_problem(anomaly: dict[str, Any]) -> str | None:
    """Why an anomaly cannot become an alert, or None. Checked before it joins an incident: one
    infinite time or a host name with control characters would break every sink it reaches."""
    s = anomaly["score"]
    for name in ("window_start", "window_end", "autoencoder_score", "autoencoder_threshold"):
        if not math.isfinite(s[name]):
            return f"{name} is not finite"
    if not (math.isfinite(s["lstm_score"]) and math.isfinite(s["lstm_threshold"])):
        return "lstm score is not finite"
    if not 0 <= s["window_start"] < 2**33:  # seconds: up to the year 2242
        return "window_start is not an epoch time"
    host = s["host"]
    if not host or len(host) > 255 or not host.isprintable():
        return "host is empty, too long, or has control characters"
    return None


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def new_incident(anomaly: dict[str, Any]) -> dict[str, Any]:
    s = anomaly["score"]
    seed = f"{s['role']}|{s['host']}|{s['window_start']}".encode()
    return {
        "incident_id": hashlib.sha1(seed).hexdigest()[:16],
        "host": s["host"],
        "role": s["role"],
        "severity": "low",
        "first_seen": s["window_start"],
        "last_seen": s["window_end"],
        "anomaly_count": 0,
        "peak_score": 0.0,
        "models_fired": [],
        "top_features": [],
        "window_ids": [],
        "alerts_sent": 0,
        "last_sent": s["window_end"],
    }


def peak_ratio(anomaly: dict[str, Any]) -> float:
    s = anomaly["score"]
    ae = s["autoencoder_score"] / max(s["autoencoder_threshold"], 1e-12)
    return max(ae, s["lstm_score"] / max(s["lstm_threshold"], 1e-12))


def apply_anomaly(
    incident: dict[str, Any] | None, anomaly: dict[str, Any], gap_seconds: float, digest_seconds: float = 0.0
) -> tuple[dict[str, Any], bool]:
    """The incident after this anomaly, and whether it must be (re-)sent: it opened, escalated, or
    `digest_seconds` (event time, 0 = never) passed since it was last sent."""
    s = anomaly["score"]
    if incident is not None and s["window_id"] in incident["window_ids"]:
        return incident, False
    if incident is None or s["window_start"] - incident["last_seen"] > gap_seconds:
        incident = new_incident(anomaly)
    before = incident["severity"] if incident["anomaly_count"] else None
    incident = dict(incident)
    # An early emission and the closed window are one window: count it once, keep the worst of both.
    window = s["window_id"].split("#")[0]
    if all(w.split("#")[0] != window for w in incident["window_ids"]):
        incident["anomaly_count"] += 1
    incident["first_seen"] = min(incident["first_seen"], s["window_start"])
    incident["last_seen"] = max(incident["last_seen"], s["window_end"])
    incident["peak_score"] = max(incident["peak_score"], peak_ratio(anomaly))
    incident["models_fired"] = sorted(set(incident["models_fired"]) | set(anomaly["models_fired"]))
    features = [c["feature"] for c in anomaly["explanation"]]
    incident["top_features"] = list(dict.fromkeys(incident["top_features"] + features))[:5]
    incident["window_ids"] = (incident["window_ids"] + [s["window_id"]])[-RECENT_WINDOWS:]
    if severity_rank(anomaly["severity"]) > severity_rank(incident["severity"]):
        incident["severity"] = anomaly["severity"]
    escalated = before is None or severity_rank(incident["severity"]) > severity_rank(before)
    # Incidents stored before digests existed carry no last_sent: their first anomaly stands in.
    last_sent = incident.get("last_sent", incident["first_seen"])
    digest_due = digest_seconds > 0 and incident["last_seen"] - last_sent >= digest_seconds
    send = escalated or digest_due
    if send:
        incident["last_sent"] = incident["last_seen"]
    return incident, send


DIRECTION = {"src": "from", "dst": "to"}  # a src incident is what the host sent, a dst one what it received


def to_alert(incident: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The Alert record (schemas/Alert.avsc) for an incident as it stands."""
    n = incident["alerts_sent"]
    summary = (
        f"{incident['severity'].upper()} anomalous traffic {DIRECTION[incident['role']]} {incident['host']}: "
        f"{incident['anomaly_count']} "
        f"anomalous window(s), peak {incident['peak_score']:.1f}x threshold ({', '.join(incident['models_fired'])}); "
        f"top features: {', '.join(incident['top_features'][:3])}"
    )
    return {
        "alert_id": f"{incident['incident_id']}-{n}",
        "incident_id": incident["incident_id"],
        "host": incident["host"],
        "role": incident["role"],
        "severity": incident["severity"],
        "first_seen": incident["first_seen"],
        "last_seen": incident["last_seen"],
        "anomaly_count": incident["anomaly_count"],
        "peak_score": incident["peak_score"],
        "models_fired": incident["models_fired"],
        "top_features": incident["top_features"],
        "summary": summary,
        "created_at": time.time() if now is None else now,
        "window_ids": incident["window_ids"][-8:],
    }
