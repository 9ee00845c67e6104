"""Incident grouping and severity, pure."""

from services.alerter.incidents import apply_anomaly, to_alert
from services.scorer.scoring import explain, severity


def anomaly(window_start: float, sev: str = "low", ae: float = 2.0, host: str = "10.0.0.5") -> dict:
    score = {
        "window_id": f"src|{host}|{window_start}",
        "host": host,
        "role": "src",
        "window_start": window_start,
        "window_end": window_start + 60,
        "autoencoder_score": ae,
        "autoencoder_threshold": 1.0,
        "lstm_score": 0.5,
        "lstm_threshold": 1.0,
    }
    return {"score": score, "models_fired": ["autoencoder"], "severity": sev, "explanation": [{"feature": "f1"}]}


def test_anomalies_within_the_gap_form_one_incident_sent_on_open_and_escalation() -> None:
    incident, sends = None, []
    for start, sev in [(0, "low"), (60, "low"), (120, "high"), (180, "medium"), (240, "critical")]:
        incident, send = apply_anomaly(incident, anomaly(start, sev), gap_seconds=600)
        sends.append(send)
    assert sends == [True, False, True, False, True]
    assert incident["anomaly_count"] == 5
    assert incident["severity"] == "critical"
    assert (incident["first_seen"], incident["last_seen"]) == (0, 300)


def test_a_gap_opens_a_new_incident() -> None:
    first, _ = apply_anomaly(None, anomaly(0), gap_seconds=600)
    second, send = apply_anomaly(first, anomaly(10_000), gap_seconds=600)
    assert send and second["incident_id"] != first["incident_id"] and second["anomaly_count"] == 1


def test_a_replayed_anomaly_is_not_counted_twice() -> None:
    incident, _ = apply_anomaly(None, anomaly(0), gap_seconds=600)
    again, send = apply_anomaly(incident, anomaly(0), gap_seconds=600)
    assert not send and again["anomaly_count"] == 1


def test_alert_names_host_severity_and_features() -> None:
    incident, _ = apply_anomaly(None, anomaly(0, "high", ae=7.5), gap_seconds=600)
    alert = to_alert(incident, now=1.0)
    assert alert["host"] == "10.0.0.5" and alert["severity"] == "high" and alert["peak_score"] == 7.5
    assert "f1" in alert["summary"] and "HIGH" in alert["summary"]


def test_the_summary_says_which_way_the_traffic_went() -> None:
    outbound = anomaly(0)
    inbound = anomaly(0, host="10.0.0.9")
    inbound["score"].update(role="dst", window_id="dst|10.0.0.9|0")
    assert "traffic from 10.0.0.5" in to_alert(apply_anomaly(None, outbound, 600)[0])["summary"]
    alert = to_alert(apply_anomaly(None, inbound, 600)[0])
    assert "traffic to 10.0.0.9" in alert["summary"] and alert["role"] == "dst"


def test_severity_steps_and_agreement() -> None:
    assert [severity(r, 1) for r in (1.1, 2.5, 6, 50)] == ["low", "medium", "high", "critical"]
    assert severity(1.1, 2) == "medium" and severity(50, 2) == "critical"


def test_explanation_ranks_features_by_error_share() -> None:
    out = explain([10.0, 20.0, 30.0], [0.1, 0.6, 0.3], ["a", "b", "c"], top=2)
    assert [c["feature"] for c in out] == ["b", "c"]
    assert abs(out[0]["share"] - 0.6) < 1e-9 and out[0]["value"] == 20.0


def test_an_ongoing_incident_is_resent_once_per_digest_interval() -> None:
    incident, sends = None, []
    for start in range(0, 3600 * 3, 60):  # three hours of low anomalies, one a minute, no escalation
        incident, send = apply_anomaly(incident, anomaly(start), gap_seconds=600, digest_seconds=3600)
        sends.append(send)
    # opened at 0-60 s, then digests when last_seen reaches 3660 s and 7260 s
    assert [i * 60 for i, s in enumerate(sends) if s] == [0, 3600, 7200]
    assert incident["anomaly_count"] == 180


def test_no_digest_when_the_interval_is_off() -> None:
    incident, sends = None, []
    for start in range(0, 3600 * 3, 60):
        incident, send = apply_anomaly(incident, anomaly(start), gap_seconds=600, digest_seconds=0)
        sends.append(send)
    assert sum(sends) == 1


def test_an_incident_stored_before_digests_existed_still_works() -> None:
    incident, _ = apply_anomaly(None, anomaly(0), gap_seconds=600)
    del incident["last_sent"]
    _, send = apply_anomaly(incident, anomaly(4000), gap_seconds=600_000, digest_seconds=3600)
    assert send


def test_early_and_closed_emissions_of_one_window_count_once_but_can_escalate() -> None:
    early = anomaly(0, "low")
    early["score"]["window_id"] += "#50"
    incident, _ = apply_anomaly(None, early, gap_seconds=600)
    closed, send = apply_anomaly(incident, anomaly(0, "high"), gap_seconds=600)
    assert closed["anomaly_count"] == 1 and closed["severity"] == "high" and send


def test_anomalies_that_would_break_a_sink_are_named() -> None:
    from services.alerter.incidents import anomaly_problem

    assert anomaly_problem(anomaly(0)) is None
    bad_time = anomaly(0)
    bad_time["score"]["window_start"] = float("inf")
    forged = anomaly(0, host="10.0.0.7\nALERT fake line")
    huge = anomaly(-1e18)
    assert "not finite" in anomaly_problem(bad_time)
    assert "control characters" in anomaly_problem(forged)
    assert "epoch" in anomaly_problem(huge)
