"""The report of a test run, and the comparison of several runs.

One module per job: ``settings`` (the config group ``report``); ``provenance`` the report's
header (run, date, code, data, the weights tested: plain values from the caller); ``numbers`` derives what the
report adds to the test metrics (the mistakes to show, the most-confused pairs); ``tables`` the
scikit-learn layouts and CSVs; ``figures`` the pictures; ``content`` the sections and conclusions;
``render`` Markdown and HTML; ``files`` writes the report folder; ``history`` records the per-epoch
metrics for the learning curves; ``summary`` is a run's headline (the MLflow description);
``comparison`` compares runs (``compare.py``) and ``comparison_files`` writes what it found.
Nothing here reads or writes MLflow: ``mnist_mlp.tracking`` does, with these.
"""

from __future__ import annotations

from mnist_mlp.report.content import BALANCED_RATIO, conclusions, sections
from mnist_mlp.report.files import target_text, train_hyperparameters, write_report
from mnist_mlp.report.numbers import most_confused
from mnist_mlp.report.provenance import Provenance, TestedWeights
from mnist_mlp.report.settings import Settings
from mnist_mlp.report.tables import dict_report, text_report

__all__ = ["BALANCED_RATIO", "Provenance", "Settings", "TestedWeights", "conclusions",
           "dict_report", "most_confused", "sections", "target_text", "text_report",
           "train_hyperparameters", "write_report"]
