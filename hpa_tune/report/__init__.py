"""Reports on a finished experiment: the study table and a self-contained HTML page.

``write_study_table`` writes ``study_table.md`` and ``study_table.csv``; ``write_report`` also
writes ``report.html`` with every figure embedded, plus the PNGs and CSVs behind it. Nothing here
imports Ray or torch: a report reads only the files an experiment left behind.
"""

from hpa_tune.report.build import default_out_dir, write_report, write_study_table
from hpa_tune.report.study_table import study_table, to_markdown

__all__ = [
    "default_out_dir",
    "study_table",
    "to_markdown",
    "write_report",
    "write_study_table",
]
