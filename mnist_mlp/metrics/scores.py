"""Precision, recall and F1 per class and averaged, from a confusion matrix, in float64."""

from __future__ import annotations

from typing import Any

import numpy as np

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
