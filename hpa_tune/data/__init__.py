"""Data: Kaggle layout reading, preprocessing, Parquet shards, splits, the built-in sample."""
