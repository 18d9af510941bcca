"""After the search: the ensemble ``members`` retrained (``retrain``), scored (``evaluation``),
averaged (``ensemble``), and turned into a Kaggle submission (``predict``)."""
