"""Reading runs back from a store over its API, and checking that a run holds only its own job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from omegaconf import OmegaConf

EPOCH_METRICS = {"train/loss", "train/acc", "val/loss", "val/acc"}


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
