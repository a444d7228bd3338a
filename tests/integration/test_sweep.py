"""``python train.py -m``: a sweep leaves the comparison of its runs in its parent run, each job
counts only its own startup; ``compare.py`` compares a sweep or loose runs, and refuses runs tested
on different data."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from mlflow import MlflowClient
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from mnist_mlp import cli
from mnist_mlp.speed import PHASE_MEMORY
from tests.helpers.configs import compose_job, quiet, store_overrides
from tests.helpers.data import data_overrides
from tests.helpers.processes import assert_one_paragraph, run_script, run_train
from tests.helpers.runs import run_address, summary_of

pytestmark = pytest.mark.slow
LABELS = list(range(10))


def _csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _predictions(path):
    return np.loadtxt(path, delimiter=",", skiprows=1)


def test_a_sweep_leaves_its_comparison_in_the_parent_run_and_compare_py_compares_loose_runs(
        synthetic_mnist, tmp_path, capsys):
    data_dir, md5s = synthetic_mnist
    # lr 0.002: two epochs leave the synthetic digits partly learnt, so the seeds disagree.
    # The model summary stays on (it is shown once, for the first job only).
    no_display = [o for o in quiet() if o != "trainer.enable_model_summary=false"]
    result = run_train("-m", "seed=1,2", "trainer.max_epochs=2", "model.lr=0.002",
                       "logger.system_metrics=false", *data_overrides(data_dir, md5s),
                       *store_overrides(tmp_path), *no_display, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mnist-mlp").experiment_id
    (parent,) = client.search_runs([exp], "tags.`mnist_mlp.role` = 'sweep'")
    assert parent.info.status == "FINISHED"
    jobs = client.search_runs([exp], "tags.`mnist_mlp.role` = 'train'")

    # It ends with its best run, comparison and parent run, and shows the model summary once.
    everything = result.stdout + result.stderr
    assert everything.count("Total params") == 1  # the model summary of the first job only
    summary = summary_of(result.stdout)
    assert summary["Sweep"] == f"{parent.info.run_name} in {tmp_path / 'multirun'}"
    best = max(j.data.metrics["test/acc"] for j in jobs)
    name, _, numbers = summary["Best run"].partition(", best of 2 by test accuracy: ")
    assert name in {j.info.run_name for j in jobs if j.data.metrics["test/acc"] == best}  # ties
    assert numbers.startswith(f"accuracy {best:.4f} [")
    assert summary["Comparison"] == str(tmp_path / "multirun" / "comparison" / "comparison.html")
    assert summary["MLflow run"] == (run_address(tmp_path, exp, parent.info.run_id)
                                     + " (artifacts comparison/)")
    assert result.stdout.count("Report: ") == 2  # and each job said where its report is
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
        history = client.get_metric_history(job.info.run_id, "acc/val")
        curves = _csv_rows(f"{folder}/learning_curves.csv")
        assert [float(r["acc/val"]) for r in curves] == pytest.approx(
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

    # Each job counts only its own startup: job 1 starts after job 0 in the same process, so its
    # startup is Hydra's job set-up only. MLflow's system-metrics monitor was switched off: only the
    # run's own phase memory (speed.PHASE_MEMORY) is under system/.
    assert not any(k.startswith("system/") and not k.startswith(f"{PHASE_MEMORY}/")
                   for r in jobs for k in r.data.metrics)
    assert all(f"{PHASE_MEMORY}/fit_peak_mb" in r.data.metrics for r in jobs)
    startup = {r.data.tags["sweep.job"]: r.data.metrics["time/startup_s"] for r in jobs}
    first_job = next(r for r in jobs if r.data.tags["sweep.job"] == "0")
    first_total = sum(v for k, v in first_job.data.metrics.items() if k.startswith("time/"))
    assert startup["1"] < 0.5 * startup["0"] and startup["1"] < first_total / 2, startup

    # compare.py without run ids (its code, in-process): the latest sweep, recorded into its parent.
    store = store_overrides(tmp_path)[:2]
    capsys.readouterr()
    cli.compare(compose_job(*store, out=tmp_path / "compare", config="compare"))
    printed = capsys.readouterr().out
    assert f"/runs/{parent.info.run_id}?" in printed
    assert f"Comparison: {tmp_path}/compare/comparison/comparison.html" in printed

    # compare.py with loose run ids: a new comparison run; then a run with other test data: refused.
    ids = [j.info.run_id for j in jobs]
    loose = f"runs=[{ids[0]},{ids[1]}]"
    cli.compare(compose_job(*store, loose, out=tmp_path / "compare-loose", config="compare"))
    (new,) = client.search_runs([exp], "tags.`mnist_mlp.role` = 'compare'")
    assert f"/runs/{new.info.run_id}?" in capsys.readouterr().out
    assert {a.path for a in client.list_artifacts(new.info.run_id, "comparison")} >= {
        "comparison/comparison.csv", "comparison/comparison.html"}
    client.set_tag(ids[1], "data.md5.test_images", "0" * 32)
    refused = run_script("compare.py", f"hydra.run.dir={tmp_path}/compare-refused", *store, loose)
    assert_one_paragraph(refused, "different data", "data.md5.test_images")


def test_a_job_that_fails_in_a_joblib_sweep_leaves_no_run_running(synthetic_mnist, tmp_path):
    """A job's user error (a NaN loss) ends a joblib sweep, and joblib kills the job beside it
    mid-training: the sweep's parent closes that job's run KILLED, saying why."""
    slow = ["+callbacks.slow._target_=tests.helpers.slow_epochs.SleepAtEpochEnd",
            "+callbacks.slow.seconds=20"]  # the other job is still training when the first fails
    result = run_train("-m", "hydra/launcher=joblib", "model.lr=0.1,1e30", "trainer.max_epochs=2",
                       "logger.system_metrics=false", *slow, *data_overrides(*synthetic_mnist),
                       *store_overrides(tmp_path), *quiet(), cwd=tmp_path, timeout=600)
    assert_one_paragraph(result, "the training loss became NaN or infinite")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mnist-mlp").experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([exp], "tags.`mnist_mlp.role` = 'train'")}
    assert runs["lr=1e+30"].info.status == "FAILED"
    stopped = runs["lr=0.1"]
    assert stopped.info.status == "KILLED"
    assert "Stopped with its sweep, before the job ended" in stopped.data.tags["mnist_mlp.failure"]
    (parent,) = client.search_runs([exp], "tags.`mnist_mlp.role` = 'sweep'")
    assert parent.info.status == "KILLED"  # its worst job's
