"""What an MLflow and Lightning user sees of one run: its console log, and in the store its dataset
inputs, system metrics, description and a model served through pyfunc without pickle.

One ``train.py`` run (2 epochs on the synthetic IDX MNIST, default callbacks, stdout and stderr to a
file as in CI) is shared by the tests of this module; a two-job sweep checks the startup time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, data_overrides, store_overrides, write_synthetic_mnist
from mlflow import MlflowClient

import mnist_mlp  # noqa: F401
from mnist_mlp import checkpoint, idx
from mnist_mlp.datamodule import MnistDataModule

pytestmark = pytest.mark.slow
EPOCHS = 2
LR = 0.002  # slow enough that the synthetic test set keeps a few mistakes to describe


def _train(tmp: Path, *overrides: str) -> subprocess.CompletedProcess:
    log = tmp / "train.log"
    with open(log, "w") as out:  # not a terminal: what a CI log or `> file` gets
        proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], stdout=out,
                              stderr=subprocess.STDOUT, timeout=600, cwd=ROOT,
                              env={**os.environ, "MPLBACKEND": "Agg"})
    proc.stdout = log.read_text()
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The finished run, its client, its log and where its data and outputs are."""
    tmp = tmp_path_factory.mktemp("run")
    md5s = write_synthetic_mnist(tmp / "data")
    proc = _train(tmp, f"trainer.max_epochs={EPOCHS}", f"model.lr={LR}",
                  "logger.system_metrics_interval=0.1", "logger.registered_model_name=mnist-mlp-test",
                  *data_overrides(tmp / "data", md5s), *store_overrides(tmp))
    assert proc.returncode == 0, proc.stdout[-3000:]
    client = MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mnist-mlp")
    (found,) = client.search_runs([exp.experiment_id])
    return {"client": client, "run": found, "log": proc.stdout, "tmp": tmp, "md5s": md5s,
            "experiment": exp}


def test_the_log_of_a_run_is_short_and_says_only_what_matters(run):
    log = run["log"]
    lines = log.splitlines()
    assert len(lines) <= 40, log
    for noise in ("Tip:", "litlogger", "Pickle", "pickle", "Skipping setting a default",
                  "Downloading artifacts", "LeafSpec", "it/s]"):
        assert noise not in log, noise
    epoch_lines = [line for line in lines if line.startswith("Epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == [f"Epoch {e}/{EPOCHS}" for e in (1, 2)]
    history = run["client"].get_metric_history(run["run"].info.run_id, "val/acc")
    assert f"val/acc {history[-1].value:.4f}" in epoch_lines[-1]  # the epoch's logged value
    assert "Total params" in log  # the model summary, once
    assert log.count("Total params") == 1


def test_the_experiment_opens_on_the_runs_table(run):
    assert run["experiment"].tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_run_lists_mnist_splits_as_dataset_inputs(run):
    inputs = {d.dataset.name: d for d in run["run"].inputs.dataset_inputs}
    assert set(inputs) == {"mnist-train", "mnist-validation", "mnist-test"}
    tags = {name: {t.key: t.value for t in d.tags} for name, d in inputs.items()}
    assert {n: t["mlflow.data.context"] for n, t in tags.items()} == {
        "mnist-train": "training", "mnist-validation": "validation", "mnist-test": "testing"}
    assert {n: t["rows"] for n, t in tags.items()} == {
        "mnist-train": "500", "mnist-validation": "100", "mnist-test": "200"}  # conftest's 600/200
    raw = (run["tmp"] / "data" / "MNIST" / "raw").resolve()
    for d in inputs.values():
        assert json.loads(d.dataset.source) == {"uri": raw.as_uri()}
    assert len({d.dataset.digest for d in inputs.values()}) == 3


def test_dataset_digests_follow_the_verified_md5s_and_the_split(tmp_path):
    from mnist_mlp.tracking.datasets import split_inputs

    def digests(seed: int, val_size: int) -> dict[str, str]:
        data = tmp_path / f"d{seed}"
        dm = MnistDataModule(data, val_size=val_size, sources=("local",),
                             md5=write_synthetic_mnist(data, seed=seed))
        return {i.dataset.name: i.dataset.digest for i in split_inputs(dm)}

    base, other_split, other_data = digests(0, 100), digests(0, 50), digests(5, 100)
    assert base == digests(0, 100)
    assert other_split["mnist-test"] == base["mnist-test"]
    assert other_split["mnist-train"] != base["mnist-train"]
    assert all(other_data[k] != base[k] for k in base)


def test_parallel_jobs_logging_the_same_datasets_all_get_them(tmp_path):
    """Jobs of a parallel sweep race to insert one dataset row; the losers must not fail the run.

    Threads stand in for the sweep's processes: the race is in the store's transaction (look the
    dataset up, insert it if missing), which six clients at a barrier lose most of the time.
    """
    from mnist_mlp.tracking.datasets import log_datasets

    data = tmp_path / "data"
    dm = MnistDataModule(data, val_size=100, sources=("local",), md5=write_synthetic_mnist(data))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiments = [MlflowClient(uri).create_experiment(f"race-{i}") for i in range(10)]
    start, errors = threading.Barrier(6), []

    def job() -> None:
        client = MlflowClient(uri)
        for run_id in [client.create_run(e).info.run_id for e in experiments]:
            start.wait()
            try:
                log_datasets(client, run_id, dm)
            except Exception as error:  # noqa: BLE001 - reported below, with the others
                errors.append(error)

    jobs = [threading.Thread(target=job) for _ in range(6)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join()
    assert not errors, errors[0]
    client = MlflowClient(uri)
    for experiment in experiments:
        runs = client.search_runs([experiment])
        assert len(runs) == len(jobs)
        for r in runs:
            assert {d.dataset.name for d in r.inputs.dataset_inputs} == {
                "mnist-train", "mnist-validation", "mnist-test"}


def test_system_metrics_are_recorded(run):
    system = {k for k in run["run"].data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system


def test_the_description_is_the_headline_with_the_runs_own_numbers(run):
    client, r = run["client"], run["run"]
    note = r.data.tags["mlflow.note.content"]
    m = r.data.metrics
    assert f"Test accuracy {m['test/acc']:.4f}" in note
    assert f"macro F1 {m['test/f1_macro']:.4f}" in note
    assert f"learning_rate {LR}" in note and f"epochs {EPOCHS}" in note
    path = client.download_artifacts(r.info.run_id, "report/confusion_matrix.csv", str(run["tmp"]))
    cm = pd.read_csv(path, index_col=0).to_numpy()
    mixups = cm + cm.T
    np.fill_diagonal(mixups, 0)
    if mixups.sum() == 0:
        assert "No test image misclassified" in note
    else:
        a, b = np.unravel_index(np.argmax(np.triu(mixups)), mixups.shape)
        assert f"Most confused: {a}↔{b}, {mixups[a, b]} images" in note


def _raw_test_images(run) -> np.ndarray:
    """The synthetic test images as uint8 N×28×28, read from their IDX file."""
    from mnist_mlp import fetch

    path = run["tmp"] / "data" / "MNIST" / "raw" / fetch.FILES["test_images"][0]
    return idx.parse(idx.read_bytes(path), path, 3)


def _module_probabilities(run, images: np.ndarray) -> np.ndarray:
    """The best checkpoint's own softmax on the data module's normalisation of ``images``."""
    r = run["run"]
    ckpt = run["client"].download_artifacts(r.info.run_id, r.data.tags["best_checkpoint"],
                                            str(run["tmp"] / "ckpt"))
    module, _ = checkpoint.load_module(ckpt, ["mnist_mlp."])
    x = MnistDataModule().normalise(torch.from_numpy(images.copy()))
    with torch.no_grad():
        return module.eval()(x).softmax(-1).numpy()


def test_the_model_loads_through_pyfunc_without_pickle_and_gives_the_modules_probabilities(
    run, monkeypatch
):
    import mlflow

    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    mlflow.set_tracking_uri(run["client"].tracking_uri)
    rid = run["run"].info.run_id
    model = mlflow.pyfunc.load_model(f"runs:/{rid}/model")
    images = _raw_test_images(run)[:64]
    expected = _module_probabilities(run, images)
    flat = images.reshape(len(images), -1)
    for batch in (flat, flat.astype(np.float32), flat.astype(np.float64), pd.DataFrame(flat)):
        np.testing.assert_allclose(model.predict(batch), expected, atol=1e-5)
    assert model.metadata.signature is not None
    assert model.metadata.get_input_schema().input_types()[0].name == "double"
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{rid}/model",
                                                     dst_path=str(run["tmp"] / "m")))
    stored = {p.name for p in local.rglob("*") if p.is_file()}
    assert {"served_model.py", "weights.pt", "network.json", "input_example.json"} <= stored
    assert not any(n.endswith((".pkl", ".pickle", ".cloudpickle")) for n in stored)
    assert "python_model.pkl" not in stored
    weights = torch.load(local / "artifacts" / "weights.pt", weights_only=True)
    assert set(weights) == set(_module_state_keys())


def _module_state_keys() -> list[str]:
    from mnist_mlp.model import MnistMlp

    return list(MnistMlp().state_dict())


def test_the_model_is_registered_under_the_configured_name(run):
    (version,) = run["client"].search_model_versions("name='mnist-mlp-test'")
    assert version.run_id == run["run"].info.run_id and int(version.version) == 1


def test_mlflow_models_predict_scores_a_csv_of_images(run, tmp_path):
    images = _raw_test_images(run)[:5]
    csv = tmp_path / "images.csv"
    pd.DataFrame(images.reshape(len(images), -1).astype(float)).to_csv(csv, index=False)
    out = tmp_path / "predictions.json"
    rid = run["run"].info.run_id
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "models", "predict", "-m", f"runs:/{rid}/model",
         "-i", str(csv), "-t", "csv", "-o", str(out), "--env-manager", "local"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": run["client"].tracking_uri},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = np.asarray(json.loads(out.read_text())["predictions"])
    np.testing.assert_allclose(predictions, _module_probabilities(run, images), atol=1e-5)


def test_each_job_of_a_sweep_counts_only_its_own_startup(tmp_path):
    md5s = write_synthetic_mnist(tmp_path / "data")
    proc = _train(tmp_path, "-m", "seed=1,2", "trainer.max_epochs=1", "logger.system_metrics=false",
                  *data_overrides(tmp_path / "data", md5s), *store_overrides(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mnist-mlp")
    jobs = client.search_runs([exp.experiment_id], "tags.`mnist_mlp.role` = 'train'")
    assert not any(k.startswith("system/") for r in jobs for k in r.data.metrics)  # switched off
    startup = {r.data.tags["sweep.job"]: r.data.metrics["time/startup_s"] for r in jobs}
    first_job = next(r for r in jobs if r.data.tags["sweep.job"] == "0")
    first_total = sum(v for k, v in first_job.data.metrics.items() if k.startswith("time/"))
    # job 1 starts after job 0 in the same process: its startup is Hydra's job set-up only
    assert startup["1"] < 0.5 * startup["0"] and startup["1"] < first_total / 2, startup
