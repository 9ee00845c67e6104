"""Every registered detector honours the one interface (contract test), and each rule of the rule-based IDS
fires on windows crafted from real IoT-23 flows just past its published threshold, and not at it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.paths import SAMPLE
from training.datasets import load_flows
from training.detectors import DETECTORS, DetectorConfig, WindowData, create
from training.detectors import rules as R
from training.evaluation.data import load_capture, windows_of

CONFIG = DetectorConfig(seeds=(0,), epochs=1, history_windows=4)


@pytest.fixture(scope="module")
def data() -> WindowData:
    """Benign honeypot windows and the Mirai capture's windows, as one set."""
    honeypot = load_capture(SAMPLE / "CTU-Honeypot-Capture-7-1-labeled.csv.gz", 60.0, 4).data
    mirai = load_capture(SAMPLE / "CTU-Malware-Capture-34-1-labeled.csv.gz", 60.0, 4).data
    return WindowData.concat([honeypot, mirai.subset(np.arange(len(mirai)) % 8 == 0)])


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_contract(name: str, data: WindowData) -> None:
    detector = create(name, CONFIG)
    assert detector.name == name and detector.kind
    early = np.array([w["window_start"] for w in data.windows]) < np.median([w["window_start"] for w in data.windows])
    train_mask = early & (~data.malicious | detector.supervised)
    validation = data.subset(~early & ~data.malicious)
    detector.fit(data.subset(train_mask), validation)
    scores = detector.score(data)
    assert scores.shape == (len(data),) and np.isfinite(scores).all()
    np.testing.assert_array_equal(detector.score(data), scores)  # scoring does not learn
    assert detector.score(data.subset(np.zeros(len(data), dtype=bool))).shape == (0,)
    assert detector.fixed_threshold is None or np.isfinite(detector.fixed_threshold)
    members = detector.member_scores(data)
    assert set(members) <= set(CONFIG.seeds) and all(m.shape == (len(data),) for m in members.values())
    # Same seed, same detector: a second instance fitted the same way scores the same.
    again = create(name, CONFIG)
    again.fit(data.subset(train_mask), validation)
    np.testing.assert_allclose(again.score(data), scores, rtol=1e-3, atol=1e-5)


def test_unknown_detector_is_named() -> None:
    with pytest.raises(ValueError, match="unknown detector 'nope'; known: autoencoder"):
        create("nope", CONFIG)


@pytest.fixture(scope="module")
def real_flow() -> dict[str, Any]:
    """A real established TCP flow from the Mirai capture: the template every crafted flow starts from."""
    flows, _ = load_flows([SAMPLE / "CTU-Malware-Capture-34-1-labeled.csv.gz"])
    return next(f for f in flows if f["protocol"] == 6 and f["tcp_flags"] & 16 and f["tcp_flags_rev"] & 2)


def craft(template: dict[str, Any], n: int, spacing: float, **changes: Any) -> list[dict[str, Any]]:
    """n copies of a real flow from one host, `spacing` seconds apart, with `changes` (callables get i)."""
    t0 = 1_599_999_960.0  # a window boundary (a multiple of 60 s)
    flows = []
    for i in range(n):
        f = {**template, "src_addr": "10.0.0.66", "first_seen": t0 + i * spacing, "last_seen": t0 + i * spacing + 0.1}
        f.update({k: v(i) if callable(v) else v for k, v in changes.items()})
        flows.append(f)
    return flows


def rule_max(flows: list[dict[str, Any]], rule: str) -> float:
    data = windows_of(flows, 60.0, 4)
    return float(R.RuleIds().ratios(data)[:, R.RULES.index(rule)].max())


FAILED = {"tcp_flags": R.SYN, "tcp_flags_rev": 0, "packets": 1, "packets_rev": 0, "bytes_rev": 0}


@pytest.mark.parametrize(
    ("rule", "threshold", "spacing", "changes"),
    [
        ("port_scan", R.PORT_SCAN_PORTS, 1.0, {**FAILED, "dst_addr": "10.0.0.1", "dst_port": lambda i: 1000 + i}),
        ("address_scan", R.ADDR_SCAN_HOSTS, 1.0, {**FAILED, "dst_port": 23, "dst_addr": lambda i: f"10.1.0.{i}"}),
        ("ssh_telnet_bruteforce", R.SSH_GUESSES, 50.0, {"dst_addr": "10.0.0.2", "dst_port": 22}),
        ("ftp_bruteforce", R.FTP_ATTEMPTS, 40.0, {"dst_addr": "10.0.0.3", "dst_port": 21}),
    ],
)
def test_count_rules_fire_just_past_their_threshold(
    real_flow: dict[str, Any], rule: str, threshold: float, spacing: float, changes: dict[str, Any]
) -> None:
    n = int(threshold)
    assert rule_max(craft(real_flow, n, spacing, **changes), rule) == pytest.approx(1.0)  # at it: no alert
    assert rule_max(craft(real_flow, n + 1, spacing, **changes), rule) > 1.0
    score = R.RuleIds().score(windows_of(craft(real_flow, n + 1, spacing, **changes), 60.0, 4))
    assert score.max() > R.RuleIds.fixed_threshold


def test_syn_flood_and_syn_scan(real_flow: dict[str, Any]) -> None:
    # 300 half-open attempts in a minute: over ntopng's 256 SYN/min, far under its 256 SYN/s.
    scan = craft(real_flow, 300, 0.19, **FAILED, dst_addr="10.0.0.4", dst_port=lambda i: 80)
    assert rule_max(scan, "syn_scan") > 1.0 and rule_max(scan, "syn_flood") < 1.0
    # 100 half-open flows of 200 SYNs each in a minute: 333 SYN/s.
    flood = craft(real_flow, 100, 0.5, **{**FAILED, "packets": 200}, dst_addr="10.0.0.5", dst_port=80)
    assert rule_max(flood, "syn_flood") > 1.0


def test_flow_flood(real_flow: dict[str, Any]) -> None:
    flows = craft(real_flow, 257 * 60, 60.0 / (257 * 60), dst_addr="10.0.0.6")
    assert rule_max(flows, "flow_flood") > 1.0


def test_amplification(real_flow: dict[str, Any]) -> None:
    dns = {"protocol": R.UDP, "tcp_flags": 0, "tcp_flags_rev": 0, "dst_port": 53, "dst_addr": "10.0.0.53", "bytes": 64}
    amplified = craft(real_flow, 11, 5.0, **dns, bytes_rev=64 * 30)
    plain = craft(real_flow, 11, 5.0, **dns, bytes_rev=64 * 2)
    assert rule_max(amplified, "amplification") > 1.0
    assert rule_max(plain, "amplification") == 0.0


def test_beaconing_needs_count_and_regularity(real_flow: dict[str, Any]) -> None:
    peer = {"dst_addr": "10.0.0.7", "dst_port": 443}
    periodic = craft(real_flow, 30, 300.0, **peer)
    assert rule_max(periodic, "beaconing") > 1.0
    assert rule_max(craft(real_flow, 23, 300.0, **peer), "beaconing") <= 1.0  # RITA: more than 23
    rng = np.random.default_rng(0)
    jittered = craft(real_flow, 30, 1.0, **peer)
    times = np.cumsum(rng.exponential(300.0, len(jittered)))
    for f, t in zip(jittered, times, strict=True):
        f["first_seen"] = f["last_seen"] = 1_600_000_000.0 + float(t)
    assert rule_max(jittered, "beaconing") < 1.0


def test_rule_ids_learns_nothing(data: WindowData) -> None:
    ids = R.RuleIds()
    before = ids.score(data)
    ids.fit(data, data)
    np.testing.assert_array_equal(ids.score(data), before)
