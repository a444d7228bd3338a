"""Reading runs back from a store over its API, and checking that a run holds only its own job.

What the tests compare a run's model with: the test images, and its checkpoint's probabilities.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from omegaconf import OmegaConf

from mnist_mlp import checkpoint, fetch, idx
from mnist_mlp.datamodule import MnistDataModule

EPOCH_METRICS = {"loss/train", "acc/train", "loss/val", "acc/val"}


def summary_of(stdout: str) -> dict[str, str]:
    """The ``Label: text`` lines a command ends its output with (its summary), by label."""
    found = {}
    for line in reversed(stdout.strip().splitlines()):
        label, sep, text = line.partition(": ")
        if not sep or not re.fullmatch(r"[A-Z][A-Za-z ]+", label):
            break
        found.setdefault(label, text)  # the last line of a label: the command's own summary
    return found


def run_address(tmp: Path, experiment_id: str, run_id: str) -> str:
    """What a summary gives as the MLflow page of a run in ``tmp/mlruns/mlflow.db``."""
    return (f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}"
            "?workflowType=machine_learning (serve it with `mlflow ui --backend-store-uri "
            f"sqlite:///{tmp}/mlruns/mlflow.db --port 5000`)")


def runs_in(client: MlflowClient, experiment: str, role: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], f"tags.`mnist_mlp.role` = '{role}'")


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path):
        out |= artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def check_job(client: MlflowClient, job, tmp: Path, epochs: int = 1) -> None:
    """One training run, read back over REST: FINISHED, every metric, its own artifacts.

    Its params, ``config.yaml`` and ``overrides.yaml`` agree with the values its name says it was
    given, its test accuracy with its own ``report/classification_report.json``, its best
    checkpoint's learning rate with its param: nothing of another job landed in it.
    """
    rid = job.info.run_id
    assert job.info.status == "FINISHED", job.info
    assert EPOCH_METRICS | {"test/acc", "test/loss", "time/fit_s"} <= set(job.data.metrics)
    for key in EPOCH_METRICS:
        assert len(client.get_metric_history(rid, key)) == epochs, key
    arts = artifacts(client, rid)
    assert {"config.yaml", "overrides.yaml", "report/classification_report.json",
            "report/report.html", job.data.tags["best_checkpoint"]} <= arts
    dst = tmp / rid
    dst.mkdir()
    config = OmegaConf.load(client.download_artifacts(rid, "config.yaml", str(dst)))
    overrides = OmegaConf.load(client.download_artifacts(rid, "overrides.yaml", str(dst)))
    report = json.loads(Path(client.download_artifacts(
        rid, "report/classification_report.json", str(dst))).read_text())
    for pair in job.info.run_name.split(","):  # "lr=0.01,seed=2": what this job was given
        short, value = pair.split("=")
        key = next(k for k in job.data.params if k == short or k.endswith("." + short))
        assert job.data.params[key] == value
        assert f"{key}={value}" in overrides and str(OmegaConf.select(config, key)) == value
    assert report["accuracy"] == pytest.approx(job.data.metrics["test/acc"], abs=1e-6)
    ckpt = torch.load(client.download_artifacts(rid, job.data.tags["best_checkpoint"], str(dst)),
                      map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["lr"] == float(job.data.params["model.lr"])


@contextlib.contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (``runs:/`` URIs) pointed at ``uri`` inside the block only: its
    ``set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI``, which later train.py children inherit."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


def mnist_test_images(data_dir: Path) -> np.ndarray:
    """The MNIST test images in ``data_dir`` as uint8 N×28×28, read from their IDX file."""
    path = fetch.raw_dir(data_dir) / fetch.FILES["test_images"][0]
    return idx.parse(idx.read_bytes(path), path, 3)


def checkpoint_probabilities(client: MlflowClient, run, images: np.ndarray, dst: Path) -> np.ndarray:
    """The run's best checkpoint's own softmax on the data module's normalisation of ``images``."""
    ckpt = client.download_artifacts(run.info.run_id, run.data.tags["best_checkpoint"], str(dst))
    module, _ = checkpoint.load_module(ckpt, ["mnist_mlp."])
    x = MnistDataModule().normalise(torch.from_numpy(images.copy()))
    with torch.no_grad():
        return module.eval()(x).softmax(-1).numpy()
