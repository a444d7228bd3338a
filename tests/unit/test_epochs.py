"""One epoch numbering wherever a person reads an epoch: the progress bar, the checkpoint names, the
learning-curve rows and the MLflow steps all call the first epoch 1 (``mnist_mlp.epochs``)."""

from __future__ import annotations

import csv

import torch
from mlflow import MlflowClient

from mnist_mlp import epochs, runner, validation
from tests.helpers.configs import compose_job, store_overrides
from tests.helpers.data import data_overrides

EPOCHS = 2


def test_console_checkpoints_curves_and_mlflow_count_epochs_from_one(synthetic_mnist, tmp_path, capsys):
    data_dir, md5s = synthetic_mnist
    out = tmp_path / "out"
    cfg = compose_job(*data_overrides(data_dir, md5s), *store_overrides(tmp_path), "model.lr=0.002",
                      f"trainer.max_epochs={EPOCHS}", "callbacks.progress_bar.mode=bar",
                      "trainer.enable_model_summary=false", "trainer.accelerator=cpu",
                      "logger.system_metrics=false", out=out)
    validation.check(cfg)
    runner.run(cfg)
    shown = "".join(capsys.readouterr())  # tqdm's bar
    assert [f"Epoch {n}/{EPOCHS}" in shown for n in (1, 2)] == [True, True]
    assert f"Epoch 0/{EPOCHS}" not in shown and "Epoch 0:" not in shown

    with open(out / "report" / "learning_curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]

    # The best checkpoint is named after the epoch whose row has the best validation accuracy.
    names = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
    best_row = max(rows, key=lambda r: float(r[epochs.VAL_ACC]))
    assert names == [f"epoch{int(best_row['epoch']):03d}.ckpt", "last.ckpt"]
    saved = torch.load(out / "checkpoints" / names[0], map_location="cpu", weights_only=True)
    assert epochs.number(saved["epoch"]) == int(best_row["epoch"])  # Lightning's own count inside

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("mnist-mlp").experiment_id])
    for key in epochs.METRICS:
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == [1, 2], key  # charts read against epochs
        assert [m.value for m in history] == [float(r[key]) for r in rows], key
    assert "epoch" not in run.data.metrics  # the step is the epoch: no second counter
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test/acc")] == [0]
