"""Predictions for the metrics and report tests: labels and predictions with known properties,
logits whose argmax they are, and the project's test metrics measured on them in batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mnist_mlp.metrics import TestMetrics, TestResults

C = 10
LABELS = list(range(C))


def logits_for(pred: np.ndarray, seed: int = 0, num_classes: int = C,
               noise: float = 1.0) -> torch.Tensor:
    """Logits whose argmax is ``pred``, with noise (up to ``noise``) so probabilities and loss are
    not trivial and the probabilities rank images differently (ROC and PR curves with many points)."""
    g = torch.Generator().manual_seed(seed)
    return (F.one_hot(torch.as_tensor(pred), num_classes).float() * 3
            + torch.rand(len(pred), num_classes, generator=g) * noise)


def measure(label: np.ndarray, pred: np.ndarray, batch: int = 37) -> tuple[TestResults, Any]:
    logits = logits_for(pred)
    y, metrics = torch.as_tensor(label), TestMetrics(C)
    for start in range(0, len(y), batch):
        sl = slice(start, start + batch)
        metrics.update(logits[sl], y[sl], torch.arange(len(y))[sl])
    return metrics.compute(), logits


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _mostly_right(r: np.random.Generator):
    y = r.integers(0, C, 500)
    return y, np.where(r.random(500) < 0.9, y, r.integers(0, C, 500))


CASES = {
    "random": lambda r: (r.integers(0, C, 500), r.integers(0, C, 500)),
    "mostly_right": lambda r: _mostly_right(r),
    "class_never_predicted": lambda r: (r.integers(0, C, 300), r.integers(0, C - 1, 300)),
    "class_absent_from_targets": lambda r: (r.integers(1, C, 300), r.integers(0, C, 300)),
    "class_absent_from_both": lambda r: (r.integers(0, C - 1, 300), r.integers(0, C - 1, 300)),
    "one_class_only": lambda r: (np.full(50, 3), np.full(50, 3)),
    "one_class_all_wrong": lambda r: (np.full(50, 3), np.full(50, 5)),
    "very_uneven_supports": lambda r: (np.repeat(np.arange(C), [1, 2, 500, 3, 0, 40, 1, 1, 200, 7]),
                                       r.integers(0, C, 755)),
}



def results_of(label: np.ndarray, pred: np.ndarray, seed: int = 0, num_classes: int = C) -> TestResults:
    """The test metrics of ``pred`` for ``label`` in one batch (logits from ``logits_for``)."""
    metrics = TestMetrics(num_classes)
    metrics.update(logits_for(pred, seed, num_classes, noise=2.0), torch.as_tensor(label),
                   torch.arange(len(label)))
    return metrics.compute()


def from_confusion(confusion: np.ndarray, seed: int = 0) -> TestResults:
    """Results whose confusion matrix is ``confusion`` (rows true class, columns predicted)."""
    cm = np.asarray(confusion)
    pairs = [(t, p) for t in range(len(cm)) for p in range(len(cm)) for _ in range(int(cm[t, p]))]
    label, pred = (np.array(v) for v in zip(*pairs, strict=True))
    order = np.random.default_rng(seed).permutation(len(label))  # classes mixed, as in a test set
    return results_of(label[order], pred[order], seed, len(cm))


def mnist_like_confusion(seed: int = 0) -> np.ndarray:
    """About 1000 images per class, 95-99% right, the errors spread unevenly (a few large cells)."""
    rng = np.random.default_rng(seed)
    cm = rng.poisson(3, (10, 10)) * (rng.random((10, 10)) < 0.6)
    np.fill_diagonal(cm, rng.integers(950, 1130, 10))
    return cm
