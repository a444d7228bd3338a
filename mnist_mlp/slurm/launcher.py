"""The Slurm launcher of ``conf/hydra/launcher/submitit_slurm.yaml``, and its check before a sweep."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.experimental.callback import Callback as HydraCallback
from hydra.utils import get_class
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as PluginLauncher
from omegaconf import DictConfig, OmegaConf

from mnist_mlp.errors import UserError, exit_on_user_error

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 120


@dataclass
class Unfinished:
    """A sweep job that ended without a result: its number, swept values, Slurm job and why."""

    num: int
    name: str
    job: Any
    state: str
    why: str

    def line(self, run: str) -> str:
        """One line: which job, how it ended (its MLflow run in brackets), why, where its log is."""
        why = f": {self.why.rstrip('.')}" if self.why else ""
        return (f"error: sweep job #{self.num} ({self.name}), Slurm job {self.job.job_id}, ended "
                f"{self.state} ({run}){why}. Log: {self.job.paths.stderr}")


class SlurmLauncher(PluginLauncher):
    """hydra-submitit-launcher's Slurm launcher, made to end and to report on a real cluster.

    The plugin's ``launch`` waits job by job and raises the first failure's traceback while later
    jobs still run; without Slurm accounting it never saw a cancelled job end and waited forever.
    This one reads states from ``states.JobStates``, waits for every job, and then prints one
    ``error:`` line per job that did not finish (its Slurm state, the job's own ``error:`` line or
    exception, its MLflow run) and exits 1; an MLflow run such a job left RUNNING (killed before
    it could close it) is closed. The sweep's parent run then ends with its worst job's status
    (``tracking.sweep.SweepParentRun``). Submission is the plugin's, unchanged.
    """

    @classmethod
    def check_cluster(cls, params: dict[str, Any]) -> None:
        """``sbatch --test-only`` of the job script this launcher would submit: a partition that
        does not exist, resources beyond its limits, or no reachable Slurm stop the sweep here,
        before anything is recorded (``LauncherCheck``)."""
        for program in ("sbatch", "srun"):
            if shutil.which(program) is None:
                raise UserError(
                    f"hydra/launcher=submitit_slurm needs Slurm's {program}, which is not on PATH: "
                    "run the sweep on a machine of the Slurm cluster (a login node), or on this "
                    "machine with hydra/launcher=joblib or submitit_local; nothing was submitted "
                    "or recorded."
                )
        with tempfile.TemporaryDirectory() as tmp:
            executor = _executor(cls._EXECUTOR, {**params, "submitit_folder": tmp})
            # Private, and the only way to get the exact sbatch file submitit would submit.
            script = Path(tmp, "check.sh")
            script.write_text(executor._executor._make_submission_file_text("true", "check"))
            try:
                done = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True,
                                      text=True, timeout=CHECK_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise UserError(_refused(f"no answer in {CHECK_TIMEOUT_S} s")) from None
        if done.returncode:
            said = "; ".join(line.strip().removeprefix("sbatch: error: ")
                             for line in done.stderr.splitlines() if line.strip())
            raise UserError(_refused(said or f"exit code {done.returncode}"))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from mnist_mlp.slurm.states import watch

        jobs = self._submit(job_overrides, initial_job_idx)
        watch(jobs)
        for job in jobs:
            job.wait()
        outcomes = [self._outcome(job, list(overrides), num) for num, (job, overrides)
                    in enumerate(zip(jobs, job_overrides, strict=True), initial_job_idx)]
        unfinished = [o for o in outcomes if isinstance(o, Unfinished)]
        if unfinished:
            self._report(unfinished, len(jobs))
            sys.exit(1)
        return outcomes

    def _submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Any]:
        """The plugin's submission (hydra-submitit-launcher 1.2's ``launch`` up to ``map_array``)."""
        assert self.config is not None
        executor = _executor(self._EXECUTOR, self.params)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {self.config.hydra.sweep.dir}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                               Singleton.get_state()))
        return executor.map_array(self, *zip(*job_params, strict=True))

    def _outcome(self, job: Any, overrides: list[str], num: int) -> JobReturn | Unfinished:
        """The job's ``JobReturn``, or why it has none."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        state = job.state
        unfinished = Unfinished(num, self._name(overrides), job, state, "")
        if job.paths.result_pickle.exists() or state == "COMPLETED":
            try:
                ret = job.results()[0]
            except (FailedJobError, UncompletedJobError) as err:
                unfinished.why = _last_line(str(err))
                return unfinished
            if ret.status != JobStatus.FAILED:
                return ret
            error = ret._return_value  # the task's exception; ``return_value`` would raise it
            unfinished.why = f"{type(error).__name__}: {error}"
            return unfinished
        unfinished.why = _job_error(job.paths.stderr)
        return unfinished

    def _name(self, overrides: list[str]) -> str:
        from mnist_mlp.tracking.record import job_run_name, swept_keys

        assert self.config is not None
        return job_run_name(overrides, swept_keys(list(self.config.hydra.overrides.task)))

    def _report(self, unfinished: list[Unfinished], total: int) -> None:
        from mnist_mlp.slurm.runs import SweepRuns

        assert self.config is not None
        runs = SweepRuns.open(self.config)
        for job in unfinished:
            print(job.line(runs.settle(job.num, job.state, job.job.job_id)), file=sys.stderr)
        finished = total - len(unfinished)
        parent = runs.parent_id()
        if finished and parent:
            print(f"{finished} of {total} sweep jobs finished, under MLflow run {parent}; compare "
                  f"them with: python compare.py runs={parent}", file=sys.stderr)


def _executor(cluster: str, params: dict[str, Any]) -> Any:
    """A submitit ``AutoExecutor`` set up from the launcher's keys, as the plugin sets it up."""
    import submitit

    params = dict(params)
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init[f"{cluster}_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster=cluster, **init)
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in generic else f"{cluster}_{k}": v for k, v in params.items()})
    return executor


def _refused(said: str) -> str:
    if any(words in said for words in ("contact", "configuration source", "no answer")):
        return (f"hydra/launcher=submitit_slurm: Slurm cannot be reached from here (sbatch "
                f"--test-only: {said}). Check that the cluster is up (`sinfo`) and that this machine "
                "is one of its login nodes (its slurm.conf, or SLURM_CONF); nothing was submitted or "
                "recorded.")
    return (f"hydra/launcher=submitit_slurm: Slurm refuses the sweep's jobs (sbatch --test-only: "
            f"{said}). Check hydra.launcher.partition (`sinfo` lists the partitions) and the "
            "resources asked for (hydra.launcher.timeout_min, cpus_per_task, mem_gb, gpus_per_node, "
            "account, qos); nothing was submitted or recorded.")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and set(line.strip()) != {"-"}]
    return next((line for line in reversed(lines) if not line.startswith(("You can check", "or at",
                                                                           "- /"))), "")[:500]


def _job_error(stderr: Path) -> str:
    """The job's own one-paragraph ``error: ...`` line (train.py's), without the prefix."""
    try:
        lines = stderr.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return errors[-1][:500] if errors else ""


class LauncherCheck(HydraCallback):
    """Hydra callback, listed before ``mlflow_sweep``: a launcher's own check of its cluster runs
    before the sweep's parent run is created, so a sweep Slurm would refuse records nothing.

    Launchers without a ``check_cluster`` class method (basic, joblib, submitit_local) pass.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.get("launcher")
        target = launcher.get("_target_") if launcher is not None else None
        try:
            check = getattr(get_class(target), "check_cluster", None) if target else None
        except Exception:  # noqa: BLE001  (Hydra reports a launcher it cannot load, in its words)
            return
        if check is None:
            return
        params = OmegaConf.to_container(launcher, resolve=True)
        params.pop("_target_", None)
        with exit_on_user_error():  # the same words and exit status as train.py's
            check(params)
