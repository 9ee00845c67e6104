"""Alerts as the alerter builds them, from synthetic anomalies of distinct hosts."""

from __future__ import annotations

from typing import Any

from services.alerter.incidents import apply_anomaly, to_alert


def anomaly(host: str, start: float, severity: str = "high", role: str = "src") -> dict[str, Any]:
    score = {
        "window_id": f"{role}|{host}|{start}",
        "host": host,
        "role": role,
        "window_start": start,
        "window_end": start + 60,
        "final": True,
        "flow_count": 120,
        "first_flow_seen": start,
        "autoencoder_score": 9.0,
        "autoencoder_threshold": 1.5,
        "lstm_score": 0.2,
        "lstm_threshold": 0.4,
        "history_length": 8,
        "is_anomaly": True,
        "model_versions": {"autoencoder": "1", "lstm": "1"},
        "scored_at": start + 61,
        "emitted_at": start + 60.5,
        "malicious_flows": 0,
        "labelled_flows": 0,
        "attack_types": [],
    }
    explanation = [
        {"feature": "dst_port_unique", "value": 212.0, "share": 0.61},
        {"feature": "syn_only_ratio", "value": 0.97, "share": 0.22},
    ]
    return {"score": score, "models_fired": ["autoencoder"], "severity": severity, "explanation": explanation}


def alerts(n: int, start: float = 1_545_000_000.0) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        incident, _ = apply_anomaly(None, anomaly(f"10.0.{i // 250}.{i % 250 + 1}", start), gap_seconds=600)
        out.append(to_alert(incident, now=start + 61))
    return out
