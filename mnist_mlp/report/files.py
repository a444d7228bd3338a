"""The files a test run leaves in its report folder, each written atomically.

``write_report`` writes (temp name in the same folder, then ``os.replace``, so a reader never sees
half a file where a complete one stood):

- ``classification_report.txt`` / ``.json``: scikit-learn's layouts (``tables``);
- ``per_class_metrics.csv``, ``confusion_matrix.csv`` (rows true class, columns predicted);
- ``predictions.csv``: test index, label, pred and the class probabilities;
- ``summary.json``: the provenance, then what ``numbers`` derives (intervals, calibration,
  ranking) unrounded;
- ``learning_curves.csv``: train/val loss and accuracy per epoch (when the history is given);
- figures: ``confusion_matrix.png``, ``roc_curves.png``, ``pr_curves.png``, ``reliability.png``,
  and, when given the test images and the epoch history, ``mistakes_confident.png``,
  ``mistakes_pair.png`` and ``learning_curves.png``;
- ``report.md`` and a self-contained ``report.html`` (figures as data URIs), headed by the
  provenance (``provenance``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlp.atomic import write_files
from mnist_mlp.errors import UserError
from mnist_mlp.metrics import TestResults
from mnist_mlp.report import figures, tables
from mnist_mlp.report.content import joined, sections
from mnist_mlp.report.numbers import RunNumbers, derive
from mnist_mlp.report.provenance import Provenance
from mnist_mlp.report.render import to_html, to_markdown
from mnist_mlp.report.settings import Settings


def summary(r: TestResults, n: RunNumbers, provenance: Provenance | None = None) -> dict[str, Any]:
    """The derived numbers as JSON-ready values (``summary.json``), after the provenance."""
    rel = n.reliability
    return {
        "provenance": provenance.as_dict() if provenance else None,
        "accuracy": r.accuracy, "accuracy_ci": list(n.acc_ci),
        "f1_macro": r.averages["macro"]["f1"], "f1_macro_ci": list(n.f1_macro_ci),
        "recall_ci": {"low": n.recall_ci[0], "high": n.recall_ci[1]},
        "auroc": r.ranking.auroc, "auroc_macro": r.ranking.auroc_macro,
        "ap": r.ranking.ap, "ap_macro": r.ranking.ap_macro,
        "ece": rel.ece, "top_k_accuracy": {str(k): v for k, v in n.top_k.items()},
        "reliability": {"edges": rel.edges.tolist(), "count": rel.count.tolist(),
                        "confidence": rel.confidence.tolist(), "accuracy": rel.accuracy.tolist()},
        "most_confused_pair": list(n.pair) if n.pair else None,
        "most_confused_pair_ties": [list(p) for p in n.pair_ties],
        "confident_mistakes_index": r.index[n.confident_mistakes].tolist(),
        "pair_mistakes_index": r.index[n.pair_mistakes].tolist(),
    }


def figure_files(r: TestResults, n: RunNumbers, images: np.ndarray | None,
                 history: Sequence[Mapping[str, float]] | None) -> dict[str, bytes]:
    out = {"confusion_matrix.png": figures.confusion_png(r)}
    if history:
        out["learning_curves.png"] = figures.learning_curves_png(history)
    out["roc_curves.png"] = figures.roc_png(r.ranking)
    out["pr_curves.png"] = figures.pr_png(r.ranking)
    out["reliability.png"] = figures.reliability_png(n.reliability)
    if images is not None:
        out["mistakes_confident.png"] = figures.mistakes_png(
            images, n.confident_mistakes, r,
            f"The {len(n.confident_mistakes)} most confident wrong predictions")
        if n.pair:
            out["mistakes_pair.png"] = figures.mistakes_png(images, n.pair_mistakes, r,
                                                            pair_grid_title(r, n))
    return out


def pair_grid_title(r: TestResults, n: RunNumbers) -> str:
    """The pair grid's title: the pair, how many of its errors are shown, the pairs tied with it."""
    a, b = n.pair or (0, 0)
    tie = (f"\n(tied with {joined([f'{x}↔{y}' for x, y in n.pair_ties])}: the lowest class "
           "numbers shown)" if n.pair_ties else "")
    return (f"Most-confused pair {a}↔{b}: {len(n.pair_mistakes)} of its "
            f"{r.confusion[a][b] + r.confusion[b][a]} errors, most confident first{tie}")


def write_report(
    settings: Settings,
    results: TestResults,
    model_text: str,
    hyperparameters: Mapping[str, Any],
    *,
    images: np.ndarray | None = None,
    history: Sequence[Mapping[str, float]] | None = None,
    provenance: Provenance | None = None,
    title: str = "Classification metrics on MNIST",
) -> dict[str, Path]:
    """Write every report file into ``settings.dir`` (created if needed); returns name -> path.

    ``images``: the test split (N x 28 x 28, uint8 pixels or values in [0, 1]), for the mistake
    grids; ``history``: one dict of ``.../train``/``.../val`` values per epoch
    (``history.EpochHistory``), for the learning curves;
    ``provenance``: the run, code, data and weights tested, the report's header.
    """
    folder, digits = Path(str(settings.dir)), settings.digits
    n = derive(results, settings)
    pngs = figure_files(results, n, images, history)
    parts = sections(results, model_text, hyperparameters, digits, n, figures=list(pngs),
                     provenance=provenance)
    files: dict[str, str | bytes] = {
        "classification_report.txt": tables.text_report(results, digits),
        "classification_report.json": json.dumps(tables.dict_report(results), indent=2) + "\n",
        "per_class_metrics.csv": tables.per_class_csv(results),
        "confusion_matrix.csv": tables.confusion_csv(results),
        "predictions.csv": tables.predictions_csv(results),
        "summary.json": json.dumps(summary(results, n, provenance), indent=2) + "\n",
        **({"learning_curves.csv": tables.history_csv(history)} if history else {}),
        **pngs,
        "report.md": to_markdown(title, parts),
        "report.html": to_html(title, parts, pngs),
    }
    try:
        return write_files(folder, files)
    except OSError as err:
        raise UserError(
            f"Cannot write the report files into {folder} ({err}). Point report.dir at a "
            "writable folder; `python evaluate.py ckpt_path=<checkpoint>` writes them again "
            "from a checkpoint."
        ) from None


def train_hyperparameters(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The training settings the reference lists, from a train.py config."""
    model = cfg["model"]
    return {
        "learning_rate": model["lr"],
        "batch_size": cfg["data"]["batch_size"],
        "epochs": cfg["trainer"]["max_epochs"],
        "optimizer": target_text(model.get("optimizer")),
        "scheduler": target_text(model.get("scheduler")),
        "seed": cfg.get("seed"),
    }


def target_text(spec: Mapping[str, Any] | None) -> str:
    """``torch.optim.SGD(momentum=0.0, ...)`` from a ``_target_`` dict; ``none`` if absent."""
    if not spec or "_target_" not in spec:
        return "none"
    args = ", ".join(f"{k}={v}" for k, v in spec.items() if not str(k).startswith("_"))
    return f"{spec['_target_']}({args})"
