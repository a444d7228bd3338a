"""The report's pictures, each drawn on a bare matplotlib ``Figure`` (Agg, no pyplot: nothing global
is left open) and returned as PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnist_mlp.metrics import Ranking, Reliability, TestResults


def _png(fig: Any, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _figure(figsize: tuple[float, float]) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def confusion_png(r: TestResults) -> bytes:
    """``confusion_figure`` as PNG bytes."""
    return _png(confusion_figure(r))


@dataclass(frozen=True)
class Panel:
    """One panel of the confusion figure: what each cell says and the value its colour stands for.

    ``colour`` is masked on the diagonal: the correct predictions are written in, on a grey of
    their own, and do not set the colour scale, which runs from 0 to the largest error.
    """

    title: str
    bar: str
    labels: list[list[str]]
    colour: np.ma.MaskedArray


def confusion_panels(r: TestResults) -> list[Panel]:
    """The counts, and the errors per 1000 images of the true class (the diagonal: recall, in %)."""
    cm = np.asarray(r.confusion, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    per_mille = np.divide(1000 * cm, rows, out=np.zeros(cm.shape), where=rows != 0)
    diagonal = np.eye(len(cm), dtype=bool)
    cells = [(i, j) for i in range(len(cm)) for j in range(len(cm))]

    def labels(text: Any) -> list[list[str]]:  # zero-error cells stay blank
        out = [["" for _ in cm] for _ in cm]
        for i, j in cells:
            if i == j or cm[i, j]:
                out[i][j] = text(i, j)
        return out

    return [
        Panel("Counts (diagonal: correct, grey)", "wrong predictions",
              labels(lambda i, j: str(cm[i, j])), np.ma.masked_array(cm.astype(float), diagonal)),
        Panel("Errors per 1000 images of the true class (diagonal: recall %)",
              "errors per 1000 images of the true class",
              labels(lambda i, j: f"{per_mille[i, j] / 10:.1f}%" if i == j else f"{per_mille[i, j]:.1f}"),
              np.ma.masked_array(per_mille, diagonal)),
    ]


def confusion_figure(r: TestResults) -> Any:
    """The confusion matrix twice (counts; errors per 1000 images of the true class), coloured
    by the errors alone: a diagonal of ~1000 on the same scale would leave every error white.
    """
    from matplotlib import colormaps

    c = r.num_classes
    cmap = colormaps["Reds"].with_extremes(bad="0.86")  # "bad" = the masked diagonal
    fig = _figure((14, 6.2))
    for ax, panel in zip(fig.subplots(1, 2), confusion_panels(r), strict=True):
        errors = panel.colour.compressed()
        top = float(errors.max()) if errors.size and errors.max() > 0 else 1.0
        image = ax.imshow(panel.colour, cmap=cmap, vmin=0, vmax=top)
        fig.colorbar(image, ax=ax, shrink=0.85, label=panel.bar)
        ax.set(title=panel.title, xlabel="Predicted class", ylabel="True class",
               xticks=range(c), yticks=range(c))
        for i in range(c):
            for j in range(c):
                dark = i != j and panel.colour[i, j] > top * 0.6
                ax.text(j, i, panel.labels[i][j], ha="center", va="center", fontsize=8,
                        color="white" if dark else "black", weight="bold" if i == j else None)
    fig.suptitle(f"Confusion matrix, {r.total} test images (rows: true class, columns: predicted; "
                 "colour: the errors, up to the largest)")
    return fig


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(n)]


def _defined(ranking: Ranking) -> list[int]:
    """Classes with a ranking curve: both positive and negative test images."""
    return [k for k, v in enumerate(ranking.auroc) if np.isfinite(v)]


def _legend_or_note(ax: Any, ranking: Ranking, where: str) -> None:
    if _defined(ranking):
        ax.legend(loc=where, fontsize=8)
    else:
        ax.text(0.5, 0.5, "no class has both positive and negative test images",
                transform=ax.transAxes, ha="center", va="center")


def roc_limits(ranking: Ranking) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axes of the ROC figure: false positive rate on a log scale from the decade of one false
    positive (1 / negatives) to 1, true positive rate from where the lowest curve starts once a
    first false positive is allowed (rounded down to 0.1) to 1. Good models differ at false
    positive rates of 1e-4 to 1e-2, which a linear axis squeezes into its left edge.
    """
    classes = _defined(ranking)
    if not classes:
        return (1e-3, 1.0), (0.0, 1.0)
    fprs = [ranking.roc[k][0] for k in classes]
    low = min(float(f[f > 0].min()) for f in fprs)
    start = min(float(ranking.roc[k][1][ranking.roc[k][0] > 0].min()) for k in classes)
    return (10 ** np.floor(np.log10(low)), 1.0), (np.floor(10 * start) / 10, 1.0 + 0.005)


def roc_figure(ranking: Ranking) -> Any:
    """One-vs-rest ROC curve of every class on one plot, AUROC in the legend."""
    (x0, x1), ylim = roc_limits(ranking)
    fig = _figure((7.5, 6.5))
    ax = fig.subplots()
    colors = _colors(len(ranking.roc))
    for k in _defined(ranking):
        fpr, tpr = ranking.roc[k]
        ax.plot(np.maximum(fpr, x0), tpr, color=colors[k], lw=1.3,
                label=f"{k}: AUROC {ranking.auroc[k]:.4f}")
    ax.set(xscale="log", xlim=(x0, x1), ylim=ylim,
           xlabel="False positive rate (log scale; 0 drawn at the left edge)",
           ylabel="True positive rate",
           title=f"ROC, one class against the rest (macro AUROC {ranking.auroc_macro:.4f})")
    ax.grid(alpha=0.3, which="both")
    _legend_or_note(ax, ranking, "lower right")
    return fig


def roc_png(ranking: Ranking) -> bytes:
    return _png(roc_figure(ranking))


def pr_limits(ranking: Ranking) -> tuple[float, float]:
    """Recall and precision range of the PR figure (the same for both): up to 1, from 0.05 below
    the lowest class's balanced point (its best ``min(precision, recall)``, rounded down to 0.05),
    so every class's curve is in view where it keeps both high; the rest of the square, where
    good models do not differ, is left out.
    """
    classes = _defined(ranking)
    if not classes:
        return 0.0, 1.0 + 0.005
    balanced = min(float(np.minimum(*ranking.pr[k]).max()) for k in classes)
    return max(0.0, np.floor(20 * balanced) / 20 - 0.05), 1.0 + 0.005


def pr_figure(ranking: Ranking) -> Any:
    """Precision-recall curve of every class, average precision in the legend."""
    lim = pr_limits(ranking)
    fig = _figure((7.5, 6.5))
    ax = fig.subplots()
    colors = _colors(len(ranking.pr))
    for k in _defined(ranking):
        precision, recall = ranking.pr[k]
        ax.plot(recall, precision, color=colors[k], lw=1.3, label=f"{k}: AP {ranking.ap[k]:.4f}")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=lim, ylim=lim,
           title=f"Precision-recall, one class against the rest (macro AP {ranking.ap_macro:.4f})")
    ax.grid(alpha=0.3)
    _legend_or_note(ax, ranking, "lower left")
    return fig


def pr_png(ranking: Ranking) -> bytes:
    return _png(pr_figure(ranking))


def reliability_png(rel: Reliability) -> bytes:
    """Reliability diagram: accuracy against mean confidence per bin, and how many images each holds."""
    fig = _figure((7.5, 7))
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    width = np.diff(rel.edges)
    used = rel.count > 0
    top.bar(rel.edges[:-1][used], rel.accuracy[used], width=width[used], align="edge",
            edgecolor="black", color="#4c72b0", label="accuracy in bin")
    top.plot(rel.confidence[used], rel.confidence[used], "o", color="#dd8452", ms=4,
             label="mean confidence in bin")
    top.plot([0, 1], [0, 1], color="0.4", ls="--", lw=1, label="perfect calibration")
    top.set(ylabel="Accuracy", ylim=(0, 1.01),
            title=f"Reliability diagram, {len(width)} equal-width bins (ECE {rel.ece:.4f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(rel.edges[:-1], rel.count, width=width, align="edge", edgecolor="black", color="0.7")
    bottom.set(xlabel="Top-class probability (confidence)", ylabel="Images", yscale="symlog",
               xlim=(0, 1))
    return _png(fig)


def mistakes_png(images: np.ndarray, rows: np.ndarray, r: TestResults, title: str,
                 columns: int = 5) -> bytes:
    """``mistakes_figure`` as PNG bytes."""
    return _png(mistakes_figure(images, rows, r, title, columns))


def mistake_caption(r: TestResults, row: int) -> str:
    """True and predicted class, the prediction's probability and the image's test index (the
    ``index`` column of predictions.csv), so a reader can find it."""
    pred = int(r.pred[row])
    return f"true {int(r.label[row])} → pred {pred}\np = {r.probs[row, pred]:.3f}, #{int(r.index[row])}"


def _unit(image: Any) -> np.ndarray:
    """An image's values in [0, 1]: uint8 pixels divided by 255, anything else as it is."""
    image = np.asarray(image)
    return image / 255.0 if image.dtype == np.uint8 else image


def mistakes_figure(images: np.ndarray, rows: np.ndarray, r: TestResults, title: str,
                    columns: int = 5) -> Any:
    """Test images in a grid, each captioned by ``mistake_caption``.

    ``images`` is the whole test split (N x 28 x 28: uint8 pixels, or values in [0, 1]), indexed
    by ``r.index[row]``. One mosaic in one axes: a subplot per image costs ~10x the drawing time.
    """
    cell, gap, caption = 28, 4, 14  # pixels: image, margin, caption strip below it
    lines = max(-(-len(rows) // columns), 1)
    width, height = cell + 2 * gap, cell + caption + gap
    mosaic = np.zeros((lines * height, columns * width))
    fig = _figure((1.75 * columns, 1.85 * lines + 0.5))
    ax = fig.subplots()
    for slot, row in enumerate(rows):
        top, left = (slot // columns) * height, (slot % columns) * width + gap
        mosaic[top:top + cell, left:left + cell] = _unit(images[int(r.index[row])]).reshape(cell, cell)
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    for slot, row in enumerate(rows):
        top, left = (slot // columns) * height, (slot % columns) * width + gap
        ax.text(left + cell / 2, top + cell + 1, mistake_caption(r, int(row)), ha="center",
                va="top", fontsize=8.5)
    if not len(rows):
        ax.text(width * columns / 2, height / 2, "no mistakes", ha="center", va="center")
    ax.axis("off")
    ax.set_title(title)
    return fig


def learning_curves_png(history: Sequence[Mapping[str, float]]) -> bytes:
    """Loss and accuracy per epoch (numbered from 1), training against validation."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure((12, 4.5))
    for ax, what in zip(fig.subplots(1, 2), ("loss", "acc"), strict=True):
        for stage, style in (("train", "-o"), ("val", "-s")):
            points = [(h["epoch"], h[f"{what}/{stage}"]) for h in history if f"{what}/{stage}" in h]
            if points:
                ax.plot(*zip(*points, strict=True), style, ms=4, label=stage)
        ax.set(xlabel="Epoch", ylabel="accuracy" if what == "acc" else "cross-entropy loss",
               title="Accuracy" if what == "acc" else "Loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Learning curves (per epoch)")
    return _png(fig)
