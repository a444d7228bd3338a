"""Test-set metrics equal scikit-learn's on random and adversarial predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import classification_report, confusion_matrix

from mnist_mlp.errors import UserError
from mnist_mlp.metrics import TestMetrics
from tests.helpers.predictions import CASES, LABELS, C, logits_for, measure, rng


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_number_equals_scikit_learn(case):
    label, pred = CASES[case](rng(sorted(CASES).index(case)))
    r, logits = measure(label, pred)
    ref = classification_report(label, pred, labels=LABELS, output_dict=True, zero_division=0)
    for k in LABELS:
        assert r.support[k] == ref[str(k)]["support"]
        for ours, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert r.per_class[ours][k] == pytest.approx(ref[str(k)][theirs], abs=1e-6)
        assert r.per_class["acc"][k] == pytest.approx(ref[str(k)]["recall"], abs=1e-6)
    for avg in ("macro", "weighted"):
        for ours, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert r.averages[avg][ours] == pytest.approx(ref[f"{avg} avg"][theirs], abs=1e-6)
    assert r.accuracy == pytest.approx(ref["accuracy"], abs=1e-6)
    assert all(v == pytest.approx(ref["accuracy"], abs=1e-6) for v in r.averages["micro"].values())
    assert r.confusion == confusion_matrix(label, pred, labels=LABELS).tolist()
    expected_loss = F.cross_entropy(logits.double(), torch.as_tensor(label)).item()
    assert r.loss == pytest.approx(expected_loss, abs=1e-6)
    np.testing.assert_array_equal(r.index, np.arange(len(label)))
    np.testing.assert_array_equal(r.label, label)
    np.testing.assert_array_equal(r.pred, pred)
    np.testing.assert_allclose(r.probs, logits.softmax(-1).numpy(), atol=1e-7)


def test_zero_division_gives_zero_like_scikit_learn():
    # class 9: absent from targets and predictions; class 8: predicted, never true.
    label, pred = np.array([0, 1, 2, 2]), np.array([0, 1, 8, 2])
    r, _ = measure(label, pred)
    assert r.per_class["precision"][9] == r.per_class["recall"][9] == r.per_class["f1"][9] == 0
    assert r.per_class["recall"][8] == 0 and r.per_class["f1"][8] == 0
    # scikit-learn counts the absent classes as 0 in the macro mean (torchmetrics would drop 9)
    assert r.averages["macro"]["precision"] == pytest.approx(3 / C)


@pytest.mark.parametrize("bad", [-1, 10])
def test_labels_outside_the_classes_are_refused(bad):
    metrics = TestMetrics(C)
    y = torch.tensor([0, 1, bad, 3])
    metrics.update(logits_for(np.array([0, 1, 2, 3])), y, torch.arange(4))
    with pytest.raises(UserError, match=rf"outside 0\.\.9 \(values \[{bad}\]\)"):
        metrics.compute()


def test_a_sample_counted_twice_is_an_error_not_a_wrong_number():
    metrics = TestMetrics(C)
    logits = logits_for(np.array([0, 1]))
    metrics.update(logits, torch.tensor([0, 1]), torch.tensor([0, 1]))
    metrics.update(logits[:1], torch.tensor([0]), torch.tensor([0]))  # a padded duplicate
    with pytest.raises(RuntimeError, match="more than once"):
        metrics.compute()


def test_logged_names_follow_the_documented_scheme():
    label, pred = CASES["random"](rng(1))
    r, _ = measure(label, pred)
    s = r.scalars()
    assert s["test/acc"] == r.accuracy and s["test/loss"] == r.loss
    assert s["test/f1_macro"] == r.averages["macro"]["f1"]
    assert s["test/precision_weighted"] == r.averages["weighted"]["precision"]
    assert s["test/recall_micro"] == r.averages["micro"]["recall"]
    assert s["test/f1_per_class/4"] == r.per_class["f1"][4]
    assert s["test/acc_per_class/7"] == r.per_class["recall"][7]
    assert s["test/support_per_class/0"] == r.support[0]
    assert len(s) == 2 + 3 * 3 + 5 * C + 2 + 2 * C + 5
