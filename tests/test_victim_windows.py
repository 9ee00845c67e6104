"""Destination-host windows see the victim of a flood, which source-host windows never name: IoT-23
capture 34-1 (not a training capture) holds a Mirai DDoS from 192.168.1.195 against 123.59.209.185."""

from collections import Counter

import numpy as np

from services.scorer.backends import InProcessBackend, role_models
from tests.paths import SAMPLE
from training.datasets import load_flows
from training.sequences import host_sequences
from training.windows import build_windows

CAPTURE = SAMPLE / "CTU-Malware-Capture-34-1-labeled.csv.gz"
VICTIM = "123.59.209.185"


def test_the_flood_victim_has_dst_windows_that_the_dst_models_flag(trained_models) -> None:
    flows, _ = load_flows([CAPTURE])
    ddos = [f for f in flows if f["attack_type"] == "DDoS"]
    assert Counter(f["dst_addr"] for f in ddos).most_common(1)[0][0] == VICTIM, "the capture is as described"
    backend = InProcessBackend(trained_models)
    try:
        src = build_windows(flows, 60.0, "src")
        dst = build_windows(flows, 60.0, "dst")
        assert VICTIM not in {w["host"] for w in src}, "as a source the victim is invisible"
        k = backend.cards[role_models("dst")[1]]["history_windows"]
        result = backend.score(np.array([w["features"] for w in dst]), host_sequences(dst, k), role="dst")
    finally:
        backend.close()
    threshold = result.cards[role_models("dst")[0]]["threshold"]
    victim = [i for i, w in enumerate(dst) if w["host"] == VICTIM and w["malicious_flows"] > 100]
    assert victim, "the victim's flooded minutes are dst windows"
    assert all(result.autoencoder_scores[i] > threshold for i in victim), "each is flagged by the dst autoencoder"
    benign = [i for i, w in enumerate(dst) if w["labelled_flows"] and not w["malicious_flows"]]
    flagged_benign = float(np.mean(result.autoencoder_scores[benign] > threshold))
    assert flagged_benign < 0.2, f"and most benign dst windows are not ({flagged_benign:.1%} flagged)"
