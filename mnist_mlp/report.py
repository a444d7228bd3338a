"""The files a test run leaves in its report folder: the HW9 report, rebuilt from the run's numbers.

``write_report`` writes, each atomically (temp name in the same folder, then ``os.replace``, so a
reader never sees half a file where a complete one stood):

- ``classification_report.txt``: scikit-learn's ``classification_report`` text layout;
- ``classification_report.json``: its ``output_dict=True`` structure, unrounded;
- ``per_class_metrics.csv``, ``confusion_matrix.csv`` (rows true class, columns predicted);
- ``confusion_matrix.png``: counts and row-normalised side by side;
- ``predictions.csv``: test index, label, pred and the class probabilities;
- ``report.md`` and a self-contained ``report.html`` (figure as a data URI) with every section of
  the reference report and conclusions derived from the numbers.

Every number comes from one ``TestResults`` (see ``mnist_mlp.metrics`` for the conventions).
scikit-learn is not a dependency of the package, so its text layout is reproduced here; the tests
compare both against scikit-learn itself.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlp.errors import UserError
from mnist_mlp.metrics import SCORES, TestResults

#: Largest/smallest class size up to which the report calls the test set balanced.
BALANCED_RATIO = 1.5
_SK_NAMES = {"precision": "precision", "recall": "recall", "f1": "f1-score"}


def check_digits(digits: Any) -> int:
    """``report_digits`` must be a whole number >= 0; checked before training, not after it."""
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 0:
        raise UserError(
            f"report_digits={digits!r}: the number of decimals in the classification report must "
            "be a whole number >= 0 (default 4). Set e.g. report_digits=4."
        )
    return digits


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


def confusion_png(r: TestResults) -> bytes:
    """Counts and row-normalised confusion matrices as one PNG.

    Drawn on a bare ``Figure`` (Agg, no pyplot): nothing global is left open. torchmetrics'
    ``plot`` draws one panel through pyplot, without the row-normalised view.
    """
    from matplotlib.figure import Figure

    cm = np.asarray(r.confusion, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows != 0)
    c = r.num_classes
    fig = Figure(figsize=(14, 6.2), layout="constrained")
    panels = ((cm, "Counts", "{:d}"), (norm, "Row-normalised (diagonal = recall)", "{:.2f}"))
    for ax, (data, title, fmt) in zip(fig.subplots(1, 2), panels, strict=True):
        image = ax.imshow(data, cmap="Blues", vmin=0, vmax=max(float(data.max()), 1e-12))
        fig.colorbar(image, ax=ax, shrink=0.85)
        ax.set(title=title, xlabel="Predicted class", ylabel="True class",
               xticks=range(c), yticks=range(c))
        cut = data.max() / 2
        for i in range(c):
            for j in range(c):
                ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if data[i, j] > cut else "black")
    fig.suptitle(f"Confusion matrix, {r.total} test images (rows: true class, columns: predicted)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


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


# ---------------------------------------------------------------- report.md / report.html


@dataclass
class Section:
    """One titled part of the report: a list of blocks rendered to Markdown and to HTML.

    Blocks: ``("p", text)``, ``("pre", text)``, ``("list", [items])``,
    ``("table", header, rows)``, ``("img", file_name, alt)``.
    """

    title: str
    blocks: list[tuple] = field(default_factory=list)


def _f(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def conclusions(r: TestResults, digits: int = 4) -> list[str]:
    """The reference's conclusions, recomputed: level, class balance, best/worst, confusions."""
    c, f1 = r.num_classes, r.per_class["f1"]
    out = [f"Overall accuracy is {_f(r.accuracy, digits)} ({r.correct}/{r.total}) and the macro "
           f"F1-score {_f(r.averages['macro']['f1'], digits)}."]
    sizes = np.asarray(r.support)
    lo, hi = int(sizes.argmin()), int(sizes.argmax())
    if sizes[lo] == 0:
        balance = f"class {lo} has no test images, so its recall and F1 say nothing"
    else:
        ratio = sizes[hi] / sizes[lo]
        verdict = "balanced" if ratio <= BALANCED_RATIO else "imbalanced"
        balance = (f"the largest is {ratio:.2f} times the smallest: {verdict} "
                   f"(balanced means at most {BALANCED_RATIO} times)")
    out.append(f"Test classes range from {sizes[lo]} images (class {lo}) to {sizes[hi]} (class "
               f"{hi}); {balance}.")
    prec, rec = r.per_class["precision"], r.per_class["recall"]
    out.append(f"Per class, precision ranges from {_f(min(prec), digits)} to "
               f"{_f(max(prec), digits)} and recall from {_f(min(rec), digits)} to "
               f"{_f(max(rec), digits)}.")
    order = sorted(range(c), key=lambda k: (-f1[k], k))
    n = min(2, c)
    best = ", ".join(f"{k} ({_f(f1[k], digits)})" for k in order[:n])
    worst = ", ".join(f"{k} ({_f(f1[k], digits)})" for k in reversed(order[-n:]))
    out.append(f"Highest F1-score: class {best}; lowest: class {worst}.")
    out.append(_confusions(r))
    return out


def most_confused(r: TestResults, top: int = 3) -> list[tuple[int, int, int, int]]:
    """Unordered class pairs ``(a, b, a→b, b→a)`` with the most mix-ups, most first; none if 0."""
    cm = np.asarray(r.confusion)
    pairs = [(a, b, int(cm[a, b]), int(cm[b, a]))
             for a in range(r.num_classes) for b in range(a + 1, r.num_classes)]
    pairs = [p for p in pairs if p[2] + p[3] > 0]
    return sorted(pairs, key=lambda p: (-(p[2] + p[3]), p[0], p[1]))[:top]


def _confusions(r: TestResults) -> str:
    pairs = most_confused(r)
    if not pairs:
        return "No test image was misclassified."
    text = "; ".join(f"{a}↔{b}: {ab + ba} ({a}→{b}: {ab}, {b}→{a}: {ba})" for a, b, ab, ba in pairs)
    a, b = pairs[0][:2]
    return f"The model confuses classes {a} and {b} most often. Most-confused pairs: {text}."


def sections(r: TestResults, model_text: str, hyperparameters: Mapping[str, Any],
             digits: int = 4) -> list[Section]:
    """The reference report's sections, in its order, filled with this run's numbers."""
    c = range(r.num_classes)
    avg = r.averages
    pct = 100 * r.correct / r.total if r.total else 0.0
    macro = [avg["macro"][s] for s in SCORES]
    per_class = [[k, r.support[k], *(_f(r.per_class[s][k], digits) for s in ("acc", *SCORES))]
                 for k in c]
    return [
        Section("Model description", [("pre", model_text)]),
        Section("Hyperparameters", [("list", [f"{k} = {v}" for k, v in hyperparameters.items()])]),
        Section("Test set", [("p", f"Average loss (mean per-sample cross-entropy): "
                                   f"{_f(r.loss, digits)}, accuracy: {r.correct}/{r.total} "
                                   f"({pct:.2f}%).")]),
        Section("Test data class sizes", [("table", ["Class", *map(str, c)],
                                           [["size", *r.support]])]),
        Section("General metrics", [
            ("p", "The reference's general row is the macro average (unweighted mean over "
                  "classes); weighted averages weigh classes by support; micro averages equal "
                  "the accuracy."),
            ("table", ["average", "accuracy", "precision", "recall", "F1-score"],
             [["macro (reference's general)", _f(r.accuracy, digits),
               *(_f(v, digits) for v in macro)],
              *[[a, _f(r.accuracy, digits), *(_f(avg[a][s], digits) for s in SCORES)]
                for a in ("weighted", "micro")]]),
        ]),
        Section("Per-class metrics", [
            ("p", "A class's accuracy is the share of its images classified correctly, i.e. its "
                  "recall (as in the reference)."),
            ("table", ["Class", "Support", "Accuracy", "Precision", "Recall", "F1-score"],
             per_class),
        ]),
        Section("Confusion matrix", [
            ("img", "confusion_matrix.png", "Confusion matrix: counts and row-normalised"),
            ("p", "Rows: true class; columns: predicted class."),
            ("table", ["true \\ pred", *map(str, c)], [[k, *r.confusion[k]] for k in c]),
        ]),
        Section("Classification report", [("table", ["", "precision", "recall", "f1-score",
                                                     "support"], _report_rows(r, digits)),
                                          ("pre", text_report(r, digits))]),
        Section("Conclusions", [("list", conclusions(r, digits))]),
    ]


def _report_rows(r: TestResults, digits: int) -> list[list[Any]]:
    """The classification report as table rows (the reference shows it as a table)."""
    rows: list[list[Any]] = []
    for name, v in dict_report(r).items():
        if name == "accuracy":
            rows.append([name, "", "", _f(v, digits), r.total])
        else:
            rows.append([name, *(_f(v[s], digits) for s in ("precision", "recall", "f1-score")),
                         int(v["support"])])
    return rows


def to_markdown(title: str, parts: Sequence[Section]) -> str:
    out = [f"# {title}", ""]
    for s in parts:
        out += [f"## {s.title}", ""]
        for kind, *args in s.blocks:
            if kind == "p":
                out += [args[0], ""]
            elif kind == "pre":
                out += ["```", args[0].rstrip("\n"), "```", ""]
            elif kind == "list":
                out += [f"{i}. {item}" for i, item in enumerate(args[0], 1)] + [""]
            elif kind == "table":
                header, rows = args
                out.append("| " + " | ".join(map(str, header)) + " |")
                out.append("|" + "|".join("---" for _ in header) + "|")
                out += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
                out.append("")
            elif kind == "img":
                out += [f"![{args[1]}]({args[0]})", ""]
    return "\n".join(out)


_CSS = ("body{font-family:sans-serif;max-width:75em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;"
        "padding:.2em .6em;text-align:right}th{background:#eee}pre{background:#f6f6f6;"
        "padding:.6em;overflow-x:auto}img{max-width:100%}")


def to_html(title: str, parts: Sequence[Section], images: Mapping[str, bytes]) -> str:
    """One self-contained page: images inlined as ``data:`` URIs, tables as HTML tables."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    for s in parts:
        out.append(f"<h2>{e(s.title)}</h2>")
        for kind, *args in s.blocks:
            if kind == "p":
                out.append(f"<p>{e(args[0])}</p>")
            elif kind == "pre":
                out.append(f"<pre>{e(args[0])}</pre>")
            elif kind == "list":
                out.append("<ol>" + "".join(f"<li>{e(i)}</li>" for i in args[0]) + "</ol>")
            elif kind == "table":
                header, rows = args
                head = "".join(f"<th>{e(str(h))}</th>" for h in header)
                body = "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>"
                               for row in rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(images[args[0]]).decode("ascii")
                out.append(f'<img src="data:image/png;base64,{data}" alt="{e(args[1])}">')
    out.append("</body></html>")
    return "\n".join(out)


def _atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a hidden temp name beside ``path``, then rename over it (atomic on POSIX)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:  # created with the usual permissions (umask), unlike mkstemp
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_report(
    folder: str | os.PathLike,
    results: TestResults,
    model_text: str,
    hyperparameters: Mapping[str, Any],
    digits: int = 4,
    title: str = "Classification metrics on MNIST",
) -> dict[str, Path]:
    """Write every report file into ``folder`` (created if needed); returns name -> path."""
    digits = check_digits(digits)
    folder = Path(folder)
    png = confusion_png(results)
    parts = sections(results, model_text, hyperparameters, digits)
    files: dict[str, str | bytes] = {
        "classification_report.txt": text_report(results, digits),
        "classification_report.json": json.dumps(dict_report(results), indent=2) + "\n",
        "per_class_metrics.csv": per_class_csv(results),
        "confusion_matrix.csv": confusion_csv(results),
        "confusion_matrix.png": png,
        "predictions.csv": predictions_csv(results),
        "report.md": to_markdown(title, parts),
        "report.html": to_html(title, parts, {"confusion_matrix.png": png}),
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            _atomic_write(folder / name, data)
    except OSError as err:
        raise UserError(
            f"Cannot write the report files into {folder} ({err}). Point report_dir at a "
            "writable folder; `python evaluate.py ckpt_path=<checkpoint>` writes them again "
            "from a checkpoint."
        ) from None
    return {name: folder / name for name in files}


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
