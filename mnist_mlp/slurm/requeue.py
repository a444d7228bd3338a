"""A sweep job that Slurm requeued resumes from its own ``last.ckpt``, in its own MLflow run.

Slurm requeues a job on ``scontrol requeue``, on preemption (``PreemptMode=REQUEUE``) and, through
submitit, shortly before its time limit: submitit catches the signal it asked Slurm for
(``--signal=USR2@signal_delay_s``), calls the launcher's ``checkpoint()``, which hands back the same
Hydra job (``DelayedSubmission``), and requeues it while ``max_num_timeout`` allows. Every one of
these runs the job's Hydra task again from the top, in the same sweep folder, with Slurm's
``SLURM_RESTART_COUNT`` set. That is the moment this module acts on: the run continues from the
checkpoint of its last finished epoch, which resumes exactly (random state and data order are in
it; README "When things go wrong"), and the MLflow run of the first start is continued, not a
second one created.

Why submitit's requeue and not Lightning's ``SLURMEnvironment(auto_requeue=True)``: Lightning
saves an ``hpc_ckpt_N.ckpt`` of the state at the signal, mid-epoch, and resumes from it, which
does not end bit-exactly as an uninterrupted run; it acts only on its own signal (SIGUSR1),
not on the SIGTERM of ``scontrol requeue`` or of a preemption, where nothing would be saved; and
submitit already handles the time-limit signal of the jobs it submits. An epoch of this MLP takes
seconds, so resuming from the last epoch's checkpoint loses little. Lightning's handler stays
installed (it is its default under Slurm) and is harmless: a SIGUSR1 only adds an unused
``hpc_ckpt``, since an explicit ``ckpt_path`` wins over it.

The SIGTERM that stops the first start (``scontrol requeue``, preemption) ends its run KILLED, as
any SIGTERM does (``tracking.store.ending``); the restart sets it RUNNING again and it ends
FINISHED, tagged ``slurm.restarts``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, open_dict

from mnist_mlp.errors import UserError

log = logging.getLogger(__name__)

RESTART_ENV = "SLURM_RESTART_COUNT"
RESTARTS_TAG = "slurm.restarts"


def restarts() -> int:
    """How often Slurm has requeued the job this process runs in (0: first start, or no Slurm)."""
    try:
        return int(os.environ.get(RESTART_ENV, "0") or 0)
    except ValueError:
        return 0


def resume_if_requeued(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``ckpt_path`` (the job's ``last.ckpt``) and ``logger.run_id`` (its run) set when
    this is a requeued sweep job; unchanged otherwise, or when ``ckpt_path`` was given."""
    from hydra.types import RunMode

    from mnist_mlp.config import hydra_config

    count, hc = restarts(), hydra_config()
    if not count or hc is None or hc.mode != RunMode.MULTIRUN or cfg.get("ckpt_path"):
        return cfg
    ckpt = last_checkpoint(cfg)
    run_id = _previous_run(cfg, str(hc.sweep.dir), hc.job.num)
    with open_dict(cfg):
        if ckpt is not None:
            cfg.ckpt_path = str(ckpt)
        if run_id is not None:
            cfg.logger.run_id = run_id
            cfg.logger.tags = {**(cfg.logger.get("tags") or {}), RESTARTS_TAG: str(count)}
    log.info("Requeued by Slurm (restart %d): resuming from %s in MLflow run %s", count,
             ckpt or "the start (no epoch had finished)", run_id or "(a new one)")
    return cfg


def last_checkpoint(cfg: DictConfig) -> Path | None:
    """The job's checkpoint of its last finished epoch (``callbacks.last_checkpoint``), if written."""
    callback = (cfg.get("callbacks") or {}).get("last_checkpoint")
    if callback is None:
        return None
    path = Path(str(callback.dirpath)) / f"{callback.filename}.ckpt"
    return path if path.is_file() else None


def _previous_run(cfg: DictConfig, sweep_dir: str, num: int) -> str | None:
    from mnist_mlp.slurm.runs import find_sweep_job
    from mnist_mlp.tracking.store import open_store

    lcfg = cfg.get("logger")
    if not lcfg or "tracking_uri" not in lcfg:
        return None
    try:
        client, experiment_id = open_store(lcfg.tracking_uri, lcfg.experiment_name,
                                           lcfg.get("artifact_location"))
    except UserError:
        return None  # the run's own store check says why, in its words
    run = find_sweep_job(client, experiment_id, sweep_dir, num)
    return run.info.run_id if run is not None else None
