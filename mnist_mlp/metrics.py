"""Test-set classification metrics: torchmetrics on the device while testing, plain numbers after.

While testing, torchmetrics states accumulate on the model's device and are synced across DDP ranks
once at epoch end: the confusion matrix (integer counts, from which every score follows), the mean
loss and every sample's prediction. ``scores_from_confusion`` then derives the scores in float64.

Names under which the LightningModule logs them (one scheme, used by MLflow and the report):

- ``test/loss``: mean per-sample cross-entropy over the test set;
- ``test/acc``: overall accuracy (correct / total; for single-label data it equals every micro
  average below);
- ``test/{precision,recall,f1}_{macro,weighted,micro}``: the averaged metrics;
- ``test/{acc,precision,recall,f1,support}_class_{k}``: per class ``k``. ``acc_class_k`` is the
  share of class-``k`` images classified as ``k``, i.e. the class's recall: that is what the
  reference report calls per-class accuracy;
- ``test/auroc_class_{k}``, ``test/auroc_macro``, ``test/ap_class_{k}``, ``test/ap_macro``:
  one-vs-rest area under the ROC curve and average precision (scikit-learn's ``roc_auc_score(...,
  multi_class="ovr")`` and ``average_precision_score``), exact (every threshold, no binning);
- ``test/ece``, ``test/acc_top2``, ``test/acc_top3``, ``test/acc_ci_low``, ``test/acc_ci_high``:
  calibration and the accuracy's 95% interval, derived in ``mnist_mlp.report.numbers``.

Conventions are scikit-learn's ``classification_report(labels=range(C), zero_division=0)``: every
class 0..C-1 is reported, also one absent from the targets; a ratio with a zero denominator is 0;
``macro`` is the unweighted mean over all C classes and ``weighted`` weighs each class by its
support; ``micro`` equals the accuracy. Test loss is the mean per-sample cross-entropy (the
reference's "average loss" divided a sum of batch means by the set size, a smaller number).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, Metric, MetricCollection, SumMetric
from torchmetrics.classification import (
    MulticlassAUROC,
    MulticlassAveragePrecision,
    MulticlassConfusionMatrix,
    MulticlassPrecisionRecallCurve,
    MulticlassROC,
)

from mnist_mlp.errors import UserError

AVERAGES = ("macro", "weighted", "micro")
PER_CLASS = ("acc", "precision", "recall", "f1")
SCORES = ("precision", "recall", "f1")


def scores_from_confusion(confusion: np.ndarray) -> dict[str, Any]:
    """Per-class and averaged precision, recall and F1 of a confusion matrix (rows true), float64.

    Written out rather than taken from ``MulticlassPrecision``/``Recall``/``F1Score`` because those
    divide in float32 (the printed digits of the classification report could then differ from
    scikit-learn's at a rounding boundary) and their ``macro`` drops a class absent from both
    targets and predictions. These are scikit-learn's formulas with ``zero_division=0``.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)  # = 2PR/(P+R), and 0 where that is 0/0
    per_class = {"acc": recall, "precision": precision, "recall": recall, "f1": f1}
    weights = support / support.sum() if support.sum() else np.zeros_like(tp)
    micro = _ratio(tp.sum(), cm.sum())  # single-label: micro P = R = F1 = accuracy
    averages = {
        "macro": {k: float(per_class[k].mean()) for k in SCORES},
        "weighted": {k: float((per_class[k] * weights).sum()) for k in SCORES},
        "micro": {k: float(micro) for k in SCORES},
    }
    return {"per_class": {k: v.tolist() for k, v in per_class.items()},
            "averages": averages, "support": support.tolist(), "accuracy": float(micro)}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


class PredictionStore(Metric):
    """Every test sample's index, label, predicted class and class probabilities.

    torchmetrics' ``CatMetric`` casts to float and drops NaN rows; this keeps integer indices and
    labels as they are and every row, and its ``cat`` states are gathered across DDP ranks.
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("index", "label", "pred", "probs"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, index: torch.Tensor, label: torch.Tensor, logits: torch.Tensor) -> None:
        self.index.append(index.long())
        self.label.append(label.long())
        self.pred.append(logits.argmax(dim=-1))
        self.probs.append(logits.detach().float().softmax(dim=-1))

    def compute(self) -> dict[str, torch.Tensor]:
        """Rows sorted by test index (DDP ranks hold interleaved shards)."""
        cols = {k: _cat(getattr(self, k)) for k in ("index", "label", "pred", "probs")}
        order = cols["index"].argsort()
        return {k: v[order] for k, v in cols.items()}


def _cat(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    return torch.cat(state) if isinstance(state, list) else state


@dataclass(frozen=True)
class TestResults:
    """One test run's numbers as plain Python/numpy values: what the report files are made of."""

    __test__ = False  # not a pytest test class

    loss: float
    accuracy: float
    support: list[int]
    per_class: dict[str, list[float]]  # keys of PER_CLASS
    averages: dict[str, dict[str, float]]  # AVERAGES -> precision/recall/f1
    confusion: list[list[int]]
    index: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    probs: np.ndarray
    ranking: Ranking

    @property
    def num_classes(self) -> int:
        return len(self.support)

    @property
    def total(self) -> int:
        return int(sum(self.support))

    @property
    def correct(self) -> int:
        return int(sum(self.confusion[k][k] for k in range(self.num_classes)))

    def scalars(self) -> dict[str, float]:
        """The flat ``test/...`` names of the module docstring, for ``LightningModule.log_dict``."""
        out = {"test/loss": self.loss, "test/acc": self.accuracy}
        for average, scores in self.averages.items():
            out.update({f"test/{name}_{average}": v for name, v in scores.items()})
        for k in range(self.num_classes):
            out[f"test/support_class_{k}"] = float(self.support[k])
            out.update({f"test/{name}_class_{k}": vals[k] for name, vals in self.per_class.items()})
        out.update(self.ranking.scalars())
        from mnist_mlp.report.numbers import test_scalars  # the report's numbers, computed there

        out.update(test_scalars(self))
        return out


@dataclass(frozen=True)
class Ranking:
    """One-vs-rest ROC and precision-recall curves per class, with their AUROC and AP."""

    auroc: list[float]
    auroc_macro: float
    ap: list[float]
    ap_macro: float
    roc: list[tuple[np.ndarray, np.ndarray]]  # per class: (false positive rate, true positive rate)
    pr: list[tuple[np.ndarray, np.ndarray]]  # per class: (precision, recall)

    def scalars(self) -> dict[str, float]:
        out = {"test/auroc_macro": self.auroc_macro, "test/ap_macro": self.ap_macro}
        for k, (auroc, ap) in enumerate(zip(self.auroc, self.ap, strict=True)):
            out[f"test/auroc_class_{k}"] = auroc
            out[f"test/ap_class_{k}"] = ap
        return out


def ranking_collection(num_classes: int) -> MetricCollection:
    """AUROC, AP and their curves, exact (``thresholds=None``), as one compute group.

    All six members keep the same state (every probability and label), so with compute groups the
    collection stores it once and updates it once per batch. No argument validation: it syncs the
    host per batch on a GPU, and ``TestMetrics`` already refuses labels outside the classes.
    Updated every batch and computed once at epoch end: a ``compute()`` between updates could leave
    grouped members stale.
    """
    c, kw = num_classes, {"thresholds": None, "validate_args": False}  # labels checked by TestMetrics
    return MetricCollection({
        "auroc": MulticlassAUROC(c, average="none", **kw),
        "auroc_macro": MulticlassAUROC(c, average="macro", **kw),
        "ap": MulticlassAveragePrecision(c, average="none", **kw),
        "ap_macro": MulticlassAveragePrecision(c, average="macro", **kw),
        "roc": MulticlassROC(c, **kw),
        "pr": MulticlassPrecisionRecallCurve(c, **kw),
    }, compute_groups=True)


def ranking_from(values: dict[str, Any], support: np.ndarray) -> Ranking:
    """Plain numbers from ``ranking_collection(...).compute()``.

    A class without positive (or without negative) test images has no ROC curve: its AUROC and AP
    are NaN (torchmetrics returns 0 or NaN, scikit-learn raises) and the macro means skip it.
    """
    def arrays(t: Any) -> list[np.ndarray]:
        return [x.cpu().double().numpy() for x in t]

    undefined = (support == 0) | (support == support.sum())
    auroc = np.where(undefined, np.nan, values["auroc"].cpu().double().numpy())
    ap = np.where(undefined, np.nan, values["ap"].cpu().double().numpy())
    macro = undefined.any()
    fpr, tpr, _ = values["roc"]
    precision, recall, _ = values["pr"]
    return Ranking(
        auroc=auroc.tolist(), ap=ap.tolist(),
        auroc_macro=_nanmean(auroc) if macro else float(values["auroc_macro"]),
        ap_macro=_nanmean(ap) if macro else float(values["ap_macro"]),
        roc=list(zip(arrays(fpr), arrays(tpr), strict=True)),
        pr=list(zip(arrays(precision), arrays(recall), strict=True)),
    )


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


class TestMetrics(nn.Module):
    """Everything measured on the test set; a submodule, so it follows the model's device.

    Labels outside ``0..C-1`` are counted (on the device, no host sync per batch) and refused at
    epoch end on every rank at once: with float logits torchmetrics would not check them, and an
    error raised on one DDP rank alone would leave the others waiting.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.loss = MeanMetric(nan_strategy="disable")  # a diverged model shows NaN, not a subset
        self.confusion = MulticlassConfusionMatrix(num_classes)  # rows true, columns predicted
        self.predictions = PredictionStore()
        self.bad_labels = SumMetric(nan_strategy="disable")
        self.ranking = ranking_collection(num_classes)

    def update(self, logits: torch.Tensor, label: torch.Tensor, index: torch.Tensor) -> None:
        valid = (label >= 0) & (label < self.num_classes)
        safe = torch.where(valid, label, torch.zeros_like(label))
        self.bad_labels.update((~valid).sum().float())
        self.loss.update(F.cross_entropy(logits.float(), safe, reduction="none"))
        self.confusion.update(logits, safe)
        self.predictions.update(index, label, logits)
        # The probabilities predictions.csv holds (softmax in float32), so both give one ranking.
        self.ranking.update(logits.detach().float().softmax(dim=-1), safe)

    def reset(self) -> None:
        for metric in (self.loss, self.confusion, self.predictions, self.bad_labels, self.ranking):
            metric.reset()

    def compute(self) -> TestResults:
        """Sync across ranks and turn everything into plain numbers (once, at epoch end)."""
        rows = {k: v.cpu().numpy() for k, v in self.predictions.compute().items()}
        self._check(rows)
        confusion = self.confusion.compute().cpu().numpy()
        return TestResults(loss=float(self.loss.compute()), **scores_from_confusion(confusion),
                           confusion=confusion.tolist(), **rows,
                           ranking=ranking_from(self.ranking.compute(), confusion.sum(axis=1)))

    def _check(self, rows: dict[str, np.ndarray]) -> None:
        if float(self.bad_labels.compute()) > 0:
            label = rows["label"]
            bad = np.unique(label[(label < 0) | (label >= self.num_classes)])
            raise UserError(
                f"The test set holds {int(self.bad_labels.compute())} labels outside "
                f"0..{self.num_classes - 1} (values {bad[:5].tolist()}), which the "
                f"{self.num_classes}-class model cannot score. Check the test label file under "
                "data.data_dir (or model.num_classes) and run again."
            )
        if len(np.unique(rows["index"])) != len(rows["index"]):
            raise RuntimeError(
                "Some test samples were scored more than once (a distributed sampler padded the "
                "test set): the test metrics would be wrong. Test with the project's data module "
                "or on one device."
            )
