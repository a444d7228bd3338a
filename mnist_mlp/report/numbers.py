"""Every number the report derives from a run's predictions: calibration, intervals, mistakes.

The one place these are computed: the report files, the MLflow metrics (``TestResults.scalars``)
and the run comparison all read them from here. Written with numpy rather than taken from a
library where none gives exactly this: scipy has no Wilson interval outside ``binomtest`` (one
call per class), torchmetrics' calibration error does not return the reliability bins the diagram
needs, and the bootstrap needs the macro-F1 of the report's own convention (absent classes count 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_mlp.errors import UserError

if TYPE_CHECKING:
    from mnist_mlp.metrics import TestResults

#: Equal-width bins of the top-class probability for the expected calibration error (ECE).
ECE_BINS = 15
#: Confidence level of every interval in the report.
CONFIDENCE = 0.95
_Z = 1.959963984540054  # standard normal quantile of 0.975: the 95% two-sided interval


@dataclass(frozen=True)
class Settings:
    """The report's tunable numbers (Hydra group ``report``)."""

    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    mistakes: int = 25

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Settings:
        """From the ``report`` config group; checked before training, so a typo costs no run."""
        values = {}
        for key, low in (("bootstrap_resamples", 1), ("bootstrap_seed", 0), ("mistakes", 1)):
            value = (cfg or {}).get(key, getattr(cls, key))
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"report.{key}={value!r} is not allowed: it must be a whole number "
                                f">= {low} (default {getattr(cls, key)}). Fix the value and run again.")
            values[key] = value
        return cls(**values)


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


def test_scalars(r: TestResults) -> dict[str, float]:
    """The derived numbers logged as MLflow metrics (``test/ece``, ``test/acc_top2``, ...)."""
    low, high = wilson_interval(r.correct, r.total)
    out = {"test/ece": reliability(r.probs, r.label).ece,
           "test/acc_ci_low": float(low), "test/acc_ci_high": float(high)}
    out.update({f"test/acc_top{k}": top_k_accuracy(r.probs, r.label, k)
                for k in (2, 3) if k <= r.num_classes})
    return out


test_scalars.__test__ = False  # not a pytest test
