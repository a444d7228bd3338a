"""Sweeps on Slurm (``hydra/launcher=submitit_slurm``) against a real single-node cluster on loopback.

One cluster per session (fixture ``slurm``, tests/helpers/slurm.py: no accounting, as on a small
cluster without slurmdbd). Each sweep is ``train.py -m`` in a subprocess, as a user runs it on a
login node; submitit submits its jobs with ``sbatch`` and slurmd runs them. Two sweeps share the
work, as the file's time budget (a few minutes on two cores) allows: four jobs that finish, two
of them after a requeue mid-training; and three jobs of which two do not finish (one fails in
training, one is cancelled). A partition that does not exist is refused end to end; no Slurm,
and a controller that is down, through the same check in-process.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from mnist_mlp.tracking.record import FAILURE_TAG, PARENT_TAG, ROLE_TAG, SWEEP_DIR_TAG
from tests.helpers.configs import ROOT, compose_config, quiet, store_overrides
from tests.helpers.data import data_overrides, write_synthetic_mnist
from tests.helpers.processes import assert_one_paragraph, command, script_env

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

#: Epochs of the sweep with the requeued job: the requeue comes after the first epoch, so at least
#: one epoch is trained after the resume.
EPOCHS = 3
TIMEOUT_S = 240


@dataclass
class Sweep:
    """A finished ``train.py -m`` and what it recorded."""

    root: Path
    result: subprocess.CompletedProcess

    @property
    def dir(self) -> Path:
        return self.root / "multirun"

    @functools.cached_property
    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(f"sqlite:///{self.root}/mlruns/mlflow.db")

    def submitted(self) -> bool:
        """Whether the launcher has submitted: the sweep made its store before (test reads before
        that would race with its schema creation)."""
        return (self.dir / ".submitit").is_dir()

    def _search(self, role: str) -> list[Any]:
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        return self.client.search_runs(
            experiments, f"tags.`{SWEEP_DIR_TAG}` = '{self.dir}' and tags.`{ROLE_TAG}` = '{role}'")

    def parent(self) -> Any:
        (parent,) = self._search("sweep")
        return parent

    def job_runs(self) -> dict[int, Any]:
        return {int(r.data.tags["sweep.job"]): r for r in self._search("train")}

    def slurm_job(self, num: int) -> str:
        """The Slurm job id of sweep job ``num`` (Hydra's ``job.id``, set by the launcher from
        submitit's job environment)."""
        return str(OmegaConf.load(self.dir / str(num) / ".hydra" / "hydra.yaml").hydra.job.id)

    def tail(self) -> str:
        return (self.result.stdout[-2000:] + "\n---\n" + self.result.stderr[-4000:])


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    data_dir = tmp_path_factory.mktemp("slurm-mnist") / "data"
    return data_dir, write_synthetic_mnist(data_dir)


def _command(root: Path, mnist: tuple[Path, dict[str, str]], *overrides: str) -> list[str]:
    """A sweep on the test cluster; the jobs' own work kept small (their report's bootstrap, no
    system-metrics sampling): what is tested is what happens around them."""
    return command("train.py", "-m", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
                   *data_overrides(*mnist), *store_overrides(root, fresh=True), *quiet(),
                   "report.bootstrap_resamples=50", "logger.system_metrics=false", *overrides)


def _env(slurm: Any, **extra: str) -> dict[str, str]:
    """The cluster's environment; the jobs inherit it (sbatch exports it), the tests' callbacks
    (``tests.helpers.slow_epochs``) importable."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return script_env({**slurm.env, "PYTHONPATH": path, **extra})


def _start(root: Path, mnist: Any, slurm: Any, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(_command(root, mnist, *overrides), cwd=root, env=_env(slurm),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(root: Path, proc: subprocess.Popen, kill: bool = False) -> Sweep:
    """The sweep's outcome once it ends (``kill``: at once, after a failed step of the test)."""
    try:
        if kill:
            proc.kill()
        out, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    (root / "sweep.log").write_text(f"{out}\n--- stderr:\n{err}")  # kept with pytest's tmp folders
    return Sweep(root, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))


def _wait(what: str, ready: Callable[[], Any], proc: subprocess.Popen | None = None) -> Any:
    deadline = time.monotonic() + TIMEOUT_S
    while not (found := ready()):
        assert proc is None or proc.poll() is None, f"the sweep ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {TIMEOUT_S} s"
        time.sleep(0.3)
    return found


def _slow(seconds: float, hold: Path | None = None) -> list[str]:
    where = [f"+callbacks.slow.hold={hold}"] if hold else []
    return ["+callbacks.slow._target_=tests.helpers.slow_epochs.SleepAtEpochEnd",
            f"+callbacks.slow.seconds={seconds}", *where]


# --- the two sweeps, run at once --------------------------------------------------------------


@pytest.fixture(scope="module")
def sweeps(slurm, mnist, tmp_path_factory) -> tuple[Sweep, Sweep]:
    """Both sweeps, started together (the cluster runs their six jobs at once):

    * ``seed=1,2,1,1``: four jobs that finish, each sleeping a little after every epoch. After its
      first epoch, job #2 is requeued (``scontrol requeue``: Slurm sends SIGTERM and starts it
      again), and job #3 gets the signal Slurm sends before a time limit or a preemption (USR2,
      ``--signal`` of submitit's job script), on which submitit calls the launcher's
      ``checkpoint()`` and requeues the job itself. Job #0, the same settings never interrupted,
      is their reference. Slurm holds a requeued job for two minutes; the test releases it at
      once, as an admin can (``scontrol update StartTime=now``).
    * ``model.lr=0.05,1e30,0.1``: job #0 finishes; #1's loss becomes NaN in training; #2 is
      cancelled (``scancel``) while it runs. Jobs #0 and #2 wait at the end of their epoch while
      ``hold`` exists, so #2 is cancelled mid-run and #0 ends after it.
    """
    roots = tmp_path_factory.mktemp("slurm-sweep"), tmp_path_factory.mktemp("slurm-troubled")
    hold = roots[1] / "hold"
    hold.touch()
    procs = (_start(roots[0], mnist, slurm, "seed=1,2,1,1", f"trainer.max_epochs={EPOCHS}", *_slow(3)),
             _start(roots[1], mnist, slurm, "model.lr=0.05,1e30,0.1", "trainer.max_epochs=1",
                    *_slow(0, hold)))
    acted = False
    try:
        _requeue_after_first_epoch(slurm, Sweep(roots[0], None), procs[0])
        _cancel_when_validated(slurm, Sweep(roots[1], None), 2, procs[1])
        acted = True
    finally:
        hold.unlink()
        done = tuple(_finish(root, proc, kill=not acted) for root, proc in zip(roots, procs, strict=True))
    return done


#: Job of the sweep: how it is made to come back (the commands as a cluster's user or admin types them).
REQUEUES = {2: ["scontrol", "requeue"], 3: ["scancel", "--signal=USR2"]}


def _requeue_after_first_epoch(slurm: Any, sweep: Sweep, proc: subprocess.Popen) -> None:
    """Each job of ``REQUEUES`` made to come back as soon as its first epoch's checkpoint is
    written, then released from Slurm's hold."""
    waiting = dict(REQUEUES)

    def act() -> bool:
        for num, how in list(waiting.items()):
            if (sweep.dir / str(num) / "checkpoints" / "last.ckpt").is_file():
                slurm.run(*how, sweep.slurm_job(num))
                del waiting[num]
        return not waiting

    _wait("first epoch of the jobs to requeue", act, proc)
    for num in REQUEUES:
        job = sweep.slurm_job(num)
        _wait(f"requeued job #{num}", lambda job=job: slurm.state(job) == "PENDING", proc)
        slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")


def _cancel_when_validated(slurm: Any, sweep: Sweep, num: int, proc: subprocess.Popen) -> None:
    _wait(f"validated epoch of job #{num}", lambda: sweep.submitted() and any(
        "acc/val" in r.data.metrics for n, r in sweep.job_runs().items() if n == num), proc)
    job = sweep.slurm_job(num)
    slurm.run("scancel", job)
    _wait("end of the cancelled job", lambda: slurm.state(job) == "CANCELLED", proc)


@pytest.fixture(scope="module")
def sweep(sweeps) -> Sweep:
    return sweeps[0]


@pytest.fixture(scope="module")
def troubled_sweep(sweeps) -> Sweep:
    return sweeps[1]


# --- the sweep whose jobs all finish, one of them after a requeue ------------------------------


def test_each_job_goes_through_sbatch_and_its_run_nests_under_the_sweep(sweep, slurm):
    assert sweep.result.returncode == 0, sweep.tail()
    parent, runs = sweep.parent(), sweep.job_runs()
    assert parent.info.status == "FINISHED"
    assert sorted(runs) == [0, 1, 2, 3]
    assert [runs[n].data.params["seed"] for n in sorted(runs)] == ["1", "2", "1", "1"]
    for run in runs.values():
        assert run.info.status == "FINISHED"
        assert run.data.tags[PARENT_TAG] == parent.info.run_id
        assert 0 <= run.data.metrics["test/acc"] <= 1
    for num in runs:  # Slurm ran each job, in the partition asked for
        job = sweep.slurm_job(num)  # (its result is written before its process has exited)
        _wait(f"end of Slurm job {job}", lambda job=job: slurm.state(job) != "RUNNING")
        shown = slurm.run("squeue", "-h", "-t", "all", "-j", job, "-o", "%T %P %j").stdout.split()
        assert shown == ["COMPLETED", "debug", "train"], (job, shown)
    comparison = {a.path for a in sweep.client.list_artifacts(parent.info.run_id, "comparison")}
    assert {"comparison/comparison.html", "comparison/comparison.csv"} <= comparison
    ranked = (sweep.dir / "comparison" / "comparison.csv").read_text()
    assert all(run.info.run_id in ranked for run in runs.values())


def test_the_console_stays_quiet_without_accounting(sweep, slurm):
    assert slurm.run("sacct", check=False).returncode != 0  # no accounting on this cluster
    out = sweep.result.stdout + sweep.result.stderr
    for noise in ("sacct", "Bypassing", "WARNING", "Warning", "Traceback", "srun", "schema"):
        assert noise not in out, out[-3000:]


#: What the first start of each requeued job wrote when it stopped mid-training.
STOPPED_BY = {2: "Training stopped by SIGTERM",  # the project's SIGTERM handling
              3: "Requeued job"}  # submitit's, after the launcher's checkpoint()


@pytest.mark.parametrize("num", list(REQUEUES), ids=["scontrol-requeue", "usr2-time-limit"])
def test_a_requeued_job_resumes_its_own_run_and_ends_as_an_uninterrupted_one(sweep, num):
    assert sweep.result.returncode == 0, sweep.tail()
    runs = sweep.job_runs()  # one run per job: the requeued job continued its own
    requeued, reference = runs[num], runs[0]
    assert requeued.info.status == "FINISHED" and requeued.data.tags["slurm.restarts"] == "1"
    log = (sweep.dir / str(num) / "train.log").read_text()
    assert "Requeued by Slurm (restart 1): resuming from" in log and "last.ckpt" in log, log[-2000:]
    (job_folder,) = (sweep.dir / ".submitit").glob(f"*_{num}")  # submitit's logs of that job
    stopped = "".join(p.read_text() for p in job_folder.glob("*_log.*"))
    assert STOPPED_BY[num] in stopped, stopped[-3000:]
    assert stopped.count("`Trainer.fit` stopped") == 1, stopped[-3000:]  # only the restart ended fit
    for key in ("test/acc", "test/loss", "acc/val", "loss/train"):
        assert requeued.data.metrics[key] == reference.data.metrics[key], key
    ours, theirs = (torch.load(sweep.dir / str(n) / "checkpoints" / "last.ckpt", map_location="cpu",
                               weights_only=True)["state_dict"] for n in (num, 0))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


# --- the sweep with jobs that do not finish -------------------------------------------------


def test_a_sweep_with_unfinished_jobs_ends_and_reports_each_in_one_line(troubled_sweep):
    sweep = troubled_sweep
    assert sweep.result.returncode == 1, sweep.tail()
    assert "Traceback" not in sweep.result.stderr, sweep.tail()
    lines = [line for line in sweep.result.stderr.splitlines() if line.startswith("error: ")]
    assert [line.split(" (")[0] for line in lines] == ["error: sweep job #1", "error: sweep job #2"]
    nan, cancelled = lines
    runs = sweep.job_runs()
    assert "(lr=1e+30), Slurm job " in nan and "FAILED (MLflow run " in nan
    assert f"{runs[1].info.run_id} FAILED): Training stopped in epoch 1/" in nan
    assert "NaN or infinite" in nan and ". Log: " in nan
    assert "(lr=0.1), Slurm job " in cancelled
    assert f"ended CANCELLED (MLflow run {runs[2].info.run_id} KILLED). Log: " in cancelled
    log = Path(cancelled.split(". Log: ")[1])
    assert log.is_file() and "Training stopped by SIGTERM" in log.read_text()
    parent = sweep.parent().info.run_id
    assert f"1 of 3 sweep jobs finished, under MLflow run {parent}; compare them with: python " \
           f"compare.py runs={parent}" in sweep.result.stderr


def test_a_cancelled_job_ends_its_run_killed_and_the_sweep_follows_the_worst(troubled_sweep):
    runs = troubled_sweep.job_runs()
    assert runs[2].info.status == "KILLED"
    assert runs[0].info.status == "FINISHED"  # the job beside it is unaffected
    assert troubled_sweep.parent().info.status == "KILLED"  # worst child: KILLED over FAILED


def test_a_failing_job_ends_failed_with_its_reason(troubled_sweep):
    run = troubled_sweep.job_runs()[1]
    assert run.info.status == "FAILED"
    assert "training loss became NaN or infinite" in run.data.tags[FAILURE_TAG]


# --- a sweep Slurm would refuse ----------------------------------------------------------------


def test_a_partition_that_does_not_exist_stops_the_sweep_before_anything_is_recorded(slurm, mnist,
                                                                                    tmp_path):
    jobs_before = sorted(slurm.run("squeue", "-h", "-t", "all", "-o", "%i").stdout.split())
    result = subprocess.run(_command(tmp_path, mnist, "hydra.launcher.partition=nope", "seed=1,2"),
                            cwd=tmp_path, env=_env(slurm), capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    assert_one_paragraph(result, "hydra.launcher.partition", "nope", "sinfo",
                         "nothing was submitted or recorded")
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "multirun").exists()
    assert sorted(slurm.run("squeue", "-h", "-t", "all", "-o", "%i").stdout.split()) == jobs_before


def _multirun_config(tmp_path: Path) -> Any:
    return compose_config("hydra/launcher=submitit_slurm", f"hydra.sweep.dir={tmp_path}",
                          "hydra.job.name=train", out=tmp_path / "run")


# Hydra's own words about conf/hydra/launcher/submitit_slurm.yaml (mnist_mlp/__init__.py says why);
# pytest resets the package's filter for each test.
@pytest.mark.filterwarnings(r"ignore:\s*'hydra/launcher/submitit_slurm' is validated:UserWarning")
@pytest.mark.parametrize("case", ["no-slurm", "controller-down"])
def test_slurm_asked_for_where_there_is_none_stops_the_sweep_first(slurm, tmp_path, monkeypatch,
                                                                   capsys, case):
    """The check as train.py -m runs it, first of the sweep's callbacks (so nothing is recorded,
    as the partition test shows end to end): no sbatch on PATH, or a controller that is down."""
    from mnist_mlp.slurm.launcher import LauncherCheck

    config = _multirun_config(tmp_path)
    assert next(iter(config.hydra.callbacks)) == "launcher_check"
    if case == "no-slurm":
        monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch there
        needles = ["needs Slurm's sbatch", "not on PATH", "hydra/launcher=joblib"]
    else:
        monkeypatch.setenv("SLURM_CONF", str(slurm.without_controller(tmp_path)))
        needles = ["Slurm cannot be reached", "Unable to contact slurm controller", "sinfo"]
    with pytest.raises(SystemExit) as stop:
        LauncherCheck().on_multirun_start(config)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in [*needles, "nothing was submitted or recorded"]:
        assert needle in err, err
