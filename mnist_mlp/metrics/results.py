"""One test run's numbers as plain Python/numpy values, and their names as logged metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mnist_mlp.metrics.stats import reliability, top_k_accuracy, wilson_interval


def per_class_key(name: str, k: int) -> str:
    """``test/f1_per_class/3``: MLflow's run page groups the charts of each per-class metric in a
    section of its own (``test/f1_per_class``), after the averages' section ``test``."""
    return f"test/{name}_per_class/{k}"


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
            out[per_class_key("support", k)] = float(self.support[k])
            out.update({per_class_key(name, k): vals[k] for name, vals in self.per_class.items()})
        out.update(self.ranking.scalars())
        low, high = wilson_interval(self.correct, self.total)
        out.update({"test/ece": reliability(self.probs, self.label).ece,
                    "test/acc_ci_low": float(low), "test/acc_ci_high": float(high)})
        out.update({f"test/acc_top{k}": top_k_accuracy(self.probs, self.label, k)
                    for k in (2, 3) if k <= self.num_classes})
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
            out[per_class_key("auroc", k)] = auroc
            out[per_class_key("ap", k)] = ap
        return out
