"""Scoring predictions (no torch): whole-set ``metrics``, per-class ``thresholds`` and the
threshold methods that choose them, the refit's ``predictor_scores``, and the val-chosen members
and weights of its ensemble (``ensemble_selection``)."""
