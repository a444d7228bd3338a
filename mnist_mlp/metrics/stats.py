"""Test-set statistics beyond the scores: intervals, calibration, top-k accuracy.

Written with numpy rather than taken from a library where none gives exactly this: scipy has no
Wilson interval outside ``binomtest`` (one call per class), torchmetrics' calibration error does not
return the reliability bins the diagram needs, and the bootstrap needs the macro-F1 of the report's
own convention (absent classes count 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Equal-width bins of the top-class probability for the expected calibration error (ECE).
ECE_BINS = 15
#: Confidence level of every interval in the report.
CONFIDENCE = 0.95
_Z = 1.959963984540054  # standard normal quantile of 0.975: the 95% two-sided interval


def wilson_interval(successes: Any, n: Any) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (95%) of ``successes`` out of ``n``; ``(0, 1)`` where ``n`` is 0.

    Wilson rather than the normal approximation: it stays inside [0, 1] and keeps its coverage
    for recalls near 1 (most MNIST classes) and for small classes.
    """
    k, n = np.asarray(successes, dtype=np.float64), np.asarray(n, dtype=np.float64)
    safe = np.where(n > 0, n, 1.0)
    p = k / safe
    z2 = _Z**2
    centre = (p + z2 / (2 * safe)) / (1 + z2 / safe)
    half = _Z * np.sqrt(p * (1 - p) / safe + z2 / (4 * safe**2)) / (1 + z2 / safe)
    low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
    high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    return low, high


def macro_f1(label: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Macro-F1 of each row of ``label``/``pred`` (2-D: one resample per row), absent classes 0."""
    label, pred = np.atleast_2d(label), np.atleast_2d(pred)
    tp = _counts(label, num_classes, weights=(label == pred))
    den = _counts(label, num_classes) + _counts(pred, num_classes)
    f1 = np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)
    return f1.mean(axis=1)


def _counts(values: np.ndarray, num_classes: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per row, how often each class occurs (weighted): one ``bincount`` for all rows."""
    offset = np.arange(len(values))[:, None] * num_classes
    flat = np.bincount((values + offset).ravel(), minlength=len(values) * num_classes,
                       weights=None if weights is None else weights.ravel().astype(np.float64))
    return flat.reshape(len(values), num_classes).astype(np.float64)


def bootstrap_macro_f1(label: np.ndarray, pred: np.ndarray, num_classes: int,
                       resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap (95%) of macro-F1: test images drawn with replacement, seeded."""
    n = len(label)
    if n == 0 or resamples < 1:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    label, pred = np.asarray(label, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    scores = []
    for start in range(0, resamples, 100):  # 100 resamples of the test set at a time
        draw = rng.integers(0, n, size=(min(100, resamples - start), n))
        scores.append(macro_f1(label[draw], pred[draw], num_classes))
    low, high = np.quantile(np.concatenate(scores), [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class Reliability:
    """Equal-width bins of the top-class probability: images, mean confidence, accuracy per bin."""

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float


def reliability(probs: np.ndarray, label: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """ECE (L1): sum over bins of (share of images) x |accuracy - mean confidence|.

    Bins are ``(lo, hi]`` with the first closed at 0, as torchmetrics' ``calibration_error``.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(len(label), -1)
    conf = probs.max(axis=1) if len(label) else np.zeros(0)
    correct = (probs.argmax(axis=1) == label).astype(np.float64) if len(label) else np.zeros(0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    nonzero = np.where(count > 0, count, 1.0)
    mean_conf = np.bincount(which, weights=conf, minlength=bins) / nonzero
    acc = np.bincount(which, weights=correct, minlength=bins) / nonzero
    ece = float((count * np.abs(acc - mean_conf)).sum() / len(label)) if len(label) else 0.0
    return Reliability(edges, count.astype(np.int64), mean_conf, acc, ece)


def top_k_accuracy(probs: np.ndarray, label: np.ndarray, k: int) -> float:
    """Share of images whose true class is among the ``k`` most probable (ties: lower class first)."""
    if not len(label):
        return 0.0
    top = np.argsort(-np.asarray(probs), axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(label)[:, None]).any(axis=1).mean())
