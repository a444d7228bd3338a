"""Comparing tested runs on their shared test set: ranking, seed spread, McNemar, per-class F1.

Pure numbers and files from each run's ``predictions.csv`` and params; ``comparison_store`` finds the
runs in MLflow and records the result. Every per-run number (accuracy, per-class and macro F1, the
Wilson interval) comes from the functions the run's own report uses (``metrics``, ``numbers``).

- Exact McNemar test: of the images exactly one of two runs gets right, how many each gets right
  (``b``, ``c``); two-sided binomial test of ``b`` out of ``b + c`` at 1/2 (``scipy.stats.binomtest``).
  The best run is tested against every other one; ``mcnemar_p_holm`` is Holm-corrected over those tests.
- Runs whose hyperparameters differ only in the seed form one configuration: mean, sample standard
  deviation and min-max of their accuracies (the seed spread).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlp.atomic import write_files
from mnist_mlp.errors import UserError
from mnist_mlp.metrics import scores_from_confusion
from mnist_mlp.report.numbers import CONFIDENCE, wilson_interval
from mnist_mlp.report.render import Section, to_html, to_markdown

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

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.label


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
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.runs) > 1 else 0.0


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


# ---------------------------------------------------------------- files -----------------------------


def _fmt(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    return "" if x is None else f"{x:.3g}"


def comparison_csv(cmp: Comparison) -> str:
    """One row per run, best first; p-values unrounded (``repr``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "run_id", "run_name", "config", *cmp.keys, "accuracy", "acc_ci_low",
                "acc_ci_high", "f1_macro", "config_runs", "config_acc_mean", "config_acc_std",
                "mcnemar_b", "mcnemar_c", "mcnemar_p", "mcnemar_p_holm",
                *(f"f1_class_{k}" for k in range(cmp.num_classes))])
    by_config = {c.config: c for c in cmp.configs}
    for rank, row in enumerate(cmp.rows, 1):
        group = by_config[row.config]
        w.writerow([rank, row.run.run_id, row.run.name, row.config,
                    *(row.run.params.get(k, "") for k in cmp.keys), repr(row.accuracy),
                    repr(row.acc_ci[0]), repr(row.acc_ci[1]), repr(row.f1_macro), len(group.runs),
                    repr(group.mean), repr(group.std),
                    *("" if v is None else repr(v) for v in (row.mcnemar_b, row.mcnemar_c,
                                                             row.mcnemar_p, row.mcnemar_p_holm)),
                    *(repr(v) for v in row.f1_per_class)])
    return buf.getvalue()


def f1_heatmap_png(cmp: Comparison) -> bytes:
    """Per-class F1 of every run (rows, best first) as a heatmap with the values written in."""
    from matplotlib.figure import Figure

    data = np.array([r.f1_per_class for r in cmp.rows])
    lo = float(data.min()) if data.size else 0.0
    fig = Figure(figsize=(1.0 + 0.75 * cmp.num_classes, 1.4 + 0.45 * len(cmp.rows)),
                 layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(data, cmap="viridis", vmin=lo, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, label="F1-score")
    ax.set(xticks=range(cmp.num_classes), yticks=range(len(cmp.rows)), xlabel="Class",
           yticklabels=[r.run.name for r in cmp.rows], title="Per-class F1-score by run (best first)")
    mid = (lo + 1.0) / 2
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, f"{data[i, j]:.3f}", ha="center", va="center", fontsize=8,
                    color="black" if data[i, j] > mid else "white")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def conclusions(cmp: Comparison, digits: int = 4) -> list[str]:
    """What the ranking, the seed spread and the tests say, from the numbers."""
    best = cmp.best
    level = int(round(100 * CONFIDENCE))
    out = [f"Best run: {best.run.name} ({best.run.run_id}) with accuracy {_fmt(best.accuracy, digits)}, "
           f"{level}% Wilson interval [{_fmt(best.acc_ci[0], digits)}, {_fmt(best.acc_ci[1], digits)}]."]
    others = cmp.rows[1:]
    if others:
        significant = [r for r in others if r.mcnemar_p_holm is not None and r.mcnemar_p_holm < ALPHA]
        out.append(f"McNemar's exact test (Holm-corrected, α = {ALPHA}): the best run differs "
                   f"significantly from {len(significant)} of the {len(others)} other runs"
                   + (f" ({', '.join(r.run.name for r in significant)})" if significant else "")
                   + "; the smallest corrected p-value is "
                   + f"{_p(min(r.mcnemar_p_holm for r in others))}.")
        widest = max(others, key=lambda r: (r.mcnemar_b or 0) + (r.mcnemar_c or 0))
        out.append(f"Runs disagree on at most {widest.mcnemar_b + widest.mcnemar_c} test images "
                   f"(best vs {widest.run.name}: {widest.mcnemar_b} only the best gets right, "
                   f"{widest.mcnemar_c} only {widest.run.name}).")
    for group in cmp.configs:
        if len(group.runs) > 1:
            acc = group.accuracies
            which = "" if group.config == SAME else f" of {group.config}"
            out.append(f"Seed spread{which} over {len(acc)} seeds: accuracy "
                       f"{_fmt(group.mean, digits)} ± {_fmt(group.std, digits)} (min "
                       f"{_fmt(min(acc), digits)}, max {_fmt(max(acc), digits)}).")
    if len(cmp.configs) > 1:
        first, second = cmp.configs[0], cmp.configs[1]
        out.append(f"The best configuration ({first.config}) leads the next ({second.config}) by "
                   f"{(first.mean - second.mean) * 100:.2f} accuracy points on average.")
    return out


def sections(cmp: Comparison, digits: int = 4) -> list[Section]:
    level = int(round(100 * CONFIDENCE))
    keys = cmp.keys
    runs = [[i, r.run.name, r.run.run_id, *(r.run.params.get(k, "") for k in keys),
             _fmt(r.accuracy, digits), f"[{_fmt(r.acc_ci[0], digits)}, {_fmt(r.acc_ci[1], digits)}]",
             _fmt(r.f1_macro, digits), r.mcnemar_b if r.mcnemar_b is not None else "best",
             r.mcnemar_c if r.mcnemar_c is not None else "", _p(r.mcnemar_p), _p(r.mcnemar_p_holm)]
            for i, r in enumerate(cmp.rows, 1)]
    configs = [[g.config, len(g.runs), f"{_fmt(g.mean, digits)} ± {_fmt(g.std, digits)}",
                f"{_fmt(min(g.accuracies), digits)} – {_fmt(max(g.accuracies), digits)}",
                ", ".join(r.run.name for r in g.runs)] for g in cmp.configs]
    return [
        Section("Runs ranked by test accuracy", [
            ("p", f"{len(cmp.rows)} runs on the same {len(cmp.best.run.label)} test images. Interval: "
                  f"{level}% Wilson. McNemar: b = images only the best run gets right, c = images "
                  "only this run gets right; p two-sided exact (binomial test of b out of b + c), "
                  "then Holm-corrected over the runs tested against the best."),
            ("table", ["#", "run", "run id", *keys, "accuracy", f"{level}% interval", "macro F1",
                       "b", "c", "McNemar p", "Holm p"], runs),
        ]),
        Section("Configurations (runs differing only in the seed collapsed)", [
            ("p", "Accuracy mean ± sample standard deviation over the seeds, and min – max."),
            ("table", ["configuration", "runs", "accuracy mean ± sd", "min – max", "runs"], configs),
        ]),
        Section("Per-class F1-score", [("img", "f1_heatmap.png", "Per-class F1 by run")]),
        Section("Conclusions", [("list", conclusions(cmp, digits))]),
    ]


def write_comparison(folder: str | Path, cmp: Comparison, title: str = "Comparison of runs",
                     digits: int = 4) -> dict[str, Path]:
    """``comparison.csv``, ``.md``, ``.html`` and ``f1_heatmap.png`` into ``folder``."""
    png = f1_heatmap_png(cmp)
    parts = sections(cmp, digits)
    files: Mapping[str, Any] = {"comparison.csv": comparison_csv(cmp), "f1_heatmap.png": png,
                                "comparison.md": to_markdown(title, parts),
                                "comparison.html": to_html(title, parts, {"f1_heatmap.png": png})}
    return write_files(folder, files)
