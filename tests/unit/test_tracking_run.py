"""What a user finds in the store after a training run: params, epoch metrics, timings, tags, files,
dataset inputs, system metrics, the description, and the model served through pyfunc without pickle.

The run is the session's ``trained_run`` (in-process, as train.py runs it); a failing run trains
here, on its own store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mnist_mlp import cli
from tests.helpers.configs import compose_job, quiet, store_overrides
from tests.helpers.data import N_TEST, TRAIN_SPLIT, VAL_SIZE, data_overrides
from tests.helpers.runs import (
    EPOCH_METRICS,
    artifacts,
    checkpoint_probabilities,
    mnist_test_images,
    runs_in,
    tracking_uri,
)
from tests.helpers.trained import TRAINED_EPOCHS, TRAINED_LR


def test_a_run_records_params_epoch_metrics_config_report_checkpoint_and_model(trained_run, tmp_path):
    store, run, md5s = trained_run.client, trained_run.run, trained_run.md5s
    rid = run.info.run_id
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.lr"] == str(TRAINED_LR) and params["trainer.max_epochs"] == str(TRAINED_EPOCHS)
    assert params["data.batch_size"] == "100" and params["seed"] == "42"
    for key in EPOCH_METRICS:
        assert len(store.get_metric_history(rid, key)) == TRAINED_EPOCHS, key  # one point per epoch
    assert {"test/acc", "test/loss"} <= set(run.data.metrics)
    # where the run's time went (docs, Performance): every phase in seconds; those after the run's
    # creation fit inside its recorded duration
    phases = {k[5:-2]: v for k, v in run.data.metrics.items() if k.startswith("time/")}
    assert set(phases) == {"startup", "build", "data", "tracking_start", "fit", "test_and_report",
                           "tracking_outputs"}
    assert all(v >= 0 for v in phases.values()) and phases["fit"] > 0
    after_creation = phases["fit"] + phases["test_and_report"] + phases["tracking_outputs"]
    assert after_creation <= (run.info.end_time - run.info.start_time) / 1000 + 0.5
    tags = run.data.tags
    assert len(tags["git.commit"]) == 40 and tags["git.dirty"] in ("true", "false")
    assert {tags[f"data.md5.{k}"] for k in md5s} == set(md5s.values())
    arts = artifacts(store, rid)
    assert {"config.yaml", "overrides.yaml", "report/confusion_matrix.png"} <= arts
    assert tags["best_checkpoint"] in arts and tags["best_checkpoint"].endswith(".ckpt")
    overrides = store.download_artifacts(rid, "overrides.yaml", str(tmp_path))
    assert f"model.lr={TRAINED_LR}" in Path(overrides).read_text()

    import mlflow.pyfunc

    with tracking_uri(store.tracking_uri):  # the served model: also tests/integration/test_served_model.py
        served = mlflow.pyfunc.load_model(f"runs:/{rid}/model")
        assert served.predict(np.zeros((3, 784))).shape == (3,)  # one class per image
        probs = served.predict(np.zeros((3, 784)), params={"output": "probabilities"}).filter(like="prob_")
    assert probs.shape == (3, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_the_experiment_opens_on_the_runs_table(trained_run):
    experiment = trained_run.client.get_experiment(trained_run.run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_run_lists_mnist_splits_as_dataset_inputs(trained_run):
    inputs = {d.dataset.name: d for d in trained_run.run.inputs.dataset_inputs}
    assert set(inputs) == {"mnist-train", "mnist-validation", "mnist-test"}
    tags = {name: {t.key: t.value for t in d.tags} for name, d in inputs.items()}
    assert {n: t["mlflow.data.context"] for n, t in tags.items()} == {
        "mnist-train": "training", "mnist-validation": "validation", "mnist-test": "testing"}
    assert {n: t["rows"] for n, t in tags.items()} == {
        "mnist-train": str(TRAIN_SPLIT), "mnist-validation": str(VAL_SIZE), "mnist-test": str(N_TEST)}
    raw = (trained_run.data_dir / "MNIST" / "raw").resolve()
    for d in inputs.values():
        assert json.loads(d.dataset.source) == {"uri": raw.as_uri()}
    assert len({d.dataset.digest for d in inputs.values()}) == 3


def test_system_metrics_are_recorded(trained_run):
    system = {k for k in trained_run.run.data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system


def test_the_description_is_the_headline_with_the_runs_own_numbers(trained_run, tmp_path):
    client, r = trained_run.client, trained_run.run
    note = r.data.tags["mlflow.note.content"]
    m = r.data.metrics
    assert f"Test accuracy {m['test/acc']:.4f}" in note
    assert f"macro F1 {m['test/f1_macro']:.4f}" in note
    assert f"learning_rate {TRAINED_LR}" in note and f"epochs {TRAINED_EPOCHS}" in note
    path = client.download_artifacts(r.info.run_id, "report/confusion_matrix.csv", str(tmp_path))
    cm = pd.read_csv(path, index_col=0).to_numpy()
    mixups = cm + cm.T
    np.fill_diagonal(mixups, 0)
    if mixups.sum() == 0:
        assert "No test image misclassified" in note
    else:
        a, b = np.unravel_index(np.argmax(np.triu(mixups)), mixups.shape)
        assert f"Most confused: {a}↔{b}, {mixups[a, b]} images" in note


def test_the_model_loads_through_pyfunc_without_pickle_and_gives_the_modules_classes(
    trained_run, tmp_path, monkeypatch
):
    import mlflow

    from mnist_mlp.model import MnistMlp

    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    rid = trained_run.run.info.run_id
    images = mnist_test_images(trained_run.data_dir)[:64]
    expected = checkpoint_probabilities(trained_run.client, trained_run.run, images, tmp_path / "ckpt")
    with tracking_uri(trained_run.client.tracking_uri):
        model = mlflow.pyfunc.load_model(f"runs:/{rid}/model")
        local = Path(mlflow.artifacts.download_artifacts(f"runs:/{rid}/model",
                                                         dst_path=str(tmp_path / "m")))
    flat = images.reshape(len(images), -1)
    for batch in (flat, flat.astype(np.float32), flat.astype(np.float64), pd.DataFrame(flat)):
        np.testing.assert_array_equal(model.predict(batch), expected.argmax(axis=1))
        probs = model.predict(batch, params={"output": "probabilities"})
        np.testing.assert_allclose(probs[[f"prob_{k}" for k in range(10)]], expected, atol=1e-5)
    assert model.metadata.get_input_schema() is None  # checked by the model (served_model.py)
    assert model.metadata.get_params_schema().params[0].name == "output"
    stored = {p.name for p in local.rglob("*") if p.is_file()}
    assert {"served_model.py", "weights.pt", "network.json", "input_example.json"} <= stored
    assert not any(n.endswith((".pkl", ".pickle", ".cloudpickle")) for n in stored)
    assert "python_model.pkl" not in stored
    weights = torch.load(local / "artifacts" / "weights.pt", weights_only=True)
    assert set(weights) == set(MnistMlp().state_dict())


def test_the_model_is_registered_under_the_configured_name(trained_run):
    (version,) = trained_run.client.search_model_versions("name='mnist-mlp-test'")
    assert version.run_id == trained_run.run.info.run_id and int(version.version) == 1


def test_a_failing_run_is_failed_with_its_params_kept_and_earlier_runs_unchanged(
    synthetic_mnist, tmp_path, store
):
    exp = store.create_experiment("mnist-mlp", artifact_location=str(tmp_path / "mlruns/art"))
    earlier = store.create_run(exp, run_name="earlier").info.run_id
    store.log_metric(earlier, "acc/val", 0.5)
    store.set_terminated(earlier)
    before = store.get_run(earlier)
    cfg = compose_job("trainer.max_epochs=1", "model.net.in_features=100",  # shape error in fit
                      *data_overrides(*synthetic_mnist), *store_overrides(tmp_path), *quiet())
    with pytest.raises(RuntimeError):
        cli.train(cfg)
    (run,) = [r for r in runs_in(store, "mnist-mlp", "train") if r.info.run_id != earlier]
    assert run.info.status == "FAILED" and run.data.params["model.net.in_features"] == "100"
    after = store.get_run(earlier)
    assert (after.info.status, after.info.end_time, after.data.metrics) == (
        before.info.status, before.info.end_time, before.data.metrics)
