"""Benchmarks; ``python -m bench`` is the entry point (see ``bench/__main__.py``)."""
