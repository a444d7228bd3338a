"""The report says what it is a report of: run and its page, date, git state, data MD5s, and which
weights were tested and why, for train.py (tracked and not) and evaluate.py (run_id and ckpt_path)."""

from __future__ import annotations

import copy
import json
import subprocess
from datetime import datetime

import pytest
import torch
from mlflow import MlflowClient
from omegaconf import open_dict

from mnist_mlp import evaluation, report, runner, validation
from mnist_mlp.report.provenance import fields, weights_text
from mnist_mlp.tracking.ui import run_url
from tests.helpers.configs import ROOT, compose_job, quiet
from tests.helpers.data import data_overrides, write_synthetic_mnist

EPOCHS = 3


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def _header(folder):
    """The provenance items of report.md, and summary.json's provenance."""
    md = (folder / "report.md").read_text()
    block = md.split("## Provenance\n\n", 1)[1].split("\n\n", 1)[0]
    items = [line.removeprefix("- **").replace(":** ", ": ", 1) for line in block.splitlines()]
    return items, json.loads((folder / "summary.json").read_text())["provenance"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tracked 3-epoch run on a synthetic MNIST, in-process."""
    tmp = tmp_path_factory.mktemp("provenance")
    data_dir = tmp / "data"
    md5s = write_synthetic_mnist(data_dir)
    store = f"sqlite:///{tmp}/mlruns/mlflow.db"
    cfg = compose_job(*data_overrides(data_dir, md5s), *quiet(), f"trainer.max_epochs={EPOCHS}",
                      f"logger.tracking_uri={store}", f"logger.artifact_location={tmp}/art",
                      "logger.system_metrics=false", out=tmp / "out")
    validation.check(cfg)
    runner.run(cfg)
    client = MlflowClient(store)
    run = client.search_runs([client.get_experiment_by_name("mnist-mlp").experiment_id])[0]
    return tmp, cfg, md5s, store, client, run


def test_a_training_report_names_its_run_code_data_and_best_checkpoint(trained):
    tmp, _, md5s, store, _, run = trained
    items, saved = _header(tmp / "out" / "report")
    url = (f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
           "?workflowType=machine_learning")
    assert items[0] == (f"Run: MLflow run {run.info.run_id}, {url} (while `mlflow ui "
                        f"--backend-store-uri {store}` serves the store)")
    assert saved["run_id"] == run.info.run_id and saved["run_url"] == url
    when = datetime.fromisoformat(saved["date"])
    assert when.tzinfo is not None and abs((datetime.now().astimezone() - when).total_seconds()) < 600
    assert items[1] == f"Date: {saved['date']}"
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    assert saved["git_commit"] == _git("rev-parse", "HEAD") and saved["git_dirty"] is dirty
    assert items[2].startswith(f"Code: git commit {saved['git_commit']}, ")
    assert saved["data_md5"] == md5s
    assert items[3] == "Data (verified MD5): " + ", ".join(f"{k} {v}" for k, v in md5s.items())
    # The tested checkpoint is the run's best one: its file, its epoch, the score that chose it.
    best = tmp / "out" / "checkpoints" / run.data.tags["best_checkpoint"].split("/")[-1]
    epochs = torch.load(best, map_location="cpu", weights_only=True)["epoch"] + 1
    val_acc = max(m.value for m in MlflowClient(store).get_metric_history(run.info.run_id, "acc/val"))
    tested = saved["tested"]
    assert tested == {"choice": "best", "checkpoint": str(best), "epochs_trained": epochs,
                      "epochs_run": EPOCHS, "monitor": "acc/val",
                      "score": pytest.approx(val_acc, abs=1e-6), "source_run": None}
    of = "the last of the 3 epochs" if epochs == EPOCHS else f"{epochs} of the 3 epochs"
    assert items[4] == f"Tested weights: {best.name}, saved after {of}: the best by acc/val " \
                       f"({tested['score']:.4f}) (test_ckpt=best)"
    assert items[5] == f"Checkpoint file: {best}"
    page = (tmp / "out" / "report" / "report.html").read_text()
    assert page.index("<h2>Provenance</h2>") < page.index("<h2>Model description</h2>")
    assert f'<a href="{url}">{url}</a>' in page and best.name in page
    assert f"<code>mlflow ui --backend-store-uri {store}</code>" in page


def test_evaluate_names_the_checkpoint_and_the_run_it_came_from(trained):
    tmp, cfg, md5s, store, client, run = trained
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.run_id = run.info.run_id
        cfg.report.dir = str(tmp / "eval" / "report")
        cfg.evaluate = {"mlflow_evaluator": False}  # evaluate.py's group (conf/evaluate.yaml)
    evaluation.evaluate_run(cfg)
    items, saved = _header(tmp / "eval" / "report")
    ev = client.search_runs([run.info.experiment_id],
                            f"tags.mnist_mlp.evaluates = '{run.info.run_id}'")[0]
    assert saved["run_id"] == ev.info.run_id
    assert saved["run_url"] == run_url(store, run.info.experiment_id, ev.info.run_id)
    name = run.data.tags["best_checkpoint"].split("/")[-1]
    tested = saved["tested"]
    assert tested["source_run"] == run.info.run_id and tested["choice"] == "given"
    assert tested["monitor"] == "acc/val" and tested["checkpoint"].endswith(name)
    assert items[4].startswith(f"Tested weights: {name}, the best checkpoint of MLflow run "
                               f"{run.info.run_id}, saved after ")
    assert saved["data_md5"] == md5s


def test_an_untracked_evaluation_says_so_and_names_the_file(trained):
    tmp, cfg, _, _, _, _ = trained
    last = tmp / "out" / "checkpoints" / "last.ckpt"
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.report.dir = str(tmp / "eval_file")
    evaluation.evaluate(str(last), cfg)
    items, saved = _header(tmp / "eval_file")
    assert saved["run_id"] is None
    assert items[0] == "Run: not tracked in MLflow ('~logger', or evaluate.py ckpt_path=...)"
    # last.ckpt is not what the acc/val checkpoint callback counted as its best: no score claimed
    assert items[4] == f"Tested weights: last.ckpt, saved after {EPOCHS} epochs (evaluate.py ckpt_path)"
    assert saved["tested"]["monitor"] is None


@pytest.mark.parametrize(("weights", "text"), [
    (report.TestedWeights("last", epochs_trained=4, epochs_run=4),
     "the weights at the end of training after 4 epochs (test_ckpt=last)"),
    (report.TestedWeights("best", epochs_trained=1, epochs_run=1),
     "the weights at the end of training after 1 epoch (no checkpoint was saved to pick the best "
     "from)"),
    (report.TestedWeights("best", "/o/epoch017.ckpt", 18, 30, "acc/val", 0.98523),
     "epoch017.ckpt, saved after 18 of the 30 epochs: the best by acc/val (0.9852) (test_ckpt=best)"),
    (report.TestedWeights("best", "/o/epoch000.ckpt", 1, 1, "acc/val", 0.5),
     "epoch000.ckpt, saved after its only epoch: the best by acc/val (0.5000) (test_ckpt=best)"),
])
def test_tested_weights_say_which_and_why(weights, text):
    assert weights_text(weights) == text


@pytest.mark.parametrize(("store", "page", "serve"), [
    ("http://127.0.0.1:5123/",
     "http://127.0.0.1:5123/#/experiments/7/runs/abc?workflowType=machine_learning", None),
    ("sqlite:////x/mlflow.db",
     "http://127.0.0.1:5000/#/experiments/7/runs/abc?workflowType=machine_learning",
     "mlflow ui --backend-store-uri sqlite:////x/mlflow.db"),
])
def test_the_run_address_is_its_page_on_the_server_or_the_local_ui(store, page, serve):
    assert run_url(store, "7", "abc") == page
    p = report.Provenance(run_id="abc", run_url=page, store=store, git_commit="c0ffee",
                          git_dirty=True)
    name, first = fields(p)[0]
    assert name == "Run" and first.startswith(f"MLflow run abc, {page}")
    assert (f"`{serve}`" in first) if serve else first.endswith(page)
    assert fields(p)[2] == ("Code", "git commit c0ffee, with uncommitted changes (dirty)")
