"""The report of a test run, and the comparison of several runs.

One module per job: ``numbers`` computes every derived number (intervals, calibration, mistakes)
once; ``tables`` the scikit-learn layouts and CSVs; ``figures`` the pictures; ``content`` the
sections and conclusions; ``render`` Markdown and HTML; ``files`` writes the report folder;
``history`` records the per-epoch metrics for the learning curves; ``comparison`` compares runs
(``compare.py``) and ``comparison_store`` reads and records them in MLflow.
"""

from __future__ import annotations

from mnist_mlp.report.content import BALANCED_RATIO, conclusions, sections
from mnist_mlp.report.files import check_digits, target_text, train_hyperparameters, write_report
from mnist_mlp.report.numbers import Settings, most_confused
from mnist_mlp.report.tables import dict_report, text_report

__all__ = ["BALANCED_RATIO", "Settings", "check_digits", "conclusions", "dict_report",
           "most_confused", "sections", "target_text", "text_report", "train_hyperparameters",
           "write_report"]
