"""What the report derives beyond the test metrics: which mistakes to show, the most-confused pairs.

The one place these are computed: the report files and the run's description read them here; the
statistics they build on (intervals, calibration) are ``mnist_mlp.metrics``'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mnist_mlp.metrics import (
    Reliability,
    TestResults,
    bootstrap_macro_f1,
    reliability,
    top_k_accuracy,
    wilson_interval,
)
from mnist_mlp.report.settings import Settings


def confident_mistakes(r: TestResults, n: int = 25) -> np.ndarray:
    """Rows (into ``r.index``) of the ``n`` wrong predictions made with the highest probability."""
    wrong = np.flatnonzero(r.pred != r.label)
    conf = r.probs[wrong, r.pred[wrong]] if len(wrong) else np.zeros(0)
    return wrong[np.argsort(-conf, kind="stable")[:n]]


def pair_mistakes(r: TestResults, a: int, b: int, n: int = 25) -> np.ndarray:
    """Rows of the images of class ``a`` predicted ``b`` or of ``b`` predicted ``a``, most confident first."""
    rows = np.flatnonzero(((r.label == a) & (r.pred == b)) | ((r.label == b) & (r.pred == a)))
    conf = r.probs[rows, r.pred[rows]] if len(rows) else np.zeros(0)
    return rows[np.argsort(-conf, kind="stable")[:n]]


def most_confused(r: TestResults, top: int = 3) -> list[tuple[int, int, int, int]]:
    """Unordered class pairs ``(a, b, a→b, b→a)`` with the most mix-ups, most first; none if 0."""
    cm = np.asarray(r.confusion)
    pairs = [(a, b, int(cm[a, b]), int(cm[b, a]))
             for a in range(r.num_classes) for b in range(a + 1, r.num_classes)]
    pairs = [p for p in pairs if p[2] + p[3] > 0]
    return sorted(pairs, key=lambda p: (-(p[2] + p[3]), p[0], p[1]))[:top]


@dataclass(frozen=True)
class RunNumbers:
    """What the report adds to ``TestResults``: calibration, intervals and the mistakes to show."""

    reliability: Reliability
    top_k: dict[int, float]
    acc_ci: tuple[float, float]
    recall_ci: tuple[list[float], list[float]]
    f1_macro_ci: tuple[float, float]
    confident_mistakes: np.ndarray
    pair: tuple[int, int] | None
    pair_mistakes: np.ndarray


def derive(r: TestResults, settings: Settings | None = None) -> RunNumbers:
    """The report's numbers of ``r`` (bootstrap and mistake counts from ``settings``)."""
    s = settings or Settings()
    low, high = wilson_interval(r.correct, r.total)
    diag = np.diag(np.asarray(r.confusion, dtype=np.int64))
    rec_low, rec_high = wilson_interval(diag, r.support)
    pairs = most_confused(r, 1)
    pair = (pairs[0][0], pairs[0][1]) if pairs else None
    return RunNumbers(
        reliability=reliability(r.probs, r.label),
        top_k={k: top_k_accuracy(r.probs, r.label, k) for k in (2, 3) if k <= r.num_classes},
        acc_ci=(float(low), float(high)),
        recall_ci=(rec_low.tolist(), rec_high.tolist()),
        f1_macro_ci=bootstrap_macro_f1(r.label, r.pred, r.num_classes, s.bootstrap_resamples,
                                       s.bootstrap_seed),
        confident_mistakes=confident_mistakes(r, s.mistakes),
        pair=pair,
        pair_mistakes=pair_mistakes(r, *pair, n=s.mistakes) if pair else np.zeros(0, np.int64),
    )
