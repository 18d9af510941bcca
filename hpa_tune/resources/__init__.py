"""Data files shipped with hpa-tune (class table, real Kaggle label sets)."""
