"""Datasets, feature extraction shared with the featurizer, models, evaluation and export."""
