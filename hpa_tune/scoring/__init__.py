"""Scoring predictions (no torch): whole-set ``metrics``, per-class ``thresholds`` and the
threshold methods that choose them, and the refit's ``predictor_scores``."""
