"""CEF, RFC 5424 and RFC 6587 framing of alerts, and the retry schedule: pure."""

import json

from services.alerter.delivery import RetryPolicy
from services.alerter.formats import cef, octet_frame, payload, rfc5424
from tests.syslog_parse import parse_5424, parse_cef

ALERT = {
    "alert_id": "ab12-0",
    "incident_id": "ab12",
    "host": "192.168.1.195",
    "role": "src",
    "severity": "high",
    "first_seen": 1_545_000_000.0,
    "last_seen": 1_545_000_600.0,
    "anomaly_count": 7,
    "peak_score": 12.345,
    "models_fired": ["autoencoder", "lstm"],
    "top_features": ["dst_port_entropy", "syn|only=ratio"],
    # every character CEF escapes, in header and extension
    "summary": "HIGH a=b | c\\d\nnext line",
    "created_at": 1_545_000_601.5,
    "window_ids": [],
}


def test_cef_header_and_extension_survive_escaping() -> None:
    header, ext = parse_cef(cef(ALERT))
    assert header == [
        "CEF:0",
        "FlowSentinel",
        "FlowSentinel",
        "0.1.0",
        "flowsentinel:host-anomaly:src",
        "Anomalous outbound traffic of a host",
        "8",
    ]
    assert ext["msg"] == ALERT["summary"]
    assert ext["cs3"] == "dst_port_entropy,syn|only=ratio"
    assert ext["src"] == "192.168.1.195" and "dst" not in ext
    assert (ext["cs1Label"], ext["cs1"], ext["externalId"]) == ("incidentId", "ab12", "ab12-0")
    assert (ext["cnt"], ext["start"], ext["rt"]) == ("7", "1545000000000", "1545000601500")
    assert ext["cfp1"] == "12.345"


def test_an_inbound_incident_names_the_host_as_destination() -> None:
    _, ext = parse_cef(cef({**ALERT, "role": "dst"}))
    assert ext["dst"] == "192.168.1.195" and "src" not in ext


def test_rfc5424_message_parses_with_priority_timestamp_and_structured_data() -> None:
    msg = rfc5424(ALERT, payload(ALERT, "cef"), "sensor 1", 42).decode()
    parsed = parse_5424(msg)
    assert parsed.pri == 16 * 8 + 3  # local0, error for a high alert
    assert parsed.timestamp.timestamp() == ALERT["created_at"]
    assert (parsed.hostname, parsed.app_name, parsed.procid, parsed.msgid) == ("sensor1", "flowsentinel", "42", "ALERT")
    assert parsed.sd == {"flowsentinel@32473": {"incident": "ab12", "severity": "high"}}
    assert parse_cef(parsed.msg)[1]["msg"] == ALERT["summary"]


def test_octet_counting_frame_counts_bytes_not_characters() -> None:
    message = "é\nx".encode()
    assert octet_frame(message) == b"4 " + message


def test_json_payload_is_the_alert() -> None:
    assert json.loads(payload(ALERT, "json")) == ALERT


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    policy = RetryPolicy(base_s=1.0, max_s=60.0, max_attempts=9)
    assert policy.schedule() == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert RetryPolicy(0.5, 10.0, 1).schedule() == []
