"""The comparison's MLflow side: which runs, their predictions and tags, and where it is recorded.

``compare.py`` compares given run ids, a sweep's parent run (its training children), or by default
the latest sweep in the experiment; ``tracking.sweep.SweepComparison`` does it for the sweep that
just ended. The numbers and files are ``mnist_mlp.report.comparison``'s. A sweep's comparison is
logged as artifacts ``comparison/`` of its parent run; loose run ids get a new run
(``mnist_mlp.role=compare``). Each run's registered model version, and which holds the alias
``champion``, come from the registry (``tracking.registry``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_mlp.errors import UserError
from mnist_mlp.report.comparison import Comparison, RunPredictions, compare, read_predictions
from mnist_mlp.report.comparison_files import write_comparison
from mnist_mlp.tracking import registry
from mnist_mlp.tracking.record import PARENT_TAG, ROLE_TAG, RUN_NAME_TAG, git_tags
from mnist_mlp.tracking.store import get_run, open_store

PREDICTIONS = "report/predictions.csv"
ARTIFACT_DIR = "comparison"
COMPARES_TAG = "mnist_mlp.compares"
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def latest_sweep(client: Any, experiment_id: str) -> Any:
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise UserError(
            "There is no sweep in this experiment to compare: run one (`python train.py -m "
            "seed=1,2`) or give run ids (`python compare.py 'runs=[<id>,<id>]'`)."
        )
    return runs[0]


def sweep_children(client: Any, parent: Any) -> list[Any]:
    """The sweep's training runs that finished (failed or killed ones have no complete test)."""
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}' and tags.`{ROLE_TAG}` = 'train'",
        order_by=["attributes.start_time ASC"],
    )
    return [r for r in runs if r.info.status == "FINISHED"]


def resolve(client: Any, experiment_id: str, run_ids: Sequence[str]) -> tuple[list[Any], Any | None]:
    """The runs to compare and the sweep parent to record into (``None``: loose runs)."""
    if len(run_ids) > 1:
        return [get_run(client, r, "runs") for r in run_ids], None
    parent = get_run(client, run_ids[0], "runs") if run_ids else latest_sweep(client, experiment_id)
    if parent.data.tags.get(ROLE_TAG) != "sweep":
        return [parent], None
    children = sweep_children(client, parent)
    if not children:
        raise UserError(
            f"Sweep run {parent.info.run_id} ({parent.info.run_name}) has no finished training "
            "runs to compare."
        )
    return children, parent


def load(client: Any, run: Any, tmp: str) -> RunPredictions:
    """A run's predictions.csv (downloaded), params and data MD5 tags."""
    rid = run.info.run_id
    try:
        path = client.download_artifacts(rid, PREDICTIONS, str(Path(tmp) / rid))
    except Exception:  # noqa: BLE001  (MLflow raises different types per store)
        raise UserError(
            f"Run {rid} ({run.info.run_name}) has no {PREDICTIONS} artifact: it was not tested "
            "(failed, killed, or trained without a test). Leave it out of the comparison."
        ) from None
    index, label, pred = read_predictions(path)
    md5 = {k.removeprefix("data.md5."): v for k, v in run.data.tags.items() if k.startswith("data.md5.")}
    version = next(iter(registry.run_versions(client, rid)), None)
    registered = ({"registered_name": version.name, "registered_version": str(version.version),
                   "champion": registry.CHAMPION in (version.aliases or [])} if version else {})
    return RunPredictions(rid, run.info.run_name or rid, index, label, pred, dict(run.data.params),
                          md5, **registered)


@dataclass(frozen=True)
class Compared:
    """A comparison done: the run it was logged to (``artifact_dir`` of it), its files, its numbers."""

    target: str
    files: dict[str, Path]
    comparison: Comparison
    artifact_dir: str = ARTIFACT_DIR

    def summary(self, tracking_uri: str, experiment_id: str) -> list[tuple[str, str]]:
        """What ``compare.py`` and a sweep end with: the best run, the files, the MLflow run."""
        from mnist_mlp.tracking.ui import address

        best, n = self.comparison.best, len(self.comparison.rows)
        low, high = best.acc_ci
        which = ("Best run", f"{best.run.name}, best of {n} by test accuracy") if n > 1 else (
            "Run", best.run.name)
        return [
            (which[0], f"{which[1]}: accuracy {best.accuracy:.4f} [{low:.4f}, {high:.4f}] (95% "
                       f"interval), macro F1 {best.f1_macro:.4f}"),
            ("Comparison", str(self.files["comparison.html"])),
            ("MLflow run", f"{address(tracking_uri, experiment_id, self.target)} "
                           f"(artifacts {self.artifact_dir}/)"),
        ]


def compare_runs(client: Any, experiment_id: str, run_ids: Sequence[str], out_dir: str | Path,
                 digits: int = 4) -> Compared:
    """Compare, write the files into ``out_dir`` and log them into a run (``Compared.target``)."""
    runs, parent = resolve(client, experiment_id, list(run_ids))
    quiet = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"  # one bar per downloaded file otherwise
    try:
        with tempfile.TemporaryDirectory() as tmp:
            predictions = [load(client, r, tmp) for r in runs]
    finally:
        if quiet is None:
            os.environ.pop(_PROGRESS_BAR)
        else:
            os.environ[_PROGRESS_BAR] = quiet
    title = f"Comparison of {parent.info.run_name}" if parent else f"Comparison of {len(runs)} runs"
    result = compare(predictions)
    files = write_comparison(out_dir, result, title, digits)
    target = parent.info.run_id if parent else _new_run(client, runs)
    client.log_artifacts(target, str(out_dir), ARTIFACT_DIR)
    return Compared(target, files, result)


def _new_run(client: Any, runs: Sequence[Any]) -> str:
    ids = ",".join(r.info.run_id for r in runs)
    tags = {ROLE_TAG: "compare", COMPARES_TAG: ids[:5000], **git_tags(),
            RUN_NAME_TAG: f"compare {len(runs)} runs"}
    run = client.create_run(runs[0].info.experiment_id, tags=tags)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def store(logger_cfg: Mapping[str, Any]) -> tuple[Any, str]:
    """The client and experiment id of the ``logger`` config's store."""
    return open_store(logger_cfg["tracking_uri"], logger_cfg["experiment_name"],
                      logger_cfg.get("artifact_location"))
