"""What the report says: its sections, in the reference's order plus the ranking, calibration,
intervals, mistakes and learning curves, and conclusions derived from the numbers (no fixed verdicts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mnist_mlp.metrics import CONFIDENCE, ECE_BINS, SCORES, TestResults
from mnist_mlp.report.numbers import RunNumbers, derive, most_confused, tied_first
from mnist_mlp.report.provenance import Provenance, fields
from mnist_mlp.report.render import Section

#: Largest/smallest class size up to which the report calls the test set balanced.
BALANCED_RATIO = 1.5
#: Probability from which a wrong prediction counts as a confident mistake in the conclusions.
CONFIDENT = 0.9
#: Figure files of the report (name -> alt text); a figure is left out when its data is missing.
FIGURES = {
    "confusion_matrix.png": "Confusion matrix: counts and row-normalised",
    "learning_curves.png": "Training and validation loss and accuracy per epoch",
    "roc_curves.png": "One-vs-rest ROC curve per class",
    "pr_curves.png": "One-vs-rest precision-recall curve per class",
    "reliability.png": "Reliability diagram",
    "mistakes_confident.png": "The most confident wrong predictions",
    "mistakes_pair.png": "Errors between the most-confused pair of classes",
}


def _f(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def _ci(interval: Sequence[float], digits: int) -> str:
    return f"[{_f(interval[0], digits)}, {_f(interval[1], digits)}]"


def conclusions(r: TestResults, digits: int = 4, n: RunNumbers | None = None) -> list[str]:
    """The reference's conclusions, recomputed, then what the intervals, calibration and mistakes say."""
    n = n or derive(r)
    c, f1 = r.num_classes, r.per_class["f1"]
    pct = int(round(100 * CONFIDENCE))
    out = [f"Overall accuracy is {_f(r.accuracy, digits)} ({r.correct}/{r.total}), {pct}% Wilson "
           f"interval {_ci(n.acc_ci, digits)}; the macro F1-score {_f(r.averages['macro']['f1'], digits)}, "
           f"{pct}% bootstrap interval {_ci(n.f1_macro_ci, digits)}."]
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
    m = min(2, c)
    best = ", ".join(f"{k} ({_f(f1[k], digits)})" for k in order[:m])
    worst = ", ".join(f"{k} ({_f(f1[k], digits)})" for k in reversed(order[-m:]))
    out.append(f"Highest F1-score: class {best}; lowest: class {worst}.")
    out.append(_recall_intervals(r, n, digits))
    out.append(_confusions(r))
    out.append(_ranking(r, digits))
    out.append(_calibration(r, n, digits))
    out.append(_mistakes(r, digits))
    return out


def _recall_intervals(r: TestResults, n: RunNumbers, digits: int) -> str:
    low, high = (np.asarray(v) for v in n.recall_ci)
    k = int(np.argmax(high - low))
    return (f"The widest per-class recall interval is class {k}'s {_ci((low[k], high[k]), digits)} "
            f"({r.support[k]} images); the narrowest is {_f(float((high - low).min()), digits)} wide.")


def joined(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(items) if len(items) < 3 else f"{', '.join(items[:-1])} and {items[-1]}"


def _confusions(r: TestResults) -> str:
    pairs = most_confused(r)
    if not pairs:
        return "No test image was misclassified."
    text = "; ".join(f"{a}↔{b}: {ab + ba} ({a}→{b}: {ab}, {b}→{a}: {ba})" for a, b, ab, ba in pairs)
    first = tied_first(pairs)
    if len(first) == 1:
        a, b = first[0][:2]
        lead = f"The model confuses classes {a} and {b} most often."
    else:
        names = joined([f"{a}↔{b}" for a, b, _, _ in first])
        lead = (f"The model confuses classes {names} most often, tied at "
                f"{first[0][2] + first[0][3]} images each.")
    return f"{lead} Most-confused pairs: {text}."


def _ranking(r: TestResults, digits: int) -> str:
    rk = r.ranking
    if not np.isfinite(rk.auroc).any():
        return "Ranking: no class has both positive and negative test images; AUROC and AP are undefined."
    k_auc, k_ap = int(np.nanargmin(rk.auroc)), int(np.nanargmin(rk.ap))
    return (f"Ranking: macro AUROC {_f(rk.auroc_macro, digits)} and macro average precision "
            f"{_f(rk.ap_macro, digits)}; the lowest AUROC is class {k_auc}'s "
            f"({_f(rk.auroc[k_auc], digits)}), the lowest AP class {k_ap}'s ({_f(rk.ap[k_ap], digits)}).")


def _calibration(r: TestResults, n: RunNumbers, digits: int) -> str:
    rel = n.reliability
    if not r.total:
        return "No test images: nothing to calibrate."
    mean_conf = float((rel.count * rel.confidence).sum() / r.total)
    gap = mean_conf - r.accuracy
    side = "over" if gap > 0 else "under"
    bins = np.flatnonzero(rel.count)
    # the bin contributing most to the ECE (not the largest gap: a bin of 3 images is noise)
    worst = int(bins[np.argmax(rel.count[bins] * np.abs(rel.accuracy[bins] - rel.confidence[bins]))])
    top = "; ".join(f"Top-{k} accuracy {_f(v, digits)}" for k, v in n.top_k.items())
    return (f"Calibration: expected calibration error {_f(rel.ece, digits)} ({ECE_BINS} bins); the "
            f"mean top-class probability {_f(mean_conf, digits)} is {abs(gap) * 100:.2f} points "
            f"{'above' if gap > 0 else 'below'} the accuracy ({side}confident on average); the "
            f"largest share of the ECE comes from the bin ({rel.edges[worst]:.2f}, "
            f"{rel.edges[worst + 1]:.2f}] "
            f"({rel.count[worst]} images, accuracy {_f(rel.accuracy[worst], digits)}, confidence "
            f"{_f(rel.confidence[worst], digits)}). {top}.")


def _mistakes(r: TestResults, digits: int) -> str:
    wrong = np.flatnonzero(r.pred != r.label)
    if not len(wrong):
        return "There are no mistakes to describe."
    conf = r.probs[wrong, r.pred[wrong]]
    right = np.flatnonzero(r.pred == r.label)
    right_conf = float(np.median(r.probs[right, r.pred[right]])) if len(right) else float("nan")
    ranks = (r.probs[wrong] > r.probs[wrong, r.label[wrong]][:, None]).sum(axis=1) + 1
    true_k = np.bincount(r.label[wrong], minlength=r.num_classes)
    pred_k = np.bincount(r.pred[wrong], minlength=r.num_classes)
    t, p = int(true_k.argmax()), int(pred_k.argmax())
    return (f"Of the {len(wrong)} mistakes, {int((conf >= CONFIDENT).sum())} were made with "
            f"probability ≥ {CONFIDENT} (median {_f(float(np.median(conf)), digits)}, against "
            f"{_f(right_conf, digits)} for correct predictions); the true class was the second "
            f"choice in {int((ranks == 2).sum())} of them. Class {t} is the true class of most "
            f"mistakes ({int(true_k[t])}), class {p} the most frequent wrong answer ({int(pred_k[p])}).")


def sections(r: TestResults, model_text: str, hyperparameters: Mapping[str, Any],
             digits: int = 4, n: RunNumbers | None = None,
             figures: Sequence[str] = tuple(FIGURES),
             provenance: Provenance | None = None) -> list[Section]:
    """The provenance, the reference report's sections in its order, then the new ones; only
    the ``figures`` that exist. Each number appears once: the scikit-learn layouts of the same
    scores are files (``classification_report.txt``/``.json``), not a third table.
    """
    n = n or derive(r)
    c = range(r.num_classes)
    pct = 100 * r.correct / r.total if r.total else 0.0
    level = int(round(100 * CONFIDENCE))

    def img(name: str) -> list[tuple]:
        return [("img", name, FIGURES[name])] if name in figures else []

    out = [Section("Provenance", [("fields", fields(provenance))])] if provenance else []
    out += [
        Section("Model description", [("pre", model_text)]),
        Section("Hyperparameters", [("list", [f"{k} = {v}" for k, v in hyperparameters.items()])]),
        Section("Test set", [("p", f"Average loss (mean per-sample cross-entropy): "
                                   f"{_f(r.loss, digits)}, accuracy: {r.correct}/{r.total} "
                                   f"({pct:.2f}%), {level}% Wilson interval "
                                   f"{_ci(n.acc_ci, digits)}.")]),
        Section("Test data class sizes", [("table", ["Class", *map(str, c)],
                                           [["size", *r.support]])]),
        _general_section(r, n, digits),
        Section("Per-class metrics", [
            ("p", "The reference's per-class accuracy (the share of a class's images classified "
                  "correctly) is the class's recall, so it is one column here; beside it its "
                  f"{level}% Wilson interval."),
            ("table", ["Class", "Support", "Precision", "Recall (= accuracy)",
                       f"Recall {level}% interval", "F1-score"], _per_class_rows(r, n, digits)),
        ]),
        Section("Confusion matrix", [
            *img("confusion_matrix.png"),
            ("p", "Rows: true class; columns: predicted class."),
            ("table", ["true \\ pred", *map(str, c)], [[k, *r.confusion[k]] for k in c]),
        ]),
        Section("Classification report", [
            ("p", "scikit-learn's classification report of these predictions is in "
                  "classification_report.txt (its text layout) and classification_report.json: "
                  "the per-class precision, recall, F1-score and support above, the accuracy "
                  "(Test set) and the macro and weighted averages (General metrics)."),
        ]),
    ]
    if "learning_curves.png" in figures:
        out.append(Section("Learning curves", img("learning_curves.png")))
    out += [_ranking_section(r, digits, img), _calibration_section(n, digits, img)]
    mistakes = img("mistakes_confident.png") + img("mistakes_pair.png")
    if mistakes:
        out.append(Section("The mistakes", [("p", _mistakes_note(n)), *mistakes]))
    out.append(Section("Conclusions", [("list", conclusions(r, digits, n))]))
    return out


def _general_section(r: TestResults, n: RunNumbers, digits: int) -> Section:
    avg, level = r.averages, int(round(100 * CONFIDENCE))
    return Section("General metrics", [
        ("p", "The reference's general row is the macro average (the unweighted mean over "
              "classes); the weighted average weighs classes by their support; every micro average "
              f"equals the accuracy (Test set). Macro F1-score {level}% interval (percentile "
              f"bootstrap over the test images): {_ci(n.f1_macro_ci, digits)}."),
        ("table", ["average", "precision", "recall", "F1-score"],
         [[name, *(_f(avg[a][s], digits) for s in SCORES)]
          for a, name in (("macro", "macro (reference's general)"), ("weighted", "weighted"))]),
    ])


def _per_class_rows(r: TestResults, n: RunNumbers, digits: int) -> list[list[Any]]:
    low, high = n.recall_ci
    return [[k, r.support[k], *(_f(r.per_class[s][k], digits) for s in ("precision", "recall")),
             _ci((low[k], high[k]), digits), _f(r.per_class["f1"][k], digits)]
            for k in range(r.num_classes)]


def _mistakes_note(n: RunNumbers) -> str:
    text = ("Each image: its true and predicted class, the probability of the prediction and "
            "#, its test index (the index column of predictions.csv).")
    if n.pair and n.pair_ties:
        a, b = n.pair
        ties = joined([f"{x}↔{y}" for x, y in n.pair_ties])
        text += (f" The pair grid shows {a}↔{b}; {ties} {'has' if len(n.pair_ties) == 1 else 'have'} "
                 f"as many mix-ups (the pair with the lowest class numbers is shown).")
    return text


def _ranking_section(r: TestResults, digits: int, img: Any) -> Section:
    rk = r.ranking
    rows = [[k, _f(rk.auroc[k], digits), _f(rk.ap[k], digits)] for k in range(r.num_classes)]
    rows.append(["macro", _f(rk.auroc_macro, digits), _f(rk.ap_macro, digits)])
    return Section("Ranking: ROC and precision-recall", [
        ("p", "Each class against the rest, over every threshold of its predicted probability "
              "(exact, not binned)."),
        *img("roc_curves.png"), *img("pr_curves.png"),
        ("table", ["Class", "AUROC", "Average precision"], rows),
    ])


def _calibration_section(n: RunNumbers, digits: int, img: Any) -> Section:
    top = ", ".join(f"top-{k} accuracy {_f(v, digits)}" for k, v in n.top_k.items())
    return Section("Calibration", [
        ("p", f"Expected calibration error (L1, {ECE_BINS} equal-width bins of the top-class "
              f"probability): {_f(n.reliability.ece, digits)}; {top}."),
        *img("reliability.png"),
    ])
