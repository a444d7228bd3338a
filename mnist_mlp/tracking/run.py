"""The MLflow run of one training job: created with its params and tags, filled after testing, closed."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_mlp import ddp, faults, report
from mnist_mlp.config import hydra_config
from mnist_mlp.report.summary import headline
from mnist_mlp.tracking import offline
from mnist_mlp.tracking.datasets import log_datasets
from mnist_mlp.tracking.model import model_payload
from mnist_mlp.tracking.record import (
    BEST_CKPT_TAG,
    CKPT_DIR,
    FAILURE_TAG,
    NOTE_TAG,
    PARENT_TAG,
    REPORT_DIR,
    ROLE_TAG,
    RUN_NAME_TAG,
    SWEEP_DIR_TAG,
    SWEEP_JOB_TAG,
    SWEEP_KEYS_TAG,
    config_params,
    git_tags,
    job_run_name,
    overrides_yaml,
    single_run_name,
)
from mnist_mlp.tracking.store import end_run, ending, log_batch, open_store, refusals_explained
from mnist_mlp.tracking.sweep import find_sweep_parent
from mnist_mlp.tracking.ui import run_url

log = logging.getLogger(__name__)


def _mlflow_logger(trainer: Any) -> Any | None:
    """The run's MLFlowLogger; None on DDP ranks other than 0, which record nothing.

    Lightning's DDP re-launches train.py once per extra rank, each running ``runner.run`` from the
    top; only rank 0 owns the run, as Lightning's logger itself logs from rank 0 only.
    """
    from lightning.pytorch.loggers import MLFlowLogger

    if not ddp.is_rank_zero():
        return None
    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


@dataclass
class TrackedRun:
    """The MLflow run of one training job; ``None`` logger (``~logger``) makes it a no-op."""

    cfg: DictConfig
    trainer: Any
    datamodule: Any
    logger: Any | None
    client: Any = None
    run_id: str | None = None
    experiment_id: str | None = None

    def start(self) -> None:
        """Check the store, create the run with its name and tags, log params and config files."""
        if self.logger is None:
            return
        lcfg = self.cfg.logger
        self.client, self.experiment_id = open_store(
            lcfg.tracking_uri, lcfg.experiment_name, lcfg.get("artifact_location")
        )
        if lcfg.get("run_id"):  # a requeued Slurm job continues its run (mnist_mlp.slurm.requeue)
            self._continue()
            return
        tags = {ROLE_TAG: "train", **git_tags(), **self._data_tags(), **self._sweep_tags(
            self.experiment_id)}
        self.logger.tags = {**tags, **(self.logger.tags or {})}
        self.logger.owned = True  # ended by tracked_run's ``ending``, not after fit (tracking.logger)
        with refusals_explained(lcfg.tracking_uri, lcfg.experiment_name):
            self.run_id = self.logger.run_id  # MLFlowLogger creates the run here
        self.client = self.logger.experiment  # one client: the logger's survives an outage
        log_batch(self.client, self.run_id, params=config_params(self.cfg))
        log_datasets(self.client, self.run_id, self.datamodule)
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "config.yaml").write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
            Path(tmp, "overrides.yaml").write_text(overrides_yaml())
            self.client.log_artifacts(self.run_id, tmp)
        log.info("MLflow run %s in %s", self.run_id, lcfg.tracking_uri)

    def provenance(self, tested: report.TestedWeights) -> report.Provenance:
        """The report's header: this run (none with ``~logger``), the code, data, weights."""
        if self.run_id is None:
            return provenance(self.datamodule, tested)
        uri = str(self.cfg.logger.tracking_uri)
        return provenance(self.datamodule, tested, self.run_id,
                          run_url(uri, str(self.experiment_id), self.run_id), uri)

    def _continue(self) -> None:
        """Reopen the run ``logger.run_id`` names: it already holds this job's params, data and
        config files (a resumed job's ``ckpt_path`` would contradict its param), so only the
        configured tags are added; the run is RUNNING again until ``tracked_run`` ends it."""
        lcfg = self.cfg.logger
        self.logger.owned = True
        with refusals_explained(lcfg.tracking_uri, lcfg.experiment_name):
            self.run_id = self.logger.run_id
        self.client = self.logger.experiment
        self.client.update_run(self.run_id, status="RUNNING")
        for key, value in (self.logger.tags or {}).items():
            self.client.set_tag(self.run_id, key, value)
        log.info("MLflow run %s continues in %s", self.run_id, lcfg.tracking_uri)

    def rank_died(self, why: str) -> None:
        """Another DDP rank exited non-zero and Lightning's launcher is about to SIGKILL this one."""
        last = faults.last_epoch_checkpoint(self.trainer)
        resume = (f" Resume from the last epoch's checkpoint with: python train.py ckpt_path={last} "
                  f"hydra.run.dir={self.trainer.default_root_dir}" if last else "")
        print(f"error: {why}; Lightning stops every DDP rank when one dies, and the MLflow run "
              f"{self.run_id} is marked FAILED. That rank's own output says why (nothing, if the "
              f"system killed it: out of memory?).{resume}", file=sys.stderr, flush=True)
        self.client.set_tag(self.run_id, FAILURE_TAG, why)
        end_run(self.client, self.run_id, "FAILED")

    def _data_tags(self) -> dict[str, str]:
        return {f"data.md5.{k}": v for k, v in self.datamodule.checksums().items()}

    def _sweep_tags(self, experiment_id: str) -> dict[str, str]:
        """Name, hydra folders and, for a multirun job, the sweep parent and job number."""
        from hydra.types import RunMode

        hc = hydra_config()
        tags: dict[str, str] = {}
        if self.cfg.logger.get("run_name"):
            tags[RUN_NAME_TAG] = str(self.cfg.logger.run_name)
        if hc is None:
            return tags
        tags["hydra.output_dir"] = str(hc.runtime.output_dir)
        if hc.mode != RunMode.MULTIRUN:
            # MLflow's random names repeat here: seed_everything seeds the generator they come from.
            tags.setdefault(RUN_NAME_TAG, single_run_name(list(hc.overrides.task),
                                                          Path(hc.runtime.output_dir).name))
            return tags
        sweep_dir = str(hc.sweep.dir)
        tags.update({SWEEP_DIR_TAG: sweep_dir, SWEEP_JOB_TAG: str(hc.job.num)})
        parent = find_sweep_parent(self.client, experiment_id, sweep_dir)
        keys = parent.data.tags.get(SWEEP_KEYS_TAG, "").split(",") if parent else []
        if parent is not None:
            tags[PARENT_TAG] = parent.info.run_id
        tags.setdefault(RUN_NAME_TAG, job_run_name(list(hc.overrides.task), [k for k in keys if k]))
        return tags

    def log_outputs(self, report_dir: str | os.PathLike | None,
                    report_written: Callable[[], Any] | None = None) -> None:
        """Best checkpoint, description and the network as an MLflow model, then the report files
        (``report_written`` returns once they are written: they may be drawn in a worker process
        meanwhile, ``mnist_mlp.report.background``)."""
        if self.logger is None:
            return
        callback = self.trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback else ""
        if best and Path(best).is_file():
            self.client.log_artifact(self.run_id, best, CKPT_DIR)
            self.client.set_tag(self.run_id, BEST_CKPT_TAG, f"{CKPT_DIR}/{Path(best).name}")
        module = self.trainer.lightning_module
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
        self.client.set_tag(self.run_id, NOTE_TAG, headline(
            metrics, module.test_results, report.train_hyperparameters(self.cfg)))
        offline.log_model(self.client, self.run_id, model_payload(module, self.datamodule),
                          getattr(self.logger, "registered_model_name", None))
        if report_written is not None:
            report_written()
        if report_dir and Path(report_dir).is_dir():
            self.client.log_artifacts(self.run_id, str(report_dir), REPORT_DIR)

    def log_timings(self, metrics: Mapping[str, float]) -> None:
        """The run's phases (``mnist_mlp.speed.PhaseClock.metrics``): ``time/<phase>_s``, and the
        resident and peak memory at each phase's end, ``system/phase_memory/<phase>_mb`` and
        ``_peak_mb``."""
        if self.logger is None:
            return
        log_batch(self.client, self.run_id, metrics=dict(metrics))


def provenance(datamodule: Any, tested: report.TestedWeights, run_id: str | None = None,
               url: str | None = None, store: str | None = None) -> report.Provenance:
    """What a report is a report of: the run (if any), the git state, the verified MNIST MD5s."""
    git = git_tags()
    return report.Provenance(
        run_id=run_id, run_url=url, store=store, git_commit=git["git.commit"],
        git_dirty={"true": True, "false": False}.get(git.get("git.dirty", "")),
        data_md5=datamodule.checksums(), tested=tested)


@contextlib.contextmanager
def tracked_run(cfg: DictConfig, trainer: Any, datamodule: Any) -> Iterator[TrackedRun]:
    """The MLflow run around fit and test, closed as FINISHED, FAILED or KILLED.

    Lightning closes the run itself when fit or test raise, always as FAILED; a SIGTERM that the
    trainer saw without raising still makes the run KILLED. A successful fit leaves it open
    (``tracking.logger``), so the system-metrics monitor runs until the outputs are logged.
    """
    run = TrackedRun(cfg, trainer, datamodule, _mlflow_logger(trainer))
    run.start()
    lg = run.logger
    on = lg is not None and getattr(lg, "system_metrics", False)  # lg: rank 0 only
    monitor = (system_metrics(run.run_id, cfg.logger.tracking_uri, lg.system_metrics_interval)
               if on else contextlib.nullcontext())
    rank_death = (ddp.on_rank_death(run.rank_died) if run.run_id and trainer.world_size > 1
                  else contextlib.nullcontext())
    try:
        with ending(run.client, run.run_id, killed=lambda: trainer.received_sigterm), monitor, \
                rank_death:
            yield run
    finally:
        offline.close(run.client)  # sends what a server outage kept back, or says how to


@contextlib.contextmanager
def system_metrics(run_id: str, tracking_uri: str, interval: float) -> Iterator[None]:
    """MLflow's system metrics (``system/...``: CPU, memory, disk, network, NVIDIA GPUs) sampled
    every ``interval`` s while the block runs.

    ``mlflow.start_run(log_system_metrics=True)`` starts the monitor only for the fluent active run,
    which ``MLFlowLogger`` never creates; the monitor itself takes a run id, so it is started here.
    Its thread stops, and its last samples are written, before the block's caller closes the run.
    It also stops by itself once the run is no longer RUNNING, which is why ``MlflowLogger`` leaves
    the run open after ``fit``. A monitor that cannot start costs the run nothing but a warning.
    """
    monitor = None
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, tracking_uri=tracking_uri)
        monitor.start()
    except Exception as err:  # noqa: BLE001  (psutil missing, ...: train anyway)
        log.warning("System metrics are not recorded: %s", err)
        monitor = None
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()
