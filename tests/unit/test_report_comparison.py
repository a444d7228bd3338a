"""Comparing runs: McNemar, Holm, seed spread and refusals against independent computations
(mnist_mlp/report/comparison.py; the comparison a sweep leaves: tests/integration/test_sweep.py)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from mnist_mlp.errors import UserError
from mnist_mlp.report.comparison import RunPredictions, compare, holm, mcnemar_exact
from mnist_mlp.report.comparison_files import comparison_csv, write_comparison

LABELS = list(range(10))


def _run(rid, seed, right, params=None, md5=None, n=400, label_seed=0):
    label = np.random.default_rng(label_seed).integers(0, 10, n)
    rng = np.random.default_rng(seed)
    pred = np.where(rng.random(n) < right, label, rng.integers(0, 10, n))
    return RunPredictions(rid, f"run{rid}", np.arange(n), label, pred,
                          {"seed": str(seed), "model.lr": "0.1", **(params or {})},
                          md5 or {"test_images": "aa", "test_labels": "bb"})


def _holm_by_hand(p):
    m, order, out, running = len(p), sorted(range(len(p)), key=lambda i: p[i]), [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def test_mcnemar_is_scipys_binomial_test_on_the_discordant_pairs():
    a, b = _run("a", 1, 0.8), _run("b", 2, 0.7)
    only_a = sum(x and not y for x, y in zip(a.correct, b.correct, strict=True))
    only_b = sum(y and not x for x, y in zip(a.correct, b.correct, strict=True))
    assert mcnemar_exact(a.correct, b.correct) == (
        only_a, only_b, pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue, rel=1e-12))
    assert mcnemar_exact(a.correct, a.correct) == (0, 0, 1.0)


@pytest.mark.parametrize("p", [[0.01, 0.04, 0.03, 0.5], [0.2], [0.03, 0.03, 0.9], []])
def test_holm_equals_the_step_down_procedure(p):
    assert holm(p) == pytest.approx(_holm_by_hand(p))


def test_runs_are_ranked_seed_spread_collapsed_and_tested_against_the_best(tmp_path):
    runs = [_run("a", 1, 0.7), _run("b", 2, 0.8), _run("c", 3, 0.75),
            _run("d", 4, 0.9, {"model.lr": "0.01"}), _run("e", 5, 0.85, {"model.lr": "0.01"})]
    cmp = compare(runs)
    acc = {r.run_id: float(r.correct.mean()) for r in runs}
    assert [r.run.run_id for r in cmp.rows] == sorted(acc, key=lambda k: -acc[k])
    assert cmp.keys == ["model.lr", "seed"]
    groups = {g.config: g for g in cmp.configs}
    assert set(groups) == {"model.lr=0.1", "model.lr=0.01"}
    three = [acc[k] for k in "abc"]
    assert groups["model.lr=0.1"].mean == pytest.approx(np.mean(three))
    assert groups["model.lr=0.1"].std == pytest.approx(np.std(three, ddof=1))
    best = cmp.best.run
    raw = [binomtest(int((best.correct & ~r.run.correct).sum()),
                     int((best.correct != r.run.correct).sum())).pvalue for r in cmp.rows[1:]]
    rows = list(csv.DictReader(io.StringIO(comparison_csv(cmp))))
    assert rows[0]["mcnemar_p"] == "" and rows[0]["run_id"] == best.run_id
    assert [float(r["mcnemar_p"]) for r in rows[1:]] == pytest.approx(raw, rel=1e-12)
    assert [float(r["mcnemar_p_holm"]) for r in rows[1:]] == pytest.approx(_holm_by_hand(raw))
    for row, run in zip(rows, (r.run for r in cmp.rows), strict=True):
        ref = f1_score(run.label, run.pred, labels=LABELS, average=None, zero_division=0)
        assert [float(row[f"f1_class_{k}"]) for k in LABELS] == pytest.approx(ref)
        ci = binomtest(int(run.correct.sum()), len(run.label)).proportion_ci(method="wilson")
        assert (float(row["acc_ci_low"]), float(row["acc_ci_high"])) == pytest.approx((ci.low, ci.high))
    files = write_comparison(tmp_path, cmp)
    page = files["comparison.html"].read_text()
    assert "Seed spread of model.lr=0.1 over 3 seeds" in page and 'src="data:image/png' in page


def test_runs_tested_on_different_data_are_refused():
    with pytest.raises(UserError, match=r"different data \(tags data.md5.test_images differ\)"):
        compare([_run("a", 1, 0.8), _run("b", 2, 0.8, md5={"test_images": "zz", "test_labels": "bb"})])
    with pytest.raises(UserError, match=r"400 test images\) and b \(runb, 300 test images\)"):
        compare([_run("a", 1, 0.8), _run("b", 2, 0.8, n=300)])
    with pytest.raises(UserError, match="sizes or labels differ"):
        compare([_run("a", 1, 0.8), _run("b", 2, 0.8, label_seed=1)])
