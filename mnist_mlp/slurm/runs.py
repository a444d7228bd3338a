"""The MLflow runs of a Slurm sweep's jobs: found by sweep folder and job number, closed if left open."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from mnist_mlp.errors import UserError
from mnist_mlp.tracking.record import FAILURE_TAG, ROLE_TAG, SWEEP_DIR_TAG, SWEEP_JOB_TAG
from mnist_mlp.tracking.store import end_run, open_store
from mnist_mlp.tracking.sweep import find_sweep_parent

#: Slurm states of a job that was stopped from outside; its run, if left open, ends KILLED.
KILLED_STATES = frozenset({"CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE"})


def find_sweep_job(client: Any, experiment_id: str, sweep_dir: str, num: int | str) -> Any | None:
    """The training run of job ``num`` of the sweep in ``sweep_dir`` (tags ``sweep.dir``, ``sweep.job``)."""
    quoted = sweep_dir.replace("'", "\\'")
    runs = client.search_runs(
        [experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
        filter_string=(f"tags.`{SWEEP_DIR_TAG}` = '{quoted}' and tags.`{SWEEP_JOB_TAG}` = '{num}' "
                       f"and tags.`{ROLE_TAG}` = 'train'"),
    )
    return runs[0] if runs else None


@dataclass
class SweepRuns:
    """The sweep's store (none when ``logger`` is off or the store cannot be opened)."""

    client: Any
    experiment_id: str | None
    sweep_dir: str

    @classmethod
    def open(cls, config: DictConfig) -> SweepRuns:
        lcfg = config.get("logger")
        sweep_dir = str(config.hydra.sweep.dir)
        if not lcfg or "tracking_uri" not in lcfg:
            return cls(None, None, sweep_dir)
        try:
            client, experiment_id = open_store(lcfg.tracking_uri, lcfg.experiment_name,
                                               lcfg.get("artifact_location"))
        except UserError:
            return cls(None, None, sweep_dir)
        return cls(client, experiment_id, sweep_dir)

    def settle(self, num: int, state: str, job_id: str) -> str:
        """Job ``num``'s MLflow run, in words for the report; a run the job left RUNNING (it was
        killed before it could close it) is closed as KILLED or FAILED, saying why."""
        if self.client is None:
            return "no MLflow store"
        run = find_sweep_job(self.client, self.experiment_id, self.sweep_dir, num)
        if run is None:
            return "no MLflow run (the job stopped before training)"
        run_id, status = run.info.run_id, run.info.status
        if status != "RUNNING":
            return f"MLflow run {run_id} {status}"
        status = "KILLED" if state.split()[0] in KILLED_STATES else "FAILED"
        self.client.set_tag(run_id, FAILURE_TAG, f"Slurm job {job_id} ended {state} before the run "
                                                 "was closed")
        end_run(self.client, run_id, status)
        return f"MLflow run {run_id} closed as {status}"

    def parent_id(self) -> str | None:
        if self.client is None:
            return None
        parent = find_sweep_parent(self.client, self.experiment_id, self.sweep_dir)
        return parent.info.run_id if parent else None
