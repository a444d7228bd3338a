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
                    repr(group.mean), "" if group.std is None else repr(group.std),
                    *("" if v is None else repr(v) for v in (row.mcnemar_b, row.mcnemar_c,
                                                             row.mcnemar_p, row.mcnemar_p_holm)),
                    *(repr(v) for v in row.f1_per_class)])
    return buf.getvalue()


def _short(text: str, most: int = 36) -> str:
    """A label that leaves the heatmap its width (the ranking table has the full name)."""
    return text if len(text) <= most else text[:most - 1] + "…"


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
           yticklabels=[_short(f"#{i} {r.run.name}") for i, r in enumerate(cmp.rows, 1)],
           title="Per-class F1-score by run (best first; # as in the ranking)")
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
    if not others:
        out.append("It is the only run: there is nothing to compare it with.")
    else:
        out += [_mcnemar(cmp), _disagreement(cmp)]
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
        single = len(first.runs) == len(second.runs) == 1
        how = (" (one run each: no seed spread to weigh it against)" if single
               else " on average")
        out.append(f"The best configuration ({first.config}) leads the next ({second.config}) by "
                   f"{(first.mean - second.mean) * 100:.2f} accuracy points{how}.")
    return out


def _mcnemar(cmp: Comparison) -> str:
    """The best run against the others: one plain sentence for one other run."""
    others = cmp.rows[1:]
    test = f"McNemar's exact test (α = {ALPHA})"
    if len(others) == 1:
        (other,) = others
        verdict = "differs" if other.mcnemar_p < ALPHA else "does not differ"
        return (f"{test}: the best run {verdict} significantly from {other.run.name} "
                f"(p = {_p(other.mcnemar_p)}).")
    significant = [r for r in others if r.mcnemar_p_holm < ALPHA]
    which = (f"{len(significant)} of the {len(others)} other runs "
             f"({', '.join(r.run.name for r in significant)})" if significant
             else f"none of the {len(others)} other runs")
    return (f"{test}, Holm-corrected: the best run differs significantly from {which}; the "
            f"smallest corrected p-value is {_p(min(r.mcnemar_p_holm for r in others))}.")


def _disagreement(cmp: Comparison) -> str:
    others = cmp.rows[1:]
    widest = max(others, key=lambda r: r.mcnemar_b + r.mcnemar_c)
    split = (f"{widest.mcnemar_b} only the best gets right, {widest.mcnemar_c} only "
             f"{widest.run.name}")
    if len(others) == 1:
        return f"The two runs disagree on {widest.mcnemar_b + widest.mcnemar_c} test images ({split})."
    return (f"Runs disagree on at most {widest.mcnemar_b + widest.mcnemar_c} test images "
            f"(best vs {widest.run.name}: {split}).")


def _config_rows(cmp: Comparison, digits: int) -> list[list[Any]]:
    """One row per configuration: a mean ± sd and a range over several runs, the value of one."""
    rows = []
    for g in cmp.configs:
        acc = g.accuracies
        spread = len(acc) > 1
        rows.append([g.config, len(acc),
                     f"{_fmt(g.mean, digits)} ± {_fmt(g.std, digits)}" if spread else _fmt(g.mean, digits),
                     f"{_fmt(min(acc), digits)} – {_fmt(max(acc), digits)}" if spread else "",
                     ", ".join(r.run.name for r in g.runs)])
    return rows


def _config_note(cmp: Comparison) -> str:
    if all(len(g.runs) == 1 for g in cmp.configs):
        return ("Each configuration has one run: its accuracy is that run's (a mean, a standard "
                "deviation and a range need runs that differ only in the seed).")
    return ("Accuracy mean ± sample standard deviation over the seeds, and min – max; a "
            "configuration with one run shows that run's accuracy.")


def _runs_table(cmp: Comparison, digits: int) -> tuple[str, list[str], list[list[Any]]]:
    """The ranking: its note, header and rows. The McNemar columns only where there is another
    run to test, Holm's only where there are several tests to correct over (with one it is p)."""
    level = int(round(100 * CONFIDENCE))
    tests = len(cmp.rows) - 1
    mcnemar = ["b", "c", "McNemar p", *(["Holm p"] if tests > 1 else [])] if tests else []
    versions = any(r.run.model_version for r in cmp.rows)  # a column only when runs registered
    rows = []
    for i, r in enumerate(cmp.rows, 1):
        row = [i, r.run.name, r.run.run_id, *([r.run.model_version] if versions else []),
               *(r.run.params.get(k, "") for k in cmp.keys),
               _fmt(r.accuracy, digits),
               f"[{_fmt(r.acc_ci[0], digits)}, {_fmt(r.acc_ci[1], digits)}]", _fmt(r.f1_macro, digits)]
        tested = [r.mcnemar_b if r.mcnemar_b is not None else "best",
                  r.mcnemar_c if r.mcnemar_c is not None else "", _p(r.mcnemar_p), _p(r.mcnemar_p_holm)]
        rows.append(row + tested[:len(mcnemar)])
    note = (f"{len(cmp.rows)} run{'s' if tests else ''} on the same {len(cmp.best.run.label)} "
            f"test images. Interval: {level}% Wilson.")
    if tests:
        note += (" McNemar: b = images only the best run gets right, c = images only this run "
                 "gets right; p two-sided exact (binomial test of b out of b + c)"
                 + (", then Holm-corrected over the runs tested against the best." if tests > 1
                    else "."))
    header = ["#", "run", "run id", *(["model version"] if versions else []), *cmp.keys,
              "accuracy", f"{level}% interval", "macro F1", *mcnemar]
    return note, header, rows


def sections(cmp: Comparison, digits: int = 4) -> list[Section]:
    note, header, rows = _runs_table(cmp, digits)
    return [
        Section("Runs ranked by test accuracy", [("p", note), ("table", header, rows)]),
        Section("Configurations (runs differing only in the seed collapsed)", [
            ("p", _config_note(cmp)),
            ("table", ["configuration", "runs", "accuracy (mean ± sd)", "min – max", "run names"],
             _config_rows(cmp, digits)),
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
