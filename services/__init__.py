"""FlowSentinel services: collector, featurizer, scorer, alerter, and what they share."""
