"""A Hydra multirun as one parent run in MLflow, its jobs nested under it, compared at the end.

Hydra callbacks (``hydra.callbacks`` in ``conf/train.yaml``): ``SweepParentRun`` opens the parent
before the jobs launch; afterwards ``SweepChampion`` moves the registry alias ``champion`` to the
best job's model version, and ``SweepComparison`` compares the jobs' runs into the parent.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from mnist_mlp import console
from mnist_mlp.errors import UserError, exit_on_user_error
from mnist_mlp.tracking import comparison, registry
from mnist_mlp.tracking.record import (
    FAILURE_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SWEEP_DIR_TAG,
    SWEEP_KEYS_TAG,
    git_tags,
    swept_keys,
)
from mnist_mlp.tracking.store import open_store, refusals_explained
from mnist_mlp.tracking.views import ensure

log = logging.getLogger(__name__)


def find_sweep_parent(client: Any, experiment_id: str, sweep_dir: str) -> Any | None:
    """The parent run the Hydra callback opened for this sweep folder, newest first."""
    quoted = sweep_dir.replace("'", "\\'")
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{SWEEP_DIR_TAG}` = '{quoted}' and tags.`{ROLE_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


class SweepParentRun(HydraCallback):
    """Hydra callback: before a multirun launches, prepare the store and open one parent run.

    Preparing here, once, keeps parallel jobs (``hydra/launcher=joblib``) from racing on a fresh
    SQLite store. Jobs find the parent by the sweep folder (tag ``sweep.dir``), so any launcher
    works. The parent ends FINISHED after the sweep, or at exit with the worst status of its jobs.
    """

    def __init__(self) -> None:
        self.client: Any = None
        self.run_id: str | None = None
        self.local = True  # the jobs are processes of this machine that end with the sweep

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        lcfg = config.get("logger")
        if not lcfg or "tracking_uri" not in lcfg:
            return
        overrides = list(config.hydra.overrides.task)
        keys = swept_keys(overrides)
        swept = [o for o in overrides if o.split("=", 1)[0] in set(keys)]
        tags = {ROLE_TAG: "sweep", SWEEP_DIR_TAG: str(config.hydra.sweep.dir),
                SWEEP_KEYS_TAG: ",".join(keys), **git_tags()}
        with exit_on_user_error():  # the same words and exit status as train.py's
            self.client, experiment_id = open_store(
                lcfg.tracking_uri, lcfg.experiment_name, lcfg.get("artifact_location"))
            with refusals_explained(lcfg.tracking_uri, lcfg.experiment_name):
                run = self.client.create_run(
                    experiment_id, run_name="sweep " + (" ".join(swept) or "(no swept keys)"),
                    tags=tags)
        try:  # an experiment from before the saved view of the runs table gets it now
            ensure(self.client, experiment_id)
        except Exception as err:  # noqa: BLE001  (a view is not worth stopping a sweep for)
            log.warning("The runs table's saved view was not set on the experiment: %s", err)
        self.run_id = run.info.run_id
        self.local = "submitit" not in str(OmegaConf.select(config, "hydra.launcher._target_",
                                                            default=""))
        atexit.register(self._end_if_open)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id is not None:
            self._end(self._children_status() or "FINISHED")

    def _children(self) -> list[Any]:
        run = self.client.get_run(self.run_id)
        return self.client.search_runs(
            [run.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.run_id}'"
        )

    def _children_status(self) -> str | None:
        statuses = {c.info.status for c in self._children()}
        return next((s for s in ("KILLED", "FAILED") if s in statuses), None)

    def _end_if_open(self) -> None:
        if self.run_id and self.client.get_run(self.run_id).info.status == "RUNNING":
            if self.local:
                self._close_orphans()
            self._end(self._children_status() or "FAILED")

    def _close_orphans(self) -> None:
        """The runs of jobs that ended with this sweep before they could close them, KILLED.

        A job's user error in a joblib sweep ends the whole pool: joblib kills the jobs beside it
        mid-training, and their runs would stay RUNNING for good. Not for Slurm's jobs, which may
        run on after this process (a Ctrl-C of the sweep); the Slurm launcher closes its own.
        """
        for child in self._children():
            if child.info.status != "RUNNING":
                continue
            with contextlib.suppress(Exception):
                self.client.set_tag(child.info.run_id, FAILURE_TAG,
                                    "Stopped with its sweep, before the job ended: another job's "
                                    "error (printed by the sweep) ended the sweep's processes.")
                self.client.set_terminated(child.info.run_id, "KILLED")

    def _end(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            with contextlib.suppress(Exception):
                self.client.set_terminated(self.run_id, status)


class SweepComparison(HydraCallback):
    """Hydra callback: at the end of a multirun, compare its runs into the sweep's parent run, and
    end the sweep's output with its summary (the best run, ``comparison.html``, the parent run).

    Listed after ``mlflow_sweep`` in ``conf/train.yaml``: Hydra calls ``on_multirun_end`` in reverse
    order, so this runs while the parent is still open. A failure here is logged, never raised:
    the sweep's own runs are already recorded.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        lcfg = config.get("logger")
        if not lcfg or "tracking_uri" not in lcfg:
            return
        sweep_dir = str(config.hydra.sweep.dir)
        try:
            client, experiment_id = comparison.store(lcfg)
            parent = find_sweep_parent(client, experiment_id, sweep_dir)
            if parent is None:
                log.warning("No sweep parent run tagged %s=%s: comparison skipped.", SWEEP_DIR_TAG,
                            sweep_dir)
                return
            compared = comparison.compare_runs(
                client, experiment_id, [parent.info.run_id], Path(sweep_dir) / comparison.ARTIFACT_DIR,
                config.report.digits)
            console.summary([("Sweep", f"{parent.info.run_name} in {sweep_dir}"),
                             *compared.summary(str(lcfg.tracking_uri), experiment_id)])
        except UserError as err:
            log.warning("Sweep comparison skipped: %s", err)
        except Exception:  # noqa: BLE001
            log.exception("Sweep comparison failed; the sweep's runs are recorded as they are.")


class SweepChampion(HydraCallback):
    """Hydra callback: at the end of a multirun, alias ``champion`` on its best run's version.

    Only with ``logger.registered_model_name`` (each run's model is then a version of it). Best
    by ``optimized_metric`` in the direction of the best-checkpoint callback's ``mode``; the
    parent run is tagged ``mnist_mlp.champion=models:/<name>/<version>``. Listed last in
    ``conf/train.yaml``, so it ends first and the comparison already shows the alias. A failure
    is logged, never raised: the sweep's runs are recorded.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        lcfg = config.get("logger")
        name = lcfg.get("registered_model_name") if lcfg else None
        if not name:
            return
        mode = OmegaConf.select(config, "callbacks.model_checkpoint.mode", default="max")
        try:
            client, experiment_id = comparison.store(lcfg)
            parent = find_sweep_parent(client, experiment_id, str(config.hydra.sweep.dir))
            if parent is None:
                log.warning("No sweep parent run: alias %s not set.", registry.CHAMPION)
                return
            champion = registry.set_champion(
                client, comparison.sweep_children(client, parent), name,
                str(config.optimized_metric), mode, config.get("test_ckpt") == "best")
            if champion is not None:
                client.set_tag(parent.info.run_id, registry.CHAMPION_TAG, champion.uri)
                log.info("Registered model %s: alias %s is version %s (run %s, %s %.4f); serve it "
                         "with `make serve MODEL=models:/%s@%s`.", name, registry.CHAMPION,
                         champion.version, champion.run_id, champion.metric, champion.score,
                         name, registry.CHAMPION)
        except Exception:  # noqa: BLE001
            log.exception("Setting the %s alias failed; the sweep's runs are recorded as they are.",
                          registry.CHAMPION)
