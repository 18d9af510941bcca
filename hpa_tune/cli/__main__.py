"""``python -m hpa_tune.cli``."""

from hpa_tune.cli import main

main()
