"""The report's pictures, each drawn on a bare matplotlib ``Figure`` (Agg, no pyplot: nothing global
is left open) and returned as PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
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
    """Counts and row-normalised confusion matrices as one PNG.

    Drawn on a bare ``Figure`` (Agg, no pyplot): nothing global is left open. torchmetrics'
    ``plot`` draws one panel through pyplot, without the row-normalised view.
    """
    cm = np.asarray(r.confusion, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows != 0)
    c = r.num_classes
    fig = _figure((14, 6.2))
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
    return _png(fig)


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(n)]


def roc_png(ranking: Ranking) -> bytes:
    """One-vs-rest ROC curve of every class on one plot, AUROC in the legend."""
    fig = _figure((7.5, 6.5))
    ax = fig.subplots()
    for k, ((fpr, tpr), color) in enumerate(zip(ranking.roc, _colors(len(ranking.roc)), strict=True)):
        ax.plot(fpr, tpr, color=color, lw=1.3, label=f"{k}: AUROC {ranking.auroc[k]:.4f}")
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1, label="chance")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", xlim=(-0.01, 1), ylim=(0, 1.01),
           title=f"ROC, one class against the rest (macro AUROC {ranking.auroc_macro:.4f})")
    ax.legend(loc="lower right", fontsize=8)
    _inset(ax, ranking.roc, (0, 0.1), (0.9, 1.0), "zoom: upper left", [0.22, 0.12, 0.4, 0.45])
    return _png(fig)


def pr_png(ranking: Ranking) -> bytes:
    """Precision-recall curve of every class, average precision in the legend."""
    fig = _figure((7.5, 6.5))
    ax = fig.subplots()
    for k, ((precision, recall), color) in enumerate(zip(ranking.pr, _colors(len(ranking.pr)),
                                                         strict=True)):
        ax.plot(recall, precision, color=color, lw=1.3, label=f"{k}: AP {ranking.ap[k]:.4f}")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1.01), ylim=(0, 1.01),
           title=f"Precision-recall, one class against the rest (macro AP {ranking.ap_macro:.4f})")
    ax.legend(loc="lower left", fontsize=8)
    _inset(ax, [(r, p) for p, r in ranking.pr], (0.9, 1.0), (0.9, 1.0), "zoom: upper right",
           [0.5, 0.12, 0.4, 0.45])
    return _png(fig)


def _inset(ax: Any, curves: Sequence[tuple[np.ndarray, np.ndarray]], xlim: tuple[float, float],
           ylim: tuple[float, float], title: str, where: list[float]) -> None:
    """A zoom on the corner where good classifiers' curves crowd together."""
    inset = ax.inset_axes(where)
    for (cx, cy), color in zip(curves, _colors(len(curves)), strict=True):
        inset.plot(cx, cy, color=color, lw=1)
    inset.set(xlim=xlim, ylim=ylim, title=title)
    inset.tick_params(labelsize=7)
    inset.title.set_fontsize(8)


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
    """Test images in a grid, each captioned true class, predicted class and its probability.

    ``images`` is the whole test split (N x 28 x 28, values in [0, 1]), indexed by ``r.index[row]``.
    One mosaic in one axes: a subplot per image costs ~10x the drawing time.
    """
    cell, gap, caption = 28, 4, 14  # pixels: image, margin, caption strip below it
    lines = max(-(-len(rows) // columns), 1)
    width, height = cell + 2 * gap, cell + caption + gap
    mosaic = np.zeros((lines * height, columns * width))
    fig = _figure((1.75 * columns, 1.85 * lines + 0.5))
    ax = fig.subplots()
    for slot, row in enumerate(rows):
        top, left = (slot // columns) * height, (slot % columns) * width + gap
        mosaic[top:top + cell, left:left + cell] = np.asarray(images[int(r.index[row])]).reshape(cell, cell)
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    for slot, row in enumerate(rows):
        top, left = (slot // columns) * height, (slot % columns) * width + gap
        pred = int(r.pred[row])
        ax.text(left + cell / 2, top + cell + 1, f"true {int(r.label[row])} → pred {pred}\n"
                f"p = {r.probs[row, pred]:.3f}", ha="center", va="top", fontsize=8.5)
    if not len(rows):
        ax.text(width * columns / 2, height / 2, "no mistakes", ha="center", va="center")
    ax.axis("off")
    ax.set_title(title)
    return _png(fig)


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
