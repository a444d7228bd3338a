"""The report's added numbers against independent computations on the written predictions.csv."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.stats import binomtest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score, top_k_accuracy_score
from sklearn.preprocessing import label_binarize
from torchmetrics.classification import MulticlassCalibrationError

from mnist_mlp import report
from mnist_mlp.errors import UserError
from mnist_mlp.metrics import TestMetrics, bootstrap_macro_f1
from mnist_mlp.report.history import EpochHistory
from tests.helpers.configs import ROOT
from tests.helpers.predictions import LABELS, C, measure


def _hard_case(seed: int = 3, n: int = 600):
    """Labels and predictions about 75% right, with a 4<->9 confusion on top."""
    r = np.random.default_rng(seed)
    label = r.integers(0, C, n)
    pred = np.where(r.random(n) < 0.75, label, r.integers(0, C, n))
    fours = np.flatnonzero(label == 4)[:15]
    pred[fours] = 9
    return label, pred


def _logits(pred: np.ndarray, seed: int = 0, coarse: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(len(pred), C, generator=g) * 4
    if coarse:  # few distinct values: many tied probabilities
        noise = (noise > 2).float()
    return F.one_hot(torch.as_tensor(pred), C).float() * 2.5 + noise


def _report(tmp_path, label, pred, logits=None, settings=None, **kw):
    logits = _logits(pred) if logits is None else logits
    metrics = TestMetrics(C)
    y = torch.as_tensor(label)
    for start in range(0, len(y), 64):
        sl = slice(start, start + 64)
        metrics.update(logits[sl], y[sl], torch.arange(len(y))[sl])
    r = metrics.compute()
    report.write_report(replace(settings or report.Settings(), dir=str(tmp_path)), r, "net", {}, **kw)
    table = np.loadtxt(tmp_path / "predictions.csv", delimiter=",", skiprows=1)
    summary = json.loads((tmp_path / "summary.json").read_text())
    return r, table[:, 1].astype(int), table[:, 2].astype(int), table[:, 3:], summary


@pytest.mark.usefixtures("undrawn_figures")
@pytest.mark.parametrize("coarse", [False, True])
def test_auroc_and_ap_equal_scikit_learn_on_predictions_csv(tmp_path, coarse):
    label, pred = _hard_case()
    r, y, _, probs, summary = _report(tmp_path, label, pred, _logits(pred, coarse=coarse))
    if coarse:
        assert len(np.unique(probs[:, 0])) < len(probs) / 5  # ties, where curves are tricky
    s = r.scalars()
    auroc = roc_auc_score(y, probs, multi_class="ovr", average=None, labels=LABELS)
    onehot = label_binarize(y, classes=LABELS)
    ap = average_precision_score(onehot, probs, average=None)
    for k in LABELS:
        assert s[f"test/auroc_per_class/{k}"] == pytest.approx(auroc[k], abs=1e-6)
        assert s[f"test/ap_per_class/{k}"] == pytest.approx(ap[k], abs=1e-6)
    assert s["test/auroc_macro"] == pytest.approx(
        roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=LABELS), abs=1e-6)
    assert s["test/ap_macro"] == pytest.approx(average_precision_score(onehot, probs), abs=1e-6)
    assert summary["auroc"] == r.ranking.auroc and summary["ap_macro"] == r.ranking.ap_macro


def test_ranking_metrics_share_one_compute_group():
    metrics = TestMetrics(C)
    metrics.update(_logits(np.arange(20) % C), torch.arange(20) % C, torch.arange(20))
    groups = [sorted(g) for g in metrics.ranking.compute_groups.values()]
    assert groups == [["ap", "ap_macro", "auroc", "auroc_macro", "pr", "roc"]]


def test_a_class_without_test_images_has_no_auroc_and_is_left_out_of_the_macro():
    label = np.random.default_rng(0).integers(0, C - 1, 300)  # no class 9
    r, _ = measure(label, label)
    assert np.isnan(r.ranking.auroc[9]) and np.isnan(r.ranking.ap[9])
    assert r.ranking.auroc_macro == pytest.approx(np.mean(r.ranking.auroc[:9]))


def _ece_by_hand(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    conf, hit = probs.max(axis=1), probs.argmax(axis=1) == y
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf > lo) & (conf <= hi) if b else (conf >= 0) & (conf <= hi)
        if inside.any():
            total += inside.sum() / len(y) * abs(hit[inside].mean() - conf[inside].mean())
    return total


@pytest.mark.usefixtures("undrawn_figures")
def test_calibration_and_top_k_equal_independent_computations(tmp_path):
    label, pred = _hard_case(seed=5)
    r, y, _, probs, summary = _report(tmp_path, label, pred)
    s = r.scalars()
    assert s["test/ece"] == pytest.approx(_ece_by_hand(probs, y), abs=1e-9)
    tm = MulticlassCalibrationError(C, n_bins=15, norm="l1")(torch.tensor(probs), torch.tensor(y))
    assert s["test/ece"] == pytest.approx(float(tm), abs=1e-6)
    assert summary["ece"] == s["test/ece"] and sum(summary["reliability"]["count"]) == len(y)
    for k in (2, 3):
        assert s[f"test/acc_top{k}"] == pytest.approx(
            top_k_accuracy_score(y, probs, k=k, labels=LABELS), abs=1e-12)


@pytest.mark.usefixtures("undrawn_figures")
def test_wilson_intervals_equal_scipy(tmp_path):
    label, pred = _hard_case(seed=7)
    r, y, p, _, summary = _report(tmp_path, label, pred)
    ci = binomtest(int((y == p).sum()), len(y)).proportion_ci(0.95, method="wilson")
    s = r.scalars()
    assert (s["test/acc_ci_low"], s["test/acc_ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert summary["accuracy_ci"] == [s["test/acc_ci_low"], s["test/acc_ci_high"]]
    for k in LABELS:
        mine = y == k
        ci = binomtest(int((p[mine] == k).sum()), int(mine.sum())).proportion_ci(0.95, "wilson")
        assert summary["recall_ci"]["low"][k] == pytest.approx(ci.low, abs=1e-9)
        assert summary["recall_ci"]["high"][k] == pytest.approx(ci.high, abs=1e-9)
    md = (tmp_path / "report.md").read_text()
    assert f"[{ci.low:.4f}, {ci.high:.4f}]" in md  # shown beside class 9's recall


@pytest.mark.usefixtures("undrawn_figures")
def test_bootstrap_interval_of_macro_f1_equals_scikit_learn_on_the_same_resamples(tmp_path):
    label, pred = _hard_case(seed=11, n=300)
    settings = report.Settings(bootstrap_resamples=250, bootstrap_seed=123)
    _, y, p, _, summary = _report(tmp_path, label, pred, settings=settings)
    # The documented draws: rng = default_rng(seed), 100 resamples of the n images per call.
    rng, scores = np.random.default_rng(123), []
    for size in (100, 100, 50):
        for rows in rng.integers(0, len(y), size=(size, len(y))):
            scores.append(f1_score(y[rows], p[rows], labels=LABELS, average="macro", zero_division=0))
    assert summary["f1_macro_ci"] == pytest.approx(list(np.percentile(scores, [2.5, 97.5])), abs=1e-12)
    lo, hi = summary["f1_macro_ci"]
    assert lo < summary["f1_macro"] < hi
    other = bootstrap_macro_f1(y, p, C, 250, seed=124)
    assert other != (lo, hi) and bootstrap_macro_f1(y, p, C, 250, seed=123) == (lo, hi)


def test_mistake_grids_show_the_most_confident_errors_and_the_most_confused_pair(tmp_path):
    label, pred = _hard_case(seed=13)
    images = np.random.default_rng(0).random((len(label), 28, 28))
    r, y, p, probs, summary = _report(tmp_path, label, pred, images=images)
    wrong = [i for i in range(len(y)) if y[i] != p[i]]
    by_confidence = sorted(wrong, key=lambda i: -probs[i, p[i]])
    assert summary["confident_mistakes_index"] == by_confidence[:25]
    assert summary["most_confused_pair"] == [4, 9]
    pair = [i for i in by_confidence if {y[i], p[i]} == {4, 9}]
    assert summary["pair_mistakes_index"] == pair[:25]
    for name in ("mistakes_confident.png", "mistakes_pair.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "report.html").read_text()
    assert "<h2>The mistakes</h2>" in page and page.count('src="data:image/png') == 6
    text = " ".join(report.conclusions(r))
    n_conf = sum(probs[i, p[i]] >= 0.9 for i in wrong)
    assert f"Of the {len(wrong)} mistakes, {n_conf} were made with probability ≥ 0.9" in text


@pytest.mark.usefixtures("undrawn_figures")
def test_learning_curves_come_from_the_epoch_history(tmp_path):
    history = [{"epoch": 1, "loss/train": 1.5, "acc/train": 0.6, "loss/val": 1.0, "acc/val": 0.7},
               {"epoch": 2, "loss/train": 0.9, "acc/train": 0.8, "loss/val": 0.8, "acc/val": 0.75}]
    label, pred = _hard_case()
    _report(tmp_path, label, pred, history=history)
    rows = np.loadtxt(tmp_path / "learning_curves.csv", delimiter=",", skiprows=1)
    header = (tmp_path / "learning_curves.csv").read_text().splitlines()[0].split(",")
    assert [dict(zip(header, row, strict=True)) for row in rows] == history
    assert "<h2>Learning curves</h2>" in (tmp_path / "report.html").read_text()
    # A test restoring an earlier checkpoint's callback state keeps the epochs recorded since.
    cb = EpochHistory()
    cb.epochs = [dict(h) for h in history]
    cb.load_state_dict({"epochs": history[:1]})
    assert cb.epochs == history


@pytest.mark.parametrize("key,value", [("bootstrap_resamples", 0), ("mistakes", "many"),
                                       ("bootstrap_seed", -1), ("mistakes", True)])
def test_bad_report_settings_are_refused_naming_the_key(key, value):
    with pytest.raises(UserError, match=rf"report\.{key}=.* must be a whole number"):
        report.Settings(**{key: value})
    # conf/report/default.yaml builds the documented defaults, where the report goes aside
    group = OmegaConf.load(ROOT / "conf" / "report" / "default.yaml")
    group.dir = "somewhere"
    assert instantiate(group) == report.Settings(dir="somewhere")
