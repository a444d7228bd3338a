"""scikit-learn's classification report layouts and the report's CSV tables, from ``TestResults``.

scikit-learn is not a dependency of the package, so its text layout is reproduced here; the tests
compare both against scikit-learn itself.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from mnist_mlp.metrics import SCORES, TestResults

_SK_NAMES = {"precision": "precision", "recall": "recall", "f1": "f1-score"}


def text_report(r: TestResults, digits: int = 4) -> str:
    """scikit-learn's ``classification_report(labels=range(C), digits=digits)`` text, verbatim."""
    names = [str(k) for k in range(r.num_classes)]
    width = max(max(len(n) for n in names), len("weighted avg"), digits)
    headers = ("precision", "recall", "f1-score", "support")
    out = ("{:>{width}s} " + " {:>9}" * 4).format("", *headers, width=width) + "\n\n"
    row = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    for k, name in enumerate(names):
        scores = [r.per_class[s][k] for s in SCORES]
        out += row.format(name, *scores, r.support[k], width=width, digits=digits)
    out += "\n"
    acc_row = "{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f}" + " {:>9}\n"
    out += acc_row.format("accuracy", "", "", r.accuracy, r.total, width=width, digits=digits)
    for average in ("macro", "weighted"):
        scores = [r.averages[average][s] for s in SCORES]
        out += row.format(f"{average} avg", *scores, r.total, width=width, digits=digits)
    return out


def dict_report(r: TestResults) -> dict[str, Any]:
    """scikit-learn's ``classification_report(..., output_dict=True)`` structure."""
    out: dict[str, Any] = {}
    for k in range(r.num_classes):
        out[str(k)] = {_SK_NAMES[s]: r.per_class[s][k] for s in SCORES}
        out[str(k)]["support"] = float(r.support[k])
    out["accuracy"] = r.accuracy
    for average in ("macro", "weighted"):
        out[f"{average} avg"] = {_SK_NAMES[s]: r.averages[average][s] for s in SCORES}
        out[f"{average} avg"]["support"] = float(r.total)
    return out


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def per_class_csv(r: TestResults) -> str:
    rows = [[k, r.support[k], *(repr(r.per_class[s][k]) for s in ("acc", *SCORES))]
            for k in range(r.num_classes)]
    return _csv_text(["class", "support", "accuracy", "precision", "recall", "f1"], rows)


def confusion_csv(r: TestResults) -> str:
    rows = [[k, *r.confusion[k]] for k in range(r.num_classes)]
    return _csv_text(["true\\pred", *map(str, range(r.num_classes))], rows)


def predictions_csv(r: TestResults) -> str:
    """One row per test image; probabilities with 9 significant digits (exact for float32)."""
    c = r.num_classes
    header = ",".join(["index", "label", "pred", *(f"prob_{k}" for k in range(c))])
    table = np.column_stack([r.index, r.label, r.pred, r.probs]) if len(r.index) else np.empty(
        (0, 3 + c))
    buf = io.StringIO()
    np.savetxt(buf, table, fmt=["%d"] * 3 + ["%.9g"] * c, delimiter=",", header=header,
               comments="")
    return buf.getvalue()


def history_csv(history: Sequence[dict[str, float]]) -> str:
    """One row per epoch: the learning curves' numbers (empty cells where a value was not logged)."""
    keys = sorted({k for h in history for k in h if k != "epoch"})
    return _csv_text(["epoch", *keys], [[h["epoch"], *(repr(h[k]) if k in h else "" for k in keys)]
                                        for h in history])
