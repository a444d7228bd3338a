"""The report drawn in its worker process (``report.background``, the default) is the report drawn
in the training process, byte for byte, and a run's MLflow metrics are the same either way.

Trained in-process on a synthetic MNIST. The worker's failures (it cannot start, it dies, the
folder cannot be written) leave the report written, or the user's error message, as without it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
from mlflow import MlflowClient

from mnist_mlp import config, report, runner, validation
from mnist_mlp.errors import UserError
from mnist_mlp.report import background, history
from mnist_mlp.tracking.run import provenance
from tests.helpers.configs import compose_job, quiet
from tests.helpers.data import data_overrides, write_synthetic_mnist

EPOCHS = 2
LR = "model.lr=0.003"  # slow enough learning for mistakes to show: every figure is drawn
# What differs between two runs by design, not by how their report was drawn.
PER_RUN = ("time/", "system/")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    return data_dir, write_synthetic_mnist(data_dir)


@pytest.fixture(scope="module")
def tested(data, tmp_path_factory):
    """Everything a report is written from, after a short fit and the test (the best checkpoint)."""
    out = tmp_path_factory.mktemp("inputs")
    cfg = compose_job(*data_overrides(*data), *quiet(), "~logger", f"trainer.max_epochs={EPOCHS}",
                      LR, out=out)
    L.seed_everything(cfg.seed)
    datamodule, model, trainer = runner.build(cfg)
    trainer.fit(model, datamodule=datamodule)
    best = trainer.checkpoint_callback.best_model_path
    trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False)
    where = provenance(datamodule, runner.tested_weights(cfg, trainer, best))
    settings = config.build(cfg.report, "report")
    args = (model.test_results, str(model.net), report.train_hyperparameters(cfg))
    kwargs = {"images": datamodule.test_images().numpy(), "history": history.from_trainer(trainer),
              "provenance": where}
    return settings, args, kwargs


def test_the_worker_writes_every_file_byte_for_byte_as_the_training_process(tested, tmp_path):
    settings, args, kwargs = tested
    here = report.write_report(replace(settings, dir=str(tmp_path / "here"), background=False),
                               *args, **kwargs)
    pending = background.write(replace(settings, dir=str(tmp_path / "worker"), background=True),
                               *args, **kwargs)
    assert background._Worker.pool is not None  # drawn in the worker, not here
    worker = pending.wait()
    assert set(worker) == set(here) and len(here) == 16  # every file, the seven figures included
    drawn_here, drawn_there = _files(tmp_path / "here"), _files(tmp_path / "worker")
    assert drawn_there.keys() == drawn_here.keys()
    for name, content in drawn_here.items():
        assert drawn_there[name] == content, name


def test_the_mistake_grids_from_the_pixels_are_those_from_float_images(tested, tmp_path):
    """The worker is handed the test split's uint8 pixels (7.8 MB for MNIST, not 31 MB of float
    images): the grids drawn from them are byte for byte those drawn from the model's input with
    its normalisation undone, as the report drew them before."""
    import torch

    from mnist_mlp.datamodule import MnistDataModule

    settings, args, kwargs = tested
    pixels = kwargs["images"]
    assert pixels.dtype == "uint8" and pixels.shape[1:] == (28, 28)
    dm = MnistDataModule()
    undone = dm.normalise(torch.from_numpy(pixels)).mul_(dm.std).add_(dm.mean).clamp_(0, 1)
    floats = {**kwargs, "images": undone.reshape(pixels.shape).numpy()}
    for name, given in (("pixels", kwargs), ("floats", floats)):
        report.write_report(replace(settings, dir=str(tmp_path / name), background=False),
                            *args, **given)
    for grid in ("mistakes_confident.png", "mistakes_pair.png"):
        assert (tmp_path / "pixels" / grid).read_bytes() == (tmp_path / "floats" / grid).read_bytes()


def test_the_worker_imports_no_torch(tested):
    background.start()
    in_worker = background._Worker.pool.submit(eval, "sorted(set(__import__('sys').modules) & "
                                                     "{'torch', 'lightning', 'mlflow'})")
    assert in_worker.result(timeout=60) == []


def test_an_unwritable_folder_is_the_users_error_from_the_worker_too(tested, tmp_path):
    settings, args, kwargs = tested
    (tmp_path / "taken").write_text("a file where the report folder should be")
    pending = background.write(replace(settings, dir=str(tmp_path / "taken"), background=True),
                               *args, **kwargs)
    with pytest.raises(UserError, match="Cannot write the report files into .*taken"):
        pending.wait()


def test_a_dead_worker_leaves_the_report_to_the_training_process(tested, tmp_path, caplog):
    settings, args, kwargs = tested
    background.start()
    pid = background._Worker.pool.submit(os.getpid).result(timeout=60)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)  # the executor notices its process is gone
    pending = background.write(replace(settings, dir=str(tmp_path / "after"), background=True),
                               *args, **kwargs)
    assert len(pending.wait()) == 16
    assert "report worker process stopped" in caplog.text
    background.start()  # a later run starts a new worker
    assert background._Worker.pool.submit(int, "7").result(timeout=60) == 7


@pytest.fixture(scope="module")
def two_runs(data, tmp_path_factory):
    """Two tracked runs into one store, the same seed: the report in its worker, and in-process."""
    tmp = tmp_path_factory.mktemp("runs")
    store = f"sqlite:///{tmp}/mlruns/mlflow.db"
    runs = {}
    for mode in ("worker", "here"):
        out = tmp / mode
        cfg = compose_job(*data_overrides(*data), *quiet(), f"trainer.max_epochs={EPOCHS}", LR,
                          f"logger.tracking_uri={store}", f"logger.artifact_location={tmp}/art",
                          "logger.system_metrics=false", f"logger.run_name={mode}",
                          f"report.background={str(mode == 'worker').lower()}",
                          f"hydra.runtime.output_dir={out}", out=out)
        validation.check(cfg)
        runner.run(cfg)
        client = MlflowClient(store)
        exp = client.get_experiment_by_name("mnist-mlp")
        (run,) = client.search_runs([exp.experiment_id], f"tags.`mlflow.runName` = '{mode}'")
        runs[mode] = (run, out)
    return MlflowClient(store), runs


KILLED_WITH_A_WORKER = """
from mnist_mlp.report import background
background.start()
background._Worker.pool.submit(int).result()  # the worker is up and prepared
print("ready", flush=True)
import time; time.sleep(600)
"""


def test_the_worker_ends_when_the_training_process_is_killed():
    """A training process killed outright (SIGKILL, a DDP rank's failure) leaves no orphan worker
    holding its stdout and stderr: whoever reads them (a pipe, a test, Slurm) sees them close."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WITH_A_WORKER], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    proc.kill()
    out, _ = proc.communicate(timeout=30)  # times out while an orphan holds the pipes open
    assert out == ""


def test_a_runs_metrics_do_not_depend_on_where_its_report_was_drawn(two_runs):
    client, runs = two_runs
    (worker, _), (here, _) = runs["worker"], runs["here"]
    kept = [{k: v for k, v in run.data.metrics.items() if not k.startswith(PER_RUN)}
            for run in (worker, here)]
    assert kept[0] == kept[1] and {"test/acc", "test/f1_macro", "acc/train", "acc/val"} <= set(kept[0])
    for key in ("loss/train", "acc/val"):  # every epoch's value, not only the last
        assert ([m.value for m in client.get_metric_history(worker.info.run_id, key)]
                == [m.value for m in client.get_metric_history(here.info.run_id, key)])
    # both runs measured their phases and memory (speed.PhaseClock)
    assert {"time/tracking_outputs_s", "system/phase_memory/fit_mb",
            "system/phase_memory/fit_peak_mb"} <= set(worker.data.metrics)


def test_a_runs_report_files_do_not_depend_on_where_they_were_drawn(two_runs):
    """Byte for byte, once what names the run itself (its id, date and output folder) is set aside."""
    client, runs = two_runs
    drawn = {}
    for mode, (run, out) in runs.items():
        files = _files(out / "report")
        provenance_ = json.loads(files["summary.json"])["provenance"]
        names = {run.info.run_id: "<run>", provenance_["date"]: "<date>", str(out): "<out>"}
        for name in ("summary.json", "report.md", "report.html"):
            text = files[name].decode()
            for value, placeholder in names.items():
                text = text.replace(value, placeholder)
            files[name] = text.encode()
        drawn[mode] = files
        logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "report")}
        assert logged == set(files)  # every file is in MLflow too
    assert drawn["worker"].keys() == drawn["here"].keys()
    for name, content in drawn["here"].items():
        assert drawn["worker"][name] == content, name
