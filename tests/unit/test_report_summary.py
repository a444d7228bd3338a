"""The run's description: its numbers are the logged ones, intervals shown only where logged."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mnist_mlp.metrics import TestMetrics, TestResults
from mnist_mlp.report.summary import headline


def _results(confusion: list[list[int]]) -> TestResults:
    """The test metrics of predictions laid out as ``confusion`` (rows true, columns predicted)."""
    cm = np.asarray(confusion)
    pairs = [(t, p) for t in range(len(cm)) for p in range(len(cm)) for _ in range(cm[t, p])]
    label, pred = (torch.tensor(v) for v in zip(*pairs, strict=True))
    metrics = TestMetrics(len(cm))
    metrics.update(F.one_hot(pred, len(cm)).float() * 5, label, torch.arange(len(label)))
    return metrics.compute()


def test_headline_with_and_without_intervals():
    r = _results([[50, 3, 0], [5, 40, 1], [0, 0, 45]])
    hp = {"learning_rate": 0.1, "batch_size": 100}
    metrics = {"test/acc": r.accuracy, "test/f1_macro": r.averages["macro"]["f1"]}
    text = headline(metrics, r, hp)
    assert f"**Test accuracy {r.accuracy:.4f}**, macro F1 {r.averages['macro']['f1']:.4f}" in text
    assert "(135/144 test images correct)" in text
    assert "Most confused: 0↔1, 8 images (0→1: 3, 1→0: 5)." in text
    assert text.endswith("learning_rate 0.1, batch_size 100.")
    assert "[" not in text
    with_ci = headline({**metrics, "test/acc_ci_low": 0.9, "test/acc_ci_high": 0.97}, r, hp)
    assert f"Test accuracy {r.accuracy:.4f} [0.9000, 0.9700]**" in with_ci
    assert headline({}, None, hp) == "learning_rate 0.1, batch_size 100."
    assert "No test image misclassified." in headline(metrics, _results([[3, 0], [0, 4]]), hp)
