"""What the test step collects on the device: torchmetrics states, synced across DDP ranks once.

The confusion matrix (integer counts, from which every score follows), the mean loss, every
sample's prediction and the ranking curves' states accumulate while testing; ``TestMetrics.compute``
turns them into a ``TestResults`` at epoch end.
"""

from __future__ import annotations

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
from mnist_mlp.metrics.results import Ranking, TestResults
from mnist_mlp.metrics.scores import scores_from_confusion


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

    def update(self, index: torch.Tensor, label: torch.Tensor, logits: torch.Tensor,
               probs: torch.Tensor | None = None) -> None:
        """``probs``: the batch's class probabilities, if the caller computed them already."""
        self.index.append(index.long())
        self.label.append(label.long())
        self.pred.append(logits.argmax(dim=-1))
        self.probs.append(probabilities(logits) if probs is None else probs)

    def compute(self) -> dict[str, torch.Tensor]:
        """Rows sorted by test index (DDP ranks hold interleaved shards)."""
        cols = {k: _cat(getattr(self, k)) for k in ("index", "label", "pred", "probs")}
        order = cols["index"].argsort()
        return {k: v[order] for k, v in cols.items()}


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities as the report holds them: softmax in float32."""
    return logits.detach().float().softmax(dim=-1)


def _cat(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    return torch.cat(state) if isinstance(state, list) else state


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
        # The probabilities predictions.csv holds (softmax in float32), so both give one ranking.
        probs = probabilities(logits)
        self.predictions.update(index, label, logits, probs)
        self.ranking.update(probs, safe)

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
