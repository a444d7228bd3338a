"""Each command ends with a summary a person can act on: the headline numbers (printed once), the
report's path and the MLflow run's page; a sweep ends with its best run, comparison and parent run,
and shows the model summary once."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from conftest import ROOT, data_overrides, store_overrides, write_synthetic_mnist
from faults_helpers import compose_job, quiet, run_train
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from mlflow import MlflowClient
from omegaconf import OmegaConf

from mnist_mlp import cli

pytestmark = pytest.mark.slow


def _summary(stdout: str) -> dict[str, str]:
    """The ``Label: text`` lines at the end of a command's output."""
    found = {}
    for line in reversed(stdout.strip().splitlines()):
        label, sep, text = line.partition(": ")
        if not sep or not re.fullmatch(r"[A-Z][A-Za-z ]+", label):
            break
        found.setdefault(label, text)  # the last line of a label: the command's own summary
    return found


def _compose(name: str, *overrides: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tracked in-process ``train.py`` run on the synthetic MNIST, and what it printed."""
    tmp = tmp_path_factory.mktemp("summaries")
    md5s = write_synthetic_mnist(tmp / "data")
    data = data_overrides(tmp / "data", md5s)
    cfg = compose_job(*data, *store_overrides(tmp), *quiet(), "trainer.max_epochs=1",
                      "logger.system_metrics=false", f"hydra.runtime.output_dir={tmp / 'out'}",
                      out=tmp / "out")
    out, err = io.StringIO(), io.StringIO()  # capsys is per test: this run is the module's
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        cli.train(cfg)
    client = MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mnist-mlp")
    (run,) = client.search_runs([exp.experiment_id])
    return {"tmp": tmp, "data": data, "stdout": out.getvalue(), "stderr": err.getvalue(),
            "client": client, "exp": exp.experiment_id, "run": run}


def _address(tmp: Path, exp: str, run_id: str) -> str:
    return (f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run_id}?workflowType=machine_learning"
            f" (serve it with `mlflow ui --backend-store-uri sqlite:///{tmp}/mlruns/mlflow.db "
            "--port 5000`)")


def test_train_ends_with_the_numbers_the_report_and_the_run_page(trained):
    summary, run = _summary(trained["stdout"]), trained["run"]
    acc = run.data.metrics["test/acc"]
    assert summary["Test set"].startswith(f"accuracy {acc:.4f} [")
    assert f"macro F1 {run.data.metrics['test/f1_macro']:.4f}" in summary["Test set"]
    assert summary["Report"] == str(trained["tmp"] / "out" / "report" / "report.html")
    assert Path(summary["Report"]).is_file()
    assert summary["MLflow run"] == _address(trained["tmp"], trained["exp"], run.info.run_id)
    everything = trained["stdout"] + trained["stderr"]
    assert everything.count("Test set") == 1 and everything.lower().count("accuracy") == 1  # once


def test_evaluate_ends_with_the_same_numbers_and_says_where_it_went(trained, capsys):
    tmp, run = trained["tmp"], trained["run"]
    ckpt = next((tmp / "out" / "checkpoints").glob("epoch*.ckpt"))
    cli.evaluate(_compose("evaluate", f"ckpt_path={ckpt}", *trained["data"], *store_overrides(tmp),
                          "trainer.enable_progress_bar=false", f"hydra.runtime.output_dir={tmp}/ev1"))
    local = _summary(capsys.readouterr().out)
    assert local["Test set"] == _summary(trained["stdout"])["Test set"]
    assert local["Report"] == f"{tmp}/ev1/report/report.html"
    assert local["MLflow"].startswith("not recorded")

    cli.evaluate(_compose("evaluate", f"run_id={run.info.run_id}", *trained["data"],
                          *store_overrides(tmp), "trainer.enable_progress_bar=false",
                          f"hydra.runtime.output_dir={tmp}/ev2"))
    tracked = _summary(capsys.readouterr().out)
    (evaluation,) = trained["client"].search_runs(
        [trained["exp"]], f"tags.`mnist_mlp.evaluates` = '{run.info.run_id}'")
    assert tracked["MLflow run"] == (_address(tmp, trained["exp"], evaluation.info.run_id)
                                     + f" (nested under the evaluated run {run.info.run_id})")


def test_compare_ends_with_the_best_run_the_comparison_and_its_run(trained, capsys):
    tmp, run = trained["tmp"], trained["run"]
    cli.compare(_compose("compare", f"runs=[{run.info.run_id}]", *store_overrides(tmp),
                         f"hydra.runtime.output_dir={tmp}/cmp"))
    summary = _summary(capsys.readouterr().out)
    assert summary["Run"].startswith(f"{run.info.run_name}: accuracy "
                                     f"{run.data.metrics['test/acc']:.4f} [")
    assert summary["Comparison"] == f"{tmp}/cmp/comparison/comparison.html"
    (target,) = trained["client"].search_runs([trained["exp"]], "tags.`mnist_mlp.role` = 'compare'")
    assert summary["MLflow run"] == (_address(tmp, trained["exp"], target.info.run_id)
                                     + " (artifacts comparison/)")


def test_a_sweep_shows_the_model_once_and_ends_with_its_best_run(synthetic_mnist, tmp_path):
    data_dir, md5s = synthetic_mnist
    result = run_train("-m", "seed=1,2", "trainer.max_epochs=1", "~callbacks.progress_bar",
                       "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
                       "logger.system_metrics=false", *data_overrides(data_dir, md5s),
                       *store_overrides(tmp_path), cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    everything = result.stdout + result.stderr
    assert everything.count("Total params") == 1  # the model summary of the first job only
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mnist-mlp").experiment_id
    (parent,) = client.search_runs([exp], "tags.`mnist_mlp.role` = 'sweep'")
    jobs = client.search_runs([exp], "tags.`mnist_mlp.role` = 'train'",
                              order_by=["metrics.`test/acc` DESC"])
    summary = _summary(result.stdout)
    assert summary["Sweep"] == f"{parent.info.run_name} in {tmp_path / 'multirun'}"
    best = jobs[0].data.metrics["test/acc"]
    name, _, numbers = summary["Best run"].partition(", best of 2 by test accuracy: ")
    assert name in {j.info.run_name for j in jobs if j.data.metrics["test/acc"] == best}  # ties
    assert numbers.startswith(f"accuracy {best:.4f} [")
    assert summary["Comparison"] == str(tmp_path / "multirun" / "comparison" / "comparison.html")
    assert summary["MLflow run"] == _address(tmp_path, exp, parent.info.run_id) + " (artifacts comparison/)"
    assert result.stdout.count("Report: ") == 2  # and each job said where its report is
