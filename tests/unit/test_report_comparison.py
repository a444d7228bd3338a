"""Comparing runs: McNemar, Holm, seed spread and refusals against independent computations, and
the comparison a sweep leaves in its parent run."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from conftest import ROOT, data_overrides, store_overrides
from faults_helpers import assert_one_paragraph, quiet, run_train
from scipy.stats import binomtest
from sklearn.metrics import f1_score, roc_auc_score

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


# ---------------------------------------------------------------- end to end ----------------------


def _csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _predictions(path):
    return np.loadtxt(path, delimiter=",", skiprows=1)


@pytest.mark.slow
def test_a_sweep_leaves_its_comparison_in_the_parent_run_and_compare_py_compares_loose_runs(
        synthetic_mnist, tmp_path):
    from mlflow import MlflowClient

    data_dir, md5s = synthetic_mnist
    # lr 0.002: two epochs leave the synthetic digits partly learnt, so the seeds disagree.
    result = run_train("-m", "seed=1,2", "trainer.max_epochs=2", "model.lr=0.002",
                       *data_overrides(data_dir, md5s), *store_overrides(tmp_path), *quiet())
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mnist-mlp").experiment_id
    (parent,) = client.search_runs([exp], "tags.`mnist_mlp.role` = 'sweep'")
    assert parent.info.status == "FINISHED"
    jobs = client.search_runs([exp], "tags.`mnist_mlp.role` = 'train'")
    got = {}
    for job in jobs:
        folder = client.download_artifacts(job.info.run_id, "report", str(tmp_path / job.info.run_id))
        names = set(os.listdir(folder))
        assert {"roc_curves.png", "pr_curves.png", "reliability.png", "learning_curves.png",
                "mistakes_confident.png", "mistakes_pair.png", "summary.json"} <= names
        table = _predictions(f"{folder}/predictions.csv")
        got[job.info.run_id] = table
        y, probs = table[:, 1].astype(int), table[:, 3:]
        assert job.data.metrics["test/auroc_macro"] == pytest.approx(
            roc_auc_score(y, probs, multi_class="ovr", labels=LABELS), abs=1e-6)
        history = client.get_metric_history(job.info.run_id, "val/acc")
        curves = _csv_rows(f"{folder}/learning_curves.csv")
        assert [float(r["val/acc"]) for r in curves] == pytest.approx(
            [m.value for m in sorted(history, key=lambda m: m.step)])
    comparison = client.download_artifacts(parent.info.run_id, "comparison", str(tmp_path / "cmp"))
    assert {"comparison.csv", "comparison.md", "comparison.html", "f1_heatmap.png"} <= set(
        os.listdir(comparison))
    best, other = _csv_rows(f"{comparison}/comparison.csv")
    a, b = got[best["run_id"]], got[other["run_id"]]
    ra, rb = a[:, 1] == a[:, 2], b[:, 1] == b[:, 2]
    discordant = int((ra != rb).sum())
    assert discordant > 0
    p = binomtest(int((ra & ~rb).sum()), discordant, 0.5).pvalue
    assert float(other["mcnemar_p"]) == pytest.approx(p, rel=1e-12)
    assert best["config_runs"] == "2"  # seed-only differences: one configuration
    # Logged by the callback before the parent run closed (Hydra ends callbacks in reverse order).
    logged = Path(urlparse(parent.info.artifact_uri).path) / "comparison"
    assert (logged / "comparison.csv").stat().st_mtime * 1000 <= parent.info.end_time

    # compare.py without run ids: the latest sweep, recorded into its parent again.
    env = {**os.environ, "MPLBACKEND": "Agg"}
    base = [sys.executable, str(ROOT / "compare.py"), f"hydra.run.dir={tmp_path}/compare",
            *store_overrides(tmp_path)[:2]]
    done = subprocess.run(base, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and f"logged to MLflow run {parent.info.run_id}" in done.stdout, done.stderr

    # compare.py with loose run ids: a new comparison run; then a run with other test data: refused.
    ids = [j.info.run_id for j in jobs]
    cmd = [*base, f"runs=[{ids[0]},{ids[1]}]"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (new,) = client.search_runs([exp], "tags.`mnist_mlp.role` = 'compare'")
    assert {a.path for a in client.list_artifacts(new.info.run_id, "comparison")} >= {
        "comparison/comparison.csv", "comparison/comparison.html"}
    client.set_tag(ids[1], "data.md5.test_images", "0" * 32)
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert_one_paragraph(refused, "different data", "data.md5.test_images")
