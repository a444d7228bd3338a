"""Comparing tested runs on their shared test set: ranking, seed spread, McNemar, per-class F1.

Pure numbers and files from each run's ``predictions.csv`` and params; ``tracking.comparison``
finds the runs in MLflow and records the result. Every per-run number (accuracy, per-class and macro F1, the
Wilson interval) comes from the functions the run's own report uses (``metrics``, ``numbers``).

- Exact McNemar test: of the images exactly one of two runs gets right, how many each gets right
  (``b``, ``c``); two-sided binomial test of ``b`` out of ``b + c`` at 1/2 (``scipy.stats.binomtest``).
  The best run is tested against every other one; ``mcnemar_p_holm`` is Holm-corrected over those tests.
- Runs whose hyperparameters differ only in the seed form one configuration: mean, sample standard
  deviation and min-max of their accuracies (the seed spread).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlp.errors import UserError
from mnist_mlp.metrics import scores_from_confusion, wilson_interval

#: Parameters that are where a run wrote things, not how it trained: never "differing hyperparameters";
#: nor are keys whose last part ends with one of ``_PATH_ENDINGS``.
_NOT_HYPERPARAMETERS = ("logger.", "hydra.", "callbacks.")
_PATH_ENDINGS = ("dir", "dirpath", "path")
SAME = "same settings"  # the configuration label of runs differing only in seeds
#: Significance level of the comparison's verdicts (Holm-corrected p-values).
ALPHA = 0.05


@dataclass
class RunPredictions:
    """One tested run: its predictions on the test set and what it was trained with."""

    run_id: str
    name: str
    index: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    params: dict[str, str] = field(default_factory=dict)
    data_md5: dict[str, str] = field(default_factory=dict)
    #: The registered model version the run's model became (name and version), if any, and
    #: whether that version holds the alias ``champion``.
    registered_name: str = ""
    registered_version: str = ""
    champion: bool = False

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.label

    @property
    def model_version(self) -> str:
        """``mnist-mlp v3`` (``@champion`` after it where it holds the alias), or empty."""
        if not self.registered_version:
            return ""
        return (f"{self.registered_name} v{self.registered_version}"
                + (" @champion" if self.champion else ""))


def read_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``index``, ``label``, ``pred`` columns of a report's ``predictions.csv``, sorted by index."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1, 2), dtype=np.int64, ndmin=2)
    order = np.argsort(table[:, 0], kind="stable")
    return table[order, 0], table[order, 1], table[order, 2]


def check_same_test_set(runs: Sequence[RunPredictions]) -> None:
    """Refuse runs not tested on the same images: different test-data MD5s, sizes or labels."""
    first = runs[0]
    for run in runs[1:]:
        keys = {k for k in set(first.data_md5) & set(run.data_md5) if "test" in k}
        differ = sorted(k for k in keys if first.data_md5[k] != run.data_md5[k])
        if differ:
            raise UserError(
                f"Runs {first.run_id} ({first.name}) and {run.run_id} ({run.name}) were tested on "
                f"different data (tags {', '.join('data.md5.' + k for k in differ)} differ): their "
                "predictions cannot be compared image by image. Compare runs tested on the same "
                "MNIST files."
            )
        if len(run.index) != len(first.index) or not (
                np.array_equal(run.index, first.index) and np.array_equal(run.label, first.label)):
            raise UserError(
                f"Runs {first.run_id} ({first.name}, {len(first.index)} test images) and "
                f"{run.run_id} ({run.name}, {len(run.index)} test images) were not tested on the "
                "same test set (sizes or labels differ in their report/predictions.csv). Compare "
                "runs tested on the same MNIST files."
            )


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[int, int, float]:
    """``(b, c, p)``: images only ``a`` got right, only ``b`` got right, two-sided exact p-value."""
    from scipy.stats import binomtest

    only_a = int((a_correct & ~b_correct).sum())
    only_b = int((~a_correct & b_correct).sum())
    n = only_a + only_b
    p = binomtest(only_a, n, 0.5, alternative="two-sided").pvalue if n else 1.0
    return only_a, only_b, float(p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order]) if m else p
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def differing_params(runs: Sequence[RunPredictions]) -> list[str]:
    """Hyperparameter keys whose values are not the same in every run (paths and logging left out)."""
    keys = sorted({k for r in runs for k in r.params if not k.startswith(_NOT_HYPERPARAMETERS)
                   and not k.rsplit(".", 1)[-1].endswith(_PATH_ENDINGS)})
    return [k for k in keys if len({r.params.get(k) for r in runs}) > 1]


def is_seed(key: str) -> bool:
    """``seed``, ``data.shuffle_seed`` (which follows ``seed``), ...: what seed-only runs may differ in."""
    last = key.rsplit(".", 1)[-1]
    return last == "seed" or last.endswith("_seed")


@dataclass
class RunRow:
    run: RunPredictions
    accuracy: float
    acc_ci: tuple[float, float]
    f1_macro: float
    f1_per_class: list[float]
    config: str
    mcnemar_b: int | None = None
    mcnemar_c: int | None = None
    mcnemar_p: float | None = None
    mcnemar_p_holm: float | None = None


@dataclass
class ConfigRow:
    config: str
    runs: list[RunRow]

    @property
    def accuracies(self) -> list[float]:
        return [r.accuracy for r in self.runs]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float | None:
        """Sample standard deviation; None for one run, which has no spread to measure."""
        return statistics.stdev(self.accuracies) if len(self.runs) > 1 else None


@dataclass
class Comparison:
    rows: list[RunRow]  # ranked by test accuracy, best first
    configs: list[ConfigRow]  # ranked by mean accuracy
    keys: list[str]  # the differing hyperparameters
    num_classes: int

    @property
    def best(self) -> RunRow:
        return self.rows[0]


def _scores(run: RunPredictions, c: int) -> dict[str, Any]:
    """The run's report numbers (``metrics.scores_from_confusion``), from its predictions."""
    confusion = np.bincount(run.label * c + run.pred, minlength=c * c).reshape(c, c)
    return scores_from_confusion(confusion)


def compare(runs: Sequence[RunPredictions], num_classes: int = 10) -> Comparison:
    """Rank the runs, collapse seed-only differences, test the best against each other run."""
    if not runs:
        raise UserError("No tested runs to compare: give run ids whose report/predictions.csv exists.")
    check_same_test_set(runs)
    keys = differing_params(runs)
    rows = []
    for run in runs:
        scores = _scores(run, num_classes)
        low, high = wilson_interval(int(run.correct.sum()), len(run.label))
        config = ", ".join(f"{key}={run.params.get(key)}" for key in keys if not is_seed(key))
        rows.append(RunRow(run, scores["accuracy"], (float(low), float(high)),
                           scores["averages"]["macro"]["f1"], scores["per_class"]["f1"],
                           config or SAME))
    rows.sort(key=lambda r: (-r.accuracy, r.run.name, r.run.run_id))
    best, others = rows[0], rows[1:]
    for row in others:
        row.mcnemar_b, row.mcnemar_c, row.mcnemar_p = mcnemar_exact(best.run.correct, row.run.correct)
    for row, adjusted in zip(others, holm([r.mcnemar_p for r in others]), strict=True):
        row.mcnemar_p_holm = adjusted
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(row.config, []).append(row)
    configs = sorted((ConfigRow(c, g) for c, g in groups.items()), key=lambda g: -g.mean)
    return Comparison(rows, configs, keys, num_classes)
