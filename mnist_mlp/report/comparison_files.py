"""The comparison's files: ``comparison.csv``, ``.md``, ``.html`` and ``f1_heatmap.png``.

The numbers are ``report.comparison``'s; this lays them out and draws the per-class F1 heatmap.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlp.atomic import write_files
from mnist_mlp.metrics import CONFIDENCE
from mnist_mlp.report.comparison import ALPHA, SAME, Comparison
from mnist_mlp.report.render import Section, to_html, to_markdown


def _fmt(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    return "" if x is None else f"{x:.3g}"


def comparison_csv(cmp: Comparison) -> str:
    """One row per run, best first; p-values unrounded (``repr``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "run_id", "run_name", "model_version", "config", *cmp.keys, "accuracy",
                "acc_ci_low", "acc_ci_high", "f1_macro", "config_runs", "config_acc_mean", "config_acc_std",
                "mcnemar_b", "mcnemar_c", "mcnemar_p", "mcnemar_p_holm",
                *(f"f1_class_{k}" for k in range(cmp.num_classes))])
    by_config = {c.config: c for c in cmp.configs}
    for rank, row in enumerate(cmp.rows, 1):
        group = by_config[row.config]
        w.writerow([rank, row.run.run_id, row.run.name, row.run.model_version, row.config,
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
    holder = next((r for r in cmp.rows if r.run.champion), None)
    if holder is not None:
        run = holder.run
        out.append(f"Alias champion of registered model {run.registered_name} is version "
                   f"{run.registered_version}, run {run.name} ({run.run_id}): serve it with "
                   f"`make serve MODEL=models:/{run.registered_name}@champion`.")
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
    versions = any(r.run.model_version for r in cmp.rows)  # a column only when runs registered
    runs = [[i, r.run.name, r.run.run_id,
             *([r.run.model_version] if versions else []),
             *(r.run.params.get(k, "") for k in keys),
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
            ("table", ["#", "run", "run id", *(["model version"] if versions else []), *keys,
                       "accuracy", f"{level}% interval", "macro F1",
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
