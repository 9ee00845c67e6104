"""Suppression rules, pure: parsing, matching by host/CIDR, direction and time windows, expiry."""

from datetime import UTC, datetime

import pytest
import yaml

from services.alerter.suppression import RuleError, first_match, parse_rules

RULES = """
- id: nas-backup
  comment: nightly rsync from the backup server
  expires: 2030-01-01
  hosts: [10.0.0.0/24]
  direction: src
  daily: "22:00-06:00"
- id: pentest
  comment: the red team's week, ticket SEC-42
  expires: 2030-01-01
  hosts: 192.168.7.7
  from: 2026-12-01T00:00:00Z
  until: 2026-12-08T00:00:00Z
- id: old
  comment: expired rule must not match
  expires: 2020-01-01
  hosts: [0.0.0.0/0, "::/0"]
"""
NOW = datetime(2026, 12, 3, tzinfo=UTC).timestamp()


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def anomaly(host: str, role: str, when: float) -> dict:
    return {"score": {"host": host, "role": role, "window_start": when}}


def matched(host: str, role: str, iso: str) -> str | None:
    rule = first_match(parse_rules(yaml.safe_load(RULES)), anomaly(host, role, at(iso)), NOW)
    return rule.id if rule else None


def test_cidr_direction_and_a_daily_window_that_wraps_midnight() -> None:
    assert matched("10.0.0.9", "src", "2026-12-02T23:30:00") == "nas-backup"
    assert matched("10.0.0.9", "src", "2026-12-03T05:59:00") == "nas-backup"
    assert matched("10.0.0.9", "src", "2026-12-03T06:00:00") is None  # the window's end is open
    assert matched("10.0.0.9", "dst", "2026-12-02T23:30:00") is None  # wrong direction
    assert matched("10.0.1.9", "src", "2026-12-02T23:30:00") is None  # outside the CIDR


def test_absolute_window_and_a_single_address() -> None:
    assert matched("192.168.7.7", "dst", "2026-12-05T12:00:00") == "pentest"
    assert matched("192.168.7.7", "dst", "2026-12-08T00:00:00") is None
    assert matched("192.168.7.8", "dst", "2026-12-05T12:00:00") is None


def test_an_expired_rule_matches_nothing_even_a_catch_all() -> None:
    assert matched("8.8.8.8", "src", "2019-06-01T00:00:00") is None
    rules = parse_rules(yaml.safe_load(RULES))
    assert first_match(rules, anomaly("8.8.8.8", "src", 0), at("2019-12-31T00:00:00")).id == "old"


def test_a_host_that_is_not_an_address_matches_only_rules_without_hosts() -> None:
    rules = parse_rules([{"comment": "all inbound", "expires": "2030-01-01", "direction": "dst"}])
    assert first_match(rules, anomaly("not-an-ip", "dst", 0), NOW).id == "rule-1"
    assert first_match(parse_rules(yaml.safe_load(RULES)), anomaly("not-an-ip", "src", 0), NOW) is None


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"expires": "2030-01-01"}, "'comment' is required"),
        ({"comment": "x"}, "'expires' is required"),
        ({"comment": "x", "expires": "2030-01-01", "hosts": ["10.0.0.300"]}, "does not appear to be"),
        ({"comment": "x", "expires": "2030-01-01", "direction": "out"}, "direction must be"),
        ({"comment": "x", "expires": "2030-01-01", "daily": "late"}, "HH:MM-HH:MM"),
        ({"comment": "x", "expires": "soon"}, "not an ISO date"),
        ({"comment": "x", "expires": "2030-01-01", "port": 22}, "unknown field"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(rule: dict, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_rules([rule])


def test_rule_ids_are_unique() -> None:
    rule = {"id": "a", "comment": "x", "expires": "2030-01-01"}
    with pytest.raises(RuleError, match="unique"):
        parse_rules([rule, rule])
