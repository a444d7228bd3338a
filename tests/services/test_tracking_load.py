"""Load: an eight-job parallel sweep on a fresh SQLite store and on the team server (PostgreSQL).

Each job is a real train.py job (synthetic MNIST, one epoch) writing its run while others write
theirs. Every run must end FINISHED with all its metrics and artifacts, and hold only its own job's
values (``tests.helpers.runs.check_job``), named and grouped under its sweep; the console holds
no traceback. On the team server
the runs are the member's, artifacts go through the server, a job's evaluation lands beside it,
and the password is nowhere. The sweep's wall time is printed (``pytest -s``) for the docs.
"""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient

from tests.helpers.configs import quiet, store_overrides
from tests.helpers.data import data_overrides
from tests.helpers.processes import run_script, run_train
from tests.helpers.runs import artifacts, check_job, runs_in
from tests.helpers.servers import as_user

pytestmark = pytest.mark.slow
LRS, SEEDS = ("0.01", "0.02"), (1, 2, 3, 4)
JOBS = len(LRS) * len(SEEDS)
# Jobs at once. Eight at once need ~10 GB on top of the suite, each loky worker holding torch,
# Lightning and MLflow; four keep the 2-core CI machine's memory in bounds and still write the
# store from four processes while it is written by others.
N_JOBS = 4


def _sweep(synthetic_mnist, where: list[str]) -> float:
    """The sweep, run to its end; its wall time."""
    start = time.monotonic()
    result = run_train("-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={N_JOBS}",
                       f"model.lr={','.join(LRS)}", f"seed={','.join(map(str, SEEDS))}",
                       "trainer.max_epochs=1", *data_overrides(*synthetic_mnist), *quiet(), *where,
                       timeout=900)
    wall = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-3000:]
    # each job draws its report itself, quietly: no worker of a worker under loky's start method
    # (a traceback per job), no deprecation notice of Hydra's per composition
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "ConfigStore schema" not in result.stderr, result.stderr[-3000:]
    return wall


def _check_sweep(client: MlflowClient, experiment: str, tmp_path, wall: float, label: str):
    """The sweep's parent and its jobs, each checked; returns them."""
    (parent,) = runs_in(client, experiment, "sweep")
    jobs = runs_in(client, experiment, "train")
    assert parent.info.status == "FINISHED"
    assert sorted(j.info.run_name for j in jobs) == sorted(
        f"lr={lr},seed={seed}" for lr in LRS for seed in SEEDS)
    assert sorted(int(j.data.tags["sweep.job"]) for j in jobs) == list(range(JOBS))
    for job in jobs:
        assert job.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert job.data.tags["sweep.dir"] == parent.data.tags["sweep.dir"]
        assert job.data.tags["hydra.output_dir"].endswith(f"multirun/{job.data.tags['sweep.job']}")
        check_job(client, job, tmp_path)
    seconds = sorted((j.info.end_time - j.info.start_time) / 1000 for j in jobs)
    print(f"\nload {label}: {JOBS} jobs, n_jobs={N_JOBS}: sweep wall {wall:.1f} s; run durations "
          f"min {seconds[0]:.1f} / median {seconds[len(seconds) // 2]:.1f} / max {seconds[-1]:.1f} s")
    return parent, jobs


def test_eight_parallel_jobs_on_a_fresh_sqlite_store_each_finish_with_only_their_own_records(
        synthetic_mnist, tmp_path):
    # a fresh store: the sweep creates its schema before the jobs start
    wall = _sweep(synthetic_mnist, store_overrides(tmp_path, fresh=True))
    _check_sweep(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db"), "mnist-mlp", tmp_path, wall,
                 "sqlite")


def test_eight_parallel_jobs_and_an_evaluation_on_the_team_server(team_server, synthetic_mnist,
                                                                  tmp_path, monkeypatch):
    as_user(monkeypatch, team_server.user)
    experiment = "team-load"
    where = store_overrides(tmp_path, team_server.uri, experiment=experiment)
    wall = _sweep(synthetic_mnist, where)
    client = MlflowClient(team_server.uri)
    parent, jobs = _check_sweep(client, experiment, tmp_path, wall, "postgresql")
    for job in jobs:
        assert job.info.user_id == team_server.user[0]  # the server's user, not the OS account
    # artifacts went through the server into its --artifacts-destination
    ckpt = jobs[0].data.tags["best_checkpoint"]
    assert list(team_server.artifacts.rglob(f"{jobs[0].info.run_id}/artifacts/{ckpt}"))

    # evaluate.py run_id=: the checkpoint comes over HTTP, the report goes into a new nested run
    source = jobs[0]
    result = run_script("evaluate.py", f"run_id={source.info.run_id}",
                        f"hydra.run.dir={tmp_path}/evaluate", *data_overrides(*synthetic_mnist),
                        *where[:3])
    assert result.returncode == 0, result.stderr[-3000:]
    (evaluation,) = runs_in(client, experiment, "evaluate")
    assert evaluation.info.status == "FINISHED"
    assert evaluation.data.tags["mlflow.parentRunId"] == source.info.run_id
    assert evaluation.data.metrics["test/acc"] == source.data.metrics["test/acc"]
    assert {"report/report.html", "report/predictions.csv"} <= artifacts(client, evaluation.info.run_id)

    # the password reached the server through the environment only: in no param, tag or file
    password = team_server.user[1]
    for run in [parent, *jobs, evaluation]:
        run = client.get_run(run.info.run_id)
        assert not [k for k, v in {**run.data.params, **run.data.tags}.items() if password in v]
    for job in jobs:
        for name in ("config.yaml", "overrides.yaml"):  # as check_job downloaded them
            assert password not in (tmp_path / job.info.run_id / name).read_text()
