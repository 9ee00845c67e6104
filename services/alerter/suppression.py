"""Suppression rules, pure: an anomaly that matches a live rule opens or feeds no incident.

Rules come from a YAML file (setting `suppression_file`), a list of mappings:

    - id: backup-server-nightly           # names the rule in metrics
      comment: "nightly rsync to the NAS"  # required: why the rule exists
      expires: 2027-01-31                  # required: rules must not live forever
      hosts: [10.0.0.5, 10.1.0.0/16]       # addresses or CIDRs (optional: any host)
      direction: src                       # src (host initiated) or dst (host received) (optional: both)
      daily: "22:00-06:00"                 # UTC time of day of the window's start; may wrap midnight
      from: 2026-12-01T00:00:00Z           # absolute window, event time (optional)
      until: 2026-12-02T00:00:00Z

Every condition given must hold. Time windows are matched against the anomaly's event time (the window
start), so a replay of old traffic is suppressed as it would have been live; `expires` is matched
against the wall clock, because it bounds the rule's life as an operator decision.

Anomaly records carry no ports (a host window aggregates many), so rules cannot match on ports.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import yaml

DIRECTIONS = ("src", "dst")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RuleError(ValueError):
    """A suppression file that cannot be used; the message names the rule and the field."""


@dataclass(frozen=True)
class Rule:
    id: str
    comment: str
    expires: float
    networks: tuple[Network, ...] = ()
    direction: str = ""
    daily: tuple[time, time] | None = None
    start: float | None = None
    end: float | None = None

    def live(self, now: float) -> bool:
        return now < self.expires

    def matches(self, anomaly: dict[str, Any]) -> bool:
        s = anomaly["score"]
        if self.direction and s["role"] != self.direction:
            return False
        if self.networks:
            try:
                address = ipaddress.ip_address(s["host"])
            except ValueError:
                return False
            if not any(address in n for n in self.networks):
                return False
        t = s["window_start"]
        if self.start is not None and t < self.start:
            return False
        if self.end is not None and t >= self.end:
            return False
        return self.daily is None or in_daily_window(t, *self.daily)


def in_daily_window(t: float, start: time, end: time) -> bool:
    """Whether epoch `t` falls in [start, end) UTC time of day; end before start wraps midnight."""
    clock = datetime.fromtimestamp(t, UTC).time()
    if start <= end:
        return start <= clock < end
    return clock >= start or clock < end


def first_match(rules: list[Rule], anomaly: dict[str, Any], now: float) -> Rule | None:
    return next((r for r in rules if r.live(now) and r.matches(anomaly)), None)


def parse_rules(doc: Any) -> list[Rule]:
    """Rules from the parsed YAML document (a list of mappings)."""
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise RuleError("a suppression file is a YAML list of rules")
    rules = [_rule(i, item) for i, item in enumerate(doc)]
    ids = [r.id for r in rules]
    if len(ids) != len(set(ids)):
        raise RuleError(f"rule ids must be unique: {sorted({i for i in ids if ids.count(i) > 1})}")
    return rules


def load_rules(path: str | Path) -> list[Rule]:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RuleError(f"cannot read suppression file {path}: {exc}") from exc
    return parse_rules(doc)


KNOWN = {"id", "comment", "expires", "hosts", "direction", "daily", "from", "until"}


def _rule(index: int, item: Any) -> Rule:
    if not isinstance(item, dict):
        raise RuleError(f"rule #{index + 1} is not a mapping")
    rid = str(item.get("id") or f"rule-{index + 1}")
    where = f"rule {rid!r}"
    unknown = set(item) - KNOWN
    if unknown:
        raise RuleError(f"{where}: unknown field(s) {sorted(unknown)}")
    for required in ("comment", "expires"):
        if not item.get(required):
            raise RuleError(f"{where}: '{required}' is required")
    hosts = item.get("hosts", [])
    if isinstance(hosts, str):
        hosts = [hosts]
    try:
        networks = tuple(ipaddress.ip_network(str(h), strict=False) for h in hosts)
    except ValueError as exc:
        raise RuleError(f"{where}: {exc}") from exc
    direction = str(item.get("direction", ""))
    if direction and direction not in DIRECTIONS:
        raise RuleError(f"{where}: direction must be one of {DIRECTIONS}, not {direction!r}")
    return Rule(
        id=rid,
        comment=str(item["comment"]),
        expires=_epoch(item["expires"], where, "expires"),
        networks=networks,
        direction=direction,
        daily=_daily(item["daily"], where) if "daily" in item else None,
        start=_epoch(item["from"], where, "from") if "from" in item else None,
        end=_epoch(item["until"], where, "until") if "until" in item else None,
    )


def _epoch(value: Any, where: str, field: str) -> float:
    """YAML gives dates and datetimes already parsed; a date means its midnight UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time(), UTC)
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise RuleError(f"{where}: '{field}' is not an ISO date or datetime: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _daily(value: Any, where: str) -> tuple[time, time]:
    try:
        start, end = (time.fromisoformat(part.strip()) for part in str(value).split("-"))
    except ValueError as exc:
        raise RuleError(f"{where}: 'daily' must be HH:MM-HH:MM (UTC), not {value!r}") from exc
    return start, end
