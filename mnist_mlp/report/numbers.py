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


Pair = tuple[int, int, int, int]  # classes a < b, images a→b, images b→a


def most_confused(r: TestResults, top: int = 3) -> list[Pair]:
    """Unordered class pairs ``(a, b, a→b, b→a)`` with the most mix-ups, most first (equal ones
    by class numbers); none if 0. Pairs tied with the ``top``-th are kept too: a list that cut
    between equal pairs would rank one above the other for no reason.
    """
    cm = np.asarray(r.confusion)
    pairs = [(a, b, int(cm[a, b]), int(cm[b, a]))
             for a in range(r.num_classes) for b in range(a + 1, r.num_classes)]
    pairs = sorted((p for p in pairs if p[2] + p[3] > 0), key=lambda p: (-(p[2] + p[3]), p[0], p[1]))
    if len(pairs) <= top:
        return pairs
    last = pairs[top - 1][2] + pairs[top - 1][3]
    return [p for i, p in enumerate(pairs) if i < top or p[2] + p[3] == last]


def tied_first(pairs: list[Pair]) -> list[Pair]:
    """The pairs of ``most_confused`` with as many mix-ups as the first."""
    return [p for p in pairs if p[2] + p[3] == pairs[0][2] + pairs[0][3]] if pairs else []


@dataclass(frozen=True)
class RunNumbers:
    """What the report adds to ``TestResults``: calibration, intervals and the mistakes to show."""

    reliability: Reliability
    top_k: dict[int, float]
    acc_ci: tuple[float, float]
    recall_ci: tuple[list[float], list[float]]
    f1_macro_ci: tuple[float, float]
    confident_mistakes: np.ndarray
    pair: tuple[int, int] | None  # the pair of the grid: the first of the most-confused ones
    pair_mistakes: np.ndarray
    pair_ties: list[tuple[int, int]]  # other pairs with as many mix-ups as ``pair``, not shown


def derive(r: TestResults, settings: Settings | None = None) -> RunNumbers:
    """The report's numbers of ``r`` (bootstrap and mistake counts from ``settings``)."""
    s = settings or Settings()
    low, high = wilson_interval(r.correct, r.total)
    diag = np.diag(np.asarray(r.confusion, dtype=np.int64))
    rec_low, rec_high = wilson_interval(diag, r.support)
    first = [(a, b) for a, b, _, _ in tied_first(most_confused(r, 1))]
    pair = first[0] if first else None
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
        pair_ties=first[1:],
    )
