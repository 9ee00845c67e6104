"""Every detector behind one interface (base.WindowDetector), registered by name: adding one is one file
and one line here. The harness, the report and the contract test all iterate over DETECTORS."""

from __future__ import annotations

from collections.abc import Callable

from training.detectors.autoencoder import Autoencoder
from training.detectors.base import DetectorConfig, WindowData, WindowDetector
from training.detectors.half_space_trees import HalfSpaceTrees
from training.detectors.isolation_forest import IsolationForest
from training.detectors.lstm import Lstm
from training.detectors.random_forest import RandomForest
from training.detectors.rules import RuleIds

DETECTORS: dict[str, Callable[[DetectorConfig], WindowDetector]] = {
    "autoencoder": Autoencoder,
    "lstm": Lstm,
    "rule_ids": RuleIds,
    "isolation_forest": IsolationForest,
    "half_space_trees": HalfSpaceTrees,
    "random_forest": RandomForest,
}


def create(name: str, config: DetectorConfig) -> WindowDetector:
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[name](config)


__all__ = ["DETECTORS", "DetectorConfig", "WindowData", "WindowDetector", "create"]
