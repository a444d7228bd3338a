"""What the report's figures are drawn from: the confusion colours follow the errors, the ROC and
PR axes hold every class's curve where good models differ, the mistake captions name the image."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mnist_mlp.report import figures
from tests.helpers.predictions import from_confusion, mnist_like_confusion, results_of

OFF = ~np.eye(10, dtype=bool)


@pytest.fixture(scope="module")
def mnist_like():
    """Confusion matrix and results: ~1000 right per class, the largest error 4→9 (23 images)."""
    cm = mnist_like_confusion()
    cm[4, 9] = 23
    return cm, from_confusion(cm)


def test_the_confusion_colours_follow_the_errors_not_the_diagonal(mnist_like):
    cm, r = mnist_like
    fig = figures.confusion_figure(r)
    panels = [ax for ax in fig.axes if ax.images]
    per_mille = 1000 * cm / cm.sum(axis=1, keepdims=True)
    assert len(panels) == 2
    for ax, numbers in zip(panels, (cm, per_mille), strict=True):
        image = ax.images[0]
        values = np.ma.asarray(image.get_array())
        colour = np.ma.asarray(image.norm(values))  # 0..1 along the colour map
        assert colour[4, 9] == pytest.approx(1.0)  # the largest error gets the top colour
        assert np.ma.getmaskarray(values)[~OFF].all()  # the diagonal is not on the scale
        assert image.norm.vmax == pytest.approx(numbers[OFF].max())
        np.testing.assert_allclose(colour[OFF], numbers[OFF] / numbers[OFF].max())


def test_the_row_normalised_panel_writes_every_error_readably(mnist_like):
    cm, r = mnist_like
    fig = figures.confusion_figure(r)
    ax = [ax for ax in fig.axes if ax.images][1]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    rows = cm.sum(axis=1)
    for i, j in zip(*np.nonzero(OFF & (cm > 0)), strict=True):
        assert float(texts[(i, j)]) == pytest.approx(1000 * cm[i, j] / rows[i], abs=0.05)
        assert float(texts[(i, j)]) > 0  # a single error does not read 0.00
    for k in range(10):
        assert texts[(k, k)] == f"{100 * cm[k, k] / rows[k]:.1f}%"  # the diagonal: recall


def test_roc_has_a_log_false_positive_axis_with_every_curve_in_view(mnist_like):
    r = mnist_like[1]
    ax = figures.roc_figure(r.ranking).axes[0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert ax.get_xscale() == "log" and x1 == 1
    one_false_positive = 1 / (r.total - max(r.support))
    assert x0 <= one_false_positive < 10 * x0  # the decade of a single false positive
    assert not ax.child_axes  # no inset: the main panel shows it
    lines = ax.get_lines()
    assert len(lines) == 10
    lowest = 1.0
    for line, (fpr, _) in zip(lines, r.ranking.roc, strict=True):
        x, y = line.get_xydata().T
        assert ((x >= x0) & (x <= x1)).all()  # FPR 0 drawn at the left edge
        seen = fpr > 0
        assert ((y[seen] >= y0) & (y[seen] <= y1)).all()
        lowest = min(lowest, y[seen].min())
    assert lowest - y0 < 0.1 and y1 == pytest.approx(1.005)  # no empty band below the curves


def test_roc_zooms_on_the_top_when_every_class_starts_high(mnist_like):
    ranking = mnist_like[1].ranking
    high = replace(ranking, roc=[(fpr, np.maximum(tpr, 0.83)) for fpr, tpr in ranking.roc])
    assert figures.roc_limits(high)[1] == (pytest.approx(0.8), pytest.approx(1.005))


def test_pr_zooms_on_the_corner_where_each_class_keeps_precision_and_recall_high(mnist_like):
    r = mnist_like[1]
    ax = figures.pr_figure(r.ranking).axes[0]
    lo, hi = ax.get_xlim()
    assert ax.get_ylim() == (lo, hi) and hi == pytest.approx(1.005) and lo >= 0.5
    assert not ax.child_axes
    for line, (precision, recall) in zip(ax.get_lines(), r.ranking.pr, strict=True):
        np.testing.assert_array_equal(line.get_xydata(), np.column_stack([recall, precision]))
        k = int(np.minimum(precision, recall).argmax())  # where precision and recall are both best
        assert lo + 0.05 <= min(precision[k], recall[k]) and max(precision[k], recall[k]) <= hi


def test_mistake_captions_give_the_test_index_of_each_image():
    label = np.arange(40) % 10
    pred = np.where(np.arange(40) % 3 == 0, (label + 1) % 10, label)
    r = results_of(label, pred)
    r.index[:] = 5000 + 7 * np.arange(40)  # the test split's own numbering, as predictions.csv has
    rows = np.flatnonzero(r.pred != r.label)[:6]
    fig = figures.mistakes_figure(np.zeros((5000 + 7 * 40, 28, 28)), rows, r, "t")
    captions = [t.get_text() for t in fig.axes[0].texts]
    assert captions == [f"true {r.label[k]} → pred {r.pred[k]}\np = {r.probs[k, r.pred[k]]:.3f}, "
                        f"#{r.index[k]}" for k in rows]
