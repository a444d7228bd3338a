"""Test results built from chosen predictions, for the report's unit tests."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mnist_mlp.metrics import TestMetrics, TestResults


def results_of(label: np.ndarray, pred: np.ndarray, seed: int = 0, num_classes: int = 10) -> TestResults:
    """The test metrics of ``pred`` for ``label``: logits whose argmax is ``pred``, plus noise so
    the probabilities rank images differently (ROC and PR curves with many points)."""
    g = torch.Generator().manual_seed(seed)
    logits = (F.one_hot(torch.as_tensor(pred), num_classes).float() * 3
              + torch.rand(len(pred), num_classes, generator=g) * 2)
    metrics = TestMetrics(num_classes)
    metrics.update(logits, torch.as_tensor(label), torch.arange(len(label)))
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
