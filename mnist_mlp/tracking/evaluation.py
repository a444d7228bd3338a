"""``evaluate.py run_id=<id>``: the run's best checkpoint, and a new run that records its report
(and, with ``evaluate.mlflow_evaluator``, MLflow's own evaluation of the run's logged model)."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_mlp.errors import UserError
from mnist_mlp.tracking.record import (
    BEST_CKPT_TAG,
    CKPT_DIR,
    EVALUATES_TAG,
    MODEL_NAME,
    PARENT_TAG,
    REPORT_DIR,
    ROLE_TAG,
    RUN_NAME_TAG,
    git_tags,
)
from mnist_mlp.tracking.store import ending, get_run, log_batch, open_store, refusals_explained
from mnist_mlp.tracking.ui import run_url


@dataclass
class EvaluationRun:
    """A new run nested under the evaluated one, and that run's checkpoint on local disk."""

    client: Any
    run_id: str
    ckpt_path: Path
    source_run_id: str = ""  # the evaluated (training) run
    url: str | None = None  # the new run's page (``ui.run_url``)
    store: str | None = None  # its tracking URI
    experiment_id: str = ""  # the experiment both runs are in

    def log_report(self, report_dir: str | os.PathLike | None,
                   metrics: Mapping[str, float] | None = None) -> None:
        """The report files and the test metrics, into the new run."""
        if report_dir and Path(report_dir).is_dir():
            self.client.log_artifacts(self.run_id, str(report_dir), REPORT_DIR)
        if metrics:
            log_batch(self.client, self.run_id, metrics=metrics)

    def mlflow_evaluate(self, frame: Any, evaluator_config: Mapping[str, Any],
                        num_classes: int) -> dict[str, float]:
        """``mlflow.models.evaluate(model_type="classifier")`` of the evaluated run's model on
        ``frame`` (pixel columns and ``label``), logged into this run; returns its metrics.

        ``label_list`` is every class of the network, so a test set missing a class is still
        scored over all ``num_classes``, as the report is.
        """
        import mlflow

        config = {"label_list": list(range(num_classes)), **evaluator_config}
        mlflow.set_tracking_uri(self.client.tracking_uri)
        with mlflow.start_run(run_id=self.run_id), warnings.catch_warnings():
            # The dataset's schema, logged as the run's input, says integer pixels cannot be NaN.
            warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer")
            result = mlflow.models.evaluate(model_uri(self.source_run_id), frame, targets="label",
                                            model_type="classifier", evaluator_config=config)
        return {k: float(v) for k, v in result.metrics.items()}


def model_uri(run_id: str) -> str:
    return f"runs:/{run_id}/{MODEL_NAME}"


def check_logged_model(client: Any, run_id: str) -> None:
    """A UserError unless the run logged its model (a run that failed before its end, or one
    whose model waits in an outage buffer, has none yet)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        mlflow.models.get_model_info(model_uri(run_id))
    except (MlflowException, OSError):
        raise UserError(
            f"run_id={run_id} has no logged model ({model_uri(run_id)}) for "
            "evaluate.mlflow_evaluator=true: it ended before its model was logged. Pick a "
            "finished training run, or leave evaluate.mlflow_evaluator=false."
        ) from None


def run_checkpoint(client: Any, run: Any, dst: str | os.PathLike) -> Path:
    """Download the best checkpoint of a training run; a UserError says why there is none."""
    run_id = run.info.run_id
    path = run.data.tags.get(BEST_CKPT_TAG) or next(
        (a.path for a in client.list_artifacts(run_id, CKPT_DIR) if a.path.endswith(".ckpt")), None
    )
    if path is None:
        raise UserError(
            f"run_id={run_id} ({run.info.run_name}, {run.info.status}) has no checkpoint artifact "
            f"under {CKPT_DIR}/: it was a fast_dev_run or ended before its first validation. "
            "Pick a finished training run, or evaluate a local file with ckpt_path=<file.ckpt>."
        )
    return Path(client.download_artifacts(run_id, path, str(dst)))


@contextlib.contextmanager
def evaluation_run(run_id: str, logger_cfg: Mapping[str, Any], dst: str | os.PathLike,
                   needs_model: bool = False) -> Iterator[EvaluationRun]:
    """For ``evaluate.py run_id=<id>``: the run's checkpoint and a new run linked to it.

    The report goes into a new run (same experiment, nested under ``run_id`` via
    ``mlflow.parentRunId``, tagged ``mnist_mlp.evaluates=<id>``), so the training run keeps exactly
    what it recorded (``mnist_mlp.evaluation.evaluate_run`` is the caller). ``needs_model``: the
    run's logged model is checked too, before the new run is created.
    """
    uri = logger_cfg["tracking_uri"]
    client, _ = open_store(uri, logger_cfg["experiment_name"], logger_cfg.get("artifact_location"))
    source = get_run(client, run_id)
    ckpt = run_checkpoint(client, source, dst)
    if needs_model:
        check_logged_model(client, run_id)
    tags = {ROLE_TAG: "evaluate", EVALUATES_TAG: run_id, PARENT_TAG: run_id,
            RUN_NAME_TAG: f"evaluate {source.info.run_name}", **git_tags()}
    where = f"experiment {source.info.experiment_id}, where the evaluation of run {run_id} is recorded"
    with refusals_explained(uri, logger_cfg["experiment_name"], where):
        run = client.create_run(source.info.experiment_id, tags=tags)
    client.log_param(run.info.run_id, "source_checkpoint", f"runs:/{run_id}/{CKPT_DIR}/{ckpt.name}")
    ev = EvaluationRun(client, run.info.run_id, ckpt, run_id,
                       run_url(uri, source.info.experiment_id, run.info.run_id), uri,
                       experiment_id=source.info.experiment_id)
    with ending(client, ev.run_id):
        yield ev
