"""Each command ends with a summary a person can act on (mnist_mlp/cli.py): the headline numbers
(printed once), the report's path and the MLflow run's page, for train, evaluate and compare in
this process. The sweep's summary: tests/integration/test_sweep.py."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mnist_mlp import cli
from tests.helpers.configs import ROOT, compose_job, quiet, store_overrides
from tests.helpers.data import data_overrides, write_synthetic_mnist
from tests.helpers.runs import run_address, summary_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tracked in-process ``train.py`` run on the synthetic MNIST, and what it printed."""
    tmp = tmp_path_factory.mktemp("summaries")
    md5s = write_synthetic_mnist(tmp / "data")
    data = data_overrides(tmp / "data", md5s)
    cfg = compose_job(*data, *store_overrides(tmp), *quiet(), "trainer.max_epochs=1",
                      "logger.system_metrics=false", out=tmp / "out")
    out, err = io.StringIO(), io.StringIO()  # capsys is per test: this run is the module's
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        cli.train(cfg)
    client = MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mnist-mlp")
    (run,) = client.search_runs([exp.experiment_id])
    return {"tmp": tmp, "data": data, "stdout": out.getvalue(), "stderr": err.getvalue(),
            "client": client, "exp": exp.experiment_id, "run": run}


def test_train_ends_with_the_numbers_the_report_and_the_run_page(trained):
    summary, run = summary_of(trained["stdout"]), trained["run"]
    acc = run.data.metrics["test/acc"]
    assert summary["Test set"].startswith(f"accuracy {acc:.4f} [")
    assert f"macro F1 {run.data.metrics['test/f1_macro']:.4f}" in summary["Test set"]
    assert summary["Report"] == str(trained["tmp"] / "out" / "report" / "report.html")
    assert Path(summary["Report"]).is_file()
    assert summary["MLflow run"] == run_address(trained["tmp"], trained["exp"], run.info.run_id)
    everything = trained["stdout"] + trained["stderr"]
    assert everything.count("Test set") == 1 and everything.lower().count("accuracy") == 1  # once


def test_evaluate_ends_with_the_same_numbers_and_says_where_it_went(trained, capsys):
    tmp, run = trained["tmp"], trained["run"]
    ckpt = next((tmp / "out" / "checkpoints").glob("epoch*.ckpt"))
    cli.evaluate(compose_job(f"ckpt_path={ckpt}", *trained["data"], *store_overrides(tmp),
                             "trainer.enable_progress_bar=false", out=tmp / "ev1", config="evaluate"))
    local = summary_of(capsys.readouterr().out)
    assert local["Test set"] == summary_of(trained["stdout"])["Test set"]
    assert local["Report"] == f"{tmp}/ev1/report/report.html"
    assert local["MLflow"].startswith("not recorded")

    cli.evaluate(compose_job(f"run_id={run.info.run_id}", *trained["data"], *store_overrides(tmp),
                             "trainer.enable_progress_bar=false", out=tmp / "ev2", config="evaluate"))
    tracked = summary_of(capsys.readouterr().out)
    (evaluation,) = trained["client"].search_runs(
        [trained["exp"]], f"tags.`mnist_mlp.evaluates` = '{run.info.run_id}'")
    assert tracked["MLflow run"] == (run_address(tmp, trained["exp"], evaluation.info.run_id)
                                     + f" (nested under the evaluated run {run.info.run_id})")


def test_compare_ends_with_the_best_run_the_comparison_and_its_run(trained, capsys):
    tmp, run = trained["tmp"], trained["run"]
    cli.compare(compose_job(f"runs=[{run.info.run_id}]", *store_overrides(tmp), out=tmp / "cmp",
                            config="compare"))
    summary = summary_of(capsys.readouterr().out)
    assert summary["Run"].startswith(f"{run.info.run_name}: accuracy "
                                     f"{run.data.metrics['test/acc']:.4f} [")
    assert summary["Comparison"] == f"{tmp}/cmp/comparison/comparison.html"
    (target,) = trained["client"].search_runs([trained["exp"]], "tags.`mnist_mlp.role` = 'compare'")
    assert summary["MLflow run"] == (run_address(tmp, trained["exp"], target.info.run_id)
                                     + " (artifacts comparison/)")


@pytest.mark.parametrize("arg", ["logger=null", "+logger=NULL", "model/optimizer=null",
                                 "hydra/launcher=null"])
def test_a_config_group_set_to_null_is_refused_naming_hydras_way(arg, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.refuse_null_groups(["trainer.max_epochs=1", arg], ROOT / "conf")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    group = arg.lstrip("+").split("=")[0]
    assert err.startswith(f"error: {arg}: ") and err.count("\n") == 1, err
    assert f"'~{group}'" in err and "Nothing was run or recorded" in err, err


def test_values_set_to_null_and_removed_groups_pass(capsys):
    cli.refuse_null_groups(["model.scheduler=null", "hydra.run.dir=null", "~logger", "~logger=mlflow",
                            "logger=mlflow", "-m", "ckpt_path=null"], ROOT / "conf")
    assert capsys.readouterr().err == ""
