"""Load: an eight-job parallel sweep on the default SQLite store and on the team server (PostgreSQL).

Each job is a real train.py job (synthetic MNIST, one epoch) writing its run while seven others
write theirs. Every run must end FINISHED with all its metrics and artifacts, and hold only its own
job's values (``tracking_helpers.check_job``). The sweep's wall time is printed (``pytest -s``) for
README "A team tracking server".
"""

from __future__ import annotations

import time

import pytest
from conftest import data_overrides, store_overrides
from faults_helpers import quiet, run_train
from mlflow import MlflowClient
from test_team_server import as_user, server_overrides
from tracking_helpers import check_job, runs_in

pytestmark = pytest.mark.slow
JOBS = 8  # model.lr x seed below
# Jobs at once. Eight at once (measured: README "A team tracking server") need ~10 GB on top of the
# suite, each loky worker holding torch, Lightning and MLflow; four keep the 2-core CI machine's
# memory in bounds and still write the store from four processes while it is written by others.
N_JOBS = 4


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_eight_parallel_jobs_each_finish_with_only_their_own_metrics_and_artifacts(
    backend, request, synthetic_mnist, tmp_path, monkeypatch
):
    if backend == "sqlite":  # a fresh store: the sweep creates its schema before the jobs start
        uri, where = f"sqlite:///{tmp_path}/mlruns/mlflow.db", store_overrides(tmp_path)
    else:
        server = request.getfixturevalue("team_server")
        as_user(monkeypatch, server.user)
        uri, where = server.uri, server_overrides(tmp_path, server.uri, "team-load")
    data_dir, md5s = synthetic_mnist
    start = time.monotonic()
    result = run_train("-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={N_JOBS}",
                       "model.lr=0.01,0.02", "seed=1,2,3,4", "trainer.max_epochs=1",
                       *data_overrides(data_dir, md5s), *quiet(), *where, timeout=900)
    wall = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(uri)
    experiment = "team-load" if backend == "postgresql" else "mnist-mlp"
    (parent,) = runs_in(client, experiment, "sweep")
    jobs = runs_in(client, experiment, "train")
    assert parent.info.status == "FINISHED"
    assert sorted(j.info.run_name for j in jobs) == sorted(
        f"lr={lr},seed={seed}" for lr in ("0.01", "0.02") for seed in (1, 2, 3, 4))
    assert sorted(int(j.data.tags["sweep.job"]) for j in jobs) == list(range(JOBS))
    for job in jobs:
        assert job.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert job.data.tags["hydra.output_dir"].endswith(f"multirun/{job.data.tags['sweep.job']}")
        check_job(client, job, tmp_path)
    seconds = sorted((j.info.end_time - j.info.start_time) / 1000 for j in jobs)
    print(f"\nload {backend}: {JOBS} jobs, n_jobs={N_JOBS}: sweep wall {wall:.1f} s; run durations "
          f"min {seconds[0]:.1f} / median {seconds[len(seconds) // 2]:.1f} / max {seconds[-1]:.1f} s")
