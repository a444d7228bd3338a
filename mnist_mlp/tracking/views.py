"""How the MLflow UI opens on the project's experiment: on its runs, with the headline columns.

Both are experiment tags, set when the experiment is created (``store.open_store``) and on older
ones by ``make ui`` and a sweep (``ensure``):

* ``mlflow.experimentKind``: MLflow 3 opens other experiments on its GenAI pages (traces);
* a saved view (MLflow 3's "Views" menu, an ``mlflow.sharedViewState.<id>`` tag holding the runs
  table's columns and sort): the runs table with the test accuracy, its interval, the macro F1 and
  the settings a sweep varies, best run first. ``ui.runs_url`` links to it.

What MLflow does not let a project set: the columns a browser shows without that link (the UI
keeps them per browser, in its local storage), and the run page's charts, which the UI lays out
itself in sections named by the part of a metric's key before its last ``/``, sorted by name, and
keeps per browser too. The metric names are chosen for that order (``mnist_mlp.epochs``,
``mnist_mlp.metrics``).
"""

from __future__ import annotations

import json
from typing import Any

from mnist_mlp.epochs import VAL_ACC

#: MLflow 3's UI opens an experiment on its GenAI pages unless it is a model-training experiment.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
#: The saved view's id: ``?viewStateShareKey=<id>`` opens it, the Views menu lists it by name.
VIEW_ID = "headline-metrics"
VIEW_NAME = "Headline metrics"
_VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"
HEADLINE_METRICS = ("test/acc", "test/acc_ci_low", "test/acc_ci_high", "test/f1_macro", "test/loss",
                    VAL_ACC)
HEADLINE_PARAMS = ("model.lr", "model.optimizer", "model.scheduler", "data.batch_size",
                   "trainer.max_epochs", "seed")


def _column(kind: str, key: str) -> str:
    """A runs-table column as the UI names it (``metrics.`test/acc```)."""
    return f"{kind}.`{key}`"


def view_state() -> dict[str, Any]:
    """The runs table's state the view restores: columns and sort (the UI fills in the rest)."""
    return {
        "selectedColumns": [*(_column("metrics", m) for m in HEADLINE_METRICS),
                            *(_column("params", p) for p in HEADLINE_PARAMS)],
        "orderByKey": _column("metrics", "test/acc"),
        "orderByAsc": False,
    }


def experiment_tags() -> dict[str, str]:
    """Every tag of this module, as ``create_experiment`` and ``set_experiment_tag`` take them."""
    # The envelope of a view saved from the UI: name and creation time readable, state as JSON.
    envelope = {"name": VIEW_NAME, "createdAt": 0, "updatedAt": 0,
                "state": json.dumps(view_state(), separators=(",", ":"))}
    return {**EXPERIMENT_KIND, _VIEW_TAG: json.dumps(envelope, separators=(",", ":"))}


def ensure(client: Any, experiment_id: str) -> None:
    """Set the tags on an experiment that lacks them (created before, or by another tool)."""
    tags = client.get_experiment(experiment_id).tags
    for key, value in experiment_tags().items():
        if tags.get(key) != value:
            client.set_experiment_tag(experiment_id, key, value)
