"""Test-set classification metrics: torchmetrics on the device while testing, plain numbers after.

One module per job: ``collect`` (the device states of the test step), ``results`` (``TestResults``,
the plain numbers and their metric names), ``scores`` (precision, recall, F1 from a confusion
matrix), ``stats`` (intervals, calibration, top-k).

While testing, torchmetrics states accumulate on the model's device and are synced across DDP ranks
once at epoch end: the confusion matrix (integer counts, from which every score follows), the mean
loss and every sample's prediction. ``scores_from_confusion`` then derives the scores in float64.

Names under which the LightningModule logs them (one scheme, used by MLflow and the report):

- ``test/loss``: mean per-sample cross-entropy over the test set;
- ``test/acc``: overall accuracy (correct / total; for single-label data it equals every micro
  average below);
- ``test/{precision,recall,f1}_{macro,weighted,micro}``: the averaged metrics;
- ``test/{acc,precision,recall,f1,support}_per_class/{k}``: per class ``k`` (``results.per_class``;
  MLflow's run page shows each in a section of its own, after the averages). ``acc_per_class/k``
  is the share of class-``k`` images classified as ``k``, i.e. the class's recall: that is what
  the reference report calls per-class accuracy;
- ``test/auroc_per_class/{k}``, ``test/auroc_macro``, ``test/ap_per_class/{k}``, ``test/ap_macro``:
  one-vs-rest area under the ROC curve and average precision (scikit-learn's ``roc_auc_score(...,
  multi_class="ovr")`` and ``average_precision_score``), exact (every threshold, no binning);
- ``test/ece``, ``test/acc_top2``, ``test/acc_top3``, ``test/acc_ci_low``, ``test/acc_ci_high``:
  calibration and the accuracy's 95% interval (``stats``).

Conventions are scikit-learn's ``classification_report(labels=range(C), zero_division=0)``: every
class 0..C-1 is reported, also one absent from the targets; a ratio with a zero denominator is 0;
``macro`` is the unweighted mean over all C classes and ``weighted`` weighs each class by its
support; ``micro`` equals the accuracy. Test loss is the mean per-sample cross-entropy (the
reference's "average loss" divided a sum of batch means by the set size, a smaller number).
"""

from typing import Any

from mnist_mlp.metrics.results import Ranking, TestResults, per_class_key
from mnist_mlp.metrics.scores import AVERAGES, PER_CLASS, SCORES, scores_from_confusion
from mnist_mlp.metrics.stats import (
    CONFIDENCE,
    ECE_BINS,
    Reliability,
    bootstrap_macro_f1,
    reliability,
    top_k_accuracy,
    wilson_interval,
)

__all__ = ["AVERAGES", "CONFIDENCE", "ECE_BINS", "PER_CLASS", "SCORES", "Ranking", "Reliability",
           "TestMetrics", "TestResults", "bootstrap_macro_f1", "per_class_key", "reliability",
           "scores_from_confusion", "top_k_accuracy", "wilson_interval"]


def __getattr__(name: str) -> Any:
    """``TestMetrics`` on first use: it needs torch and torchmetrics, which the report (drawn in a
    worker process that imports no torch: ``mnist_mlp.report.background``) does not."""
    if name == "TestMetrics":
        from mnist_mlp.metrics.collect import TestMetrics

        return TestMetrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
