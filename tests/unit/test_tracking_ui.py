"""The MLflow UI opens on what matters: the experiment's saved view shows columns that runs really
log, best run first; ``make ui``'s address opens it."""

from __future__ import annotations

import json

import numpy as np

from mnist_mlp import epochs
from mnist_mlp.metrics import TestMetrics
from mnist_mlp.tracking import ui, views
from mnist_mlp.tracking.record import config_params
from mnist_mlp.tracking.store import open_store
from tests.helpers.configs import compose_job


def _logged_metric_names() -> set[str]:
    import torch

    metrics = TestMetrics(10)
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(50, 10)), dtype=torch.float32)
    labels = torch.tensor(np.arange(50) % 10)
    metrics.update(logits, labels, torch.arange(50))
    return set(metrics.compute().scalars()) | set(epochs.METRICS)


def _view(tags: dict[str, str]) -> dict:
    envelope = json.loads(tags[f"mlflow.sharedViewState.{views.VIEW_ID}"])
    assert envelope["name"] == views.VIEW_NAME and isinstance(envelope["createdAt"], int)
    return json.loads(envelope["state"])


def test_a_new_experiment_opens_on_runs_with_the_headline_columns(tmp_path):
    client, exp_id = open_store(f"sqlite:///{tmp_path}/mlflow.db", "mnist-mlp", str(tmp_path / "a"))
    tags = client.get_experiment(exp_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    state = _view(tags)
    metrics = {c[len("metrics.`"):-1] for c in state["selectedColumns"] if c.startswith("metrics.")}
    params = {c[len("params.`"):-1] for c in state["selectedColumns"] if c.startswith("params.")}
    assert {"test/acc", "test/acc_ci_low", "test/acc_ci_high", "test/f1_macro"} <= metrics
    assert metrics <= _logged_metric_names()  # every column is a metric a run logs
    assert params and params <= set(config_params(compose_job()))  # ... and a param it logs
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`test/acc`", False)


def test_make_ui_gives_an_older_experiment_the_view_and_links_to_it(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client, _ = open_store(uri, "warmup")  # the store's schema, then an experiment without tags
    old = client.create_experiment("mnist-mlp", str(tmp_path / "a"))
    assert ui.experiment_id(uri, "mnist-mlp") == old
    _view(client.get_experiment(old).tags)
    url = ui.runs_url("http://127.0.0.1:5000", old)
    assert url == (f"http://127.0.0.1:5000/#/experiments/{old}/runs?viewStateShareKey="
                   f"{views.VIEW_ID}&workflowType=machine_learning")
