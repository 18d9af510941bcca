"""Where data and results live: local, ``s3://`` and ``gs://`` filesystems (``filesystems``, the
only ``pyarrow.fs`` user) and local staging copies of bucket experiments (``staging``)."""
