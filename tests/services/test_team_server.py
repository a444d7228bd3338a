"""A team's tracking server: PostgreSQL behind ``mlflow server --app-name basic-auth`` (README "A team
tracking server").

train.py and evaluate.py run as subprocesses with the team member's credentials in the environment
only (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD); everything is read back over the
server's REST API. The servers come from the session fixture ``team_server`` (tests/servers.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import ROOT, data_overrides
from faults_helpers import assert_one_paragraph, quiet, run_train
from mlflow import MlflowClient
from tracking_helpers import artifacts, check_job, runs_in

from mnist_mlp.errors import UserError
from mnist_mlp.tracking import record, store

pytestmark = pytest.mark.slow
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def server_overrides(tmp_path: Path, uri: str, experiment: str) -> list[str]:
    """Overrides a team member gives train.py: the server's address, no artifact location (the
    server stores artifacts), an experiment; no credentials."""
    return [f"logger.tracking_uri={uri}", "logger.artifact_location=null",
            f"logger.experiment_name={experiment}", f"hydra.run.dir={tmp_path}/outputs",
            f"hydra.sweep.dir={tmp_path}/multirun"]


def as_user(monkeypatch, user: tuple[str, str] | None) -> None:
    """This process and the train.py it starts authenticate as ``user`` (None: no credentials)."""
    for key in CREDENTIALS:
        monkeypatch.delenv(key, raising=False)
    if user is not None:
        monkeypatch.setenv(CREDENTIALS[0], user[0])
        monkeypatch.setenv(CREDENTIALS[1], user[1])


def test_a_parallel_sweep_and_its_evaluation_on_the_team_server(team_server, synthetic_mnist,
                                                              tmp_path, monkeypatch):
    as_user(monkeypatch, team_server.user)
    data_dir, md5s = synthetic_mnist
    experiment = "team-sweep"
    result = run_train("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.lr=0.01,0.1",
                       "trainer.max_epochs=1", *data_overrides(data_dir, md5s), *quiet(),
                       *server_overrides(tmp_path, team_server.uri, experiment), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(team_server.uri)
    (parent,) = runs_in(client, experiment, "sweep")
    jobs = runs_in(client, experiment, "train")
    assert parent.info.status == "FINISHED"
    assert sorted(j.info.run_name for j in jobs) == ["lr=0.01", "lr=0.1"]
    for job in jobs:
        assert job.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert job.info.user_id == team_server.user[0]  # the server's user, not the OS account
        check_job(client, job, tmp_path)
    # artifacts went through the server into its --artifacts-destination
    ckpt = jobs[0].data.tags["best_checkpoint"]
    assert list(team_server.artifacts.rglob(f"{jobs[0].info.run_id}/artifacts/{ckpt}"))

    # evaluate.py run_id=: the checkpoint comes over HTTP, the report goes into a new nested run
    source = jobs[0]
    result = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), f"run_id={source.info.run_id}",
         f"hydra.run.dir={tmp_path}/evaluate", *data_overrides(data_dir, md5s),
         *server_overrides(tmp_path, team_server.uri, experiment)[:3]],
        capture_output=True, text=True, timeout=400, env={**os.environ, "MPLBACKEND": "Agg"},
    )
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
        for name in ("config.yaml", "overrides.yaml"):
            assert password not in (tmp_path / job.info.run_id / name).read_text()


def test_no_or_wrong_credentials_are_refused_and_train_stops_before_training(
    team_server, synthetic_mnist, tmp_path, monkeypatch
):
    url = f"{team_server.uri}/api/2.0/mlflow/experiments/search"
    user, password = team_server.user
    for auth in (None, (user, password + "x"), ("mallory", password)):
        assert requests.get(url, params={"max_results": 1}, auth=auth, timeout=60).status_code == 401
    assert requests.get(url, params={"max_results": 1}, auth=(user, password), timeout=60).ok

    data_dir, md5s = synthetic_mnist
    experiment = "team-refused"
    overrides = [*data_overrides(data_dir, md5s), *quiet(),
                 *server_overrides(tmp_path, team_server.uri, experiment)]
    as_user(monkeypatch, None)
    single = run_train("trainer.max_epochs=1", *overrides)
    assert_one_paragraph(single, f"logger.tracking_uri={team_server.uri} refused the request",
                         "HTTP 401", "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    as_user(monkeypatch, (user, password + "x"))
    sweep = run_train("-m", "model.lr=0.01,0.1", *overrides)  # a sweep stops before its first job
    assert_one_paragraph(sweep, "HTTP 401", f"MLFLOW_TRACKING_USERNAME={user} was not accepted")
    assert password not in sweep.stderr
    assert not [r for r in (single, sweep) if "Epoch 0" in r.stdout + r.stderr]
    assert not list(tmp_path.rglob("*.ckpt"))
    as_user(monkeypatch, team_server.user)
    assert MlflowClient(team_server.uri).get_experiment_by_name(experiment) is None  # nothing made


def test_a_member_who_may_only_read_an_experiment_is_refused_before_training(
    team_server, synthetic_mnist, tmp_path, monkeypatch
):
    """READ (every member's default on others' experiments) passes the store check but creates no
    run: train.py, a sweep and evaluate.py stop with the 403 paragraph and record nothing."""
    as_user(monkeypatch, team_server.user)
    owner = MlflowClient(team_server.uri)
    experiment = "team-read-only"
    experiment_id = owner.create_experiment(experiment)
    best = f"{record.CKPT_DIR}/best.ckpt"
    source = owner.create_run(experiment_id, tags={record.BEST_CKPT_TAG: best}).info.run_id
    (tmp_path / "best.ckpt").write_bytes(b"never loaded: the evaluation run is refused first")
    owner.log_artifact(source, str(tmp_path / "best.ckpt"), record.CKPT_DIR)

    reader = team_server.create_user("reader")
    as_user(monkeypatch, reader)
    data_dir, md5s = synthetic_mnist
    overrides = [*data_overrides(data_dir, md5s), *quiet(),
                 *server_overrides(tmp_path, team_server.uri, experiment)]
    refused = ("HTTP 403", "user reader may not use")
    for result in (run_train("trainer.max_epochs=1", *overrides),
                   run_train("-m", "model.lr=0.01,0.1", *overrides)):
        assert_one_paragraph(result, *refused, f"logger.experiment_name={experiment}. Ask the "
                             "server's admin for EDIT permission")
        assert "Epoch 0" not in result.stdout + result.stderr
    evaluation = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), f"run_id={source}",
         f"hydra.run.dir={tmp_path}/evaluate", *data_overrides(data_dir, md5s),
         *server_overrides(tmp_path, team_server.uri, experiment)[:3]],
        capture_output=True, text=True, timeout=400, env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert_one_paragraph(evaluation, *refused, f"experiment {experiment_id}, where the evaluation "
                         f"of run {source} is recorded")
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))
    assert [r.info.run_id for r in owner.search_runs([experiment_id])] == [source]


def test_credentials_inside_the_tracking_uri_are_refused_unsent():
    with pytest.raises(UserError, match="MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD") as err:
        store.open_store("http://alice:s3cret-pw@127.0.0.1:9/", "mnist-mlp")
    assert "s3cret-pw" not in str(err.value)


def test_a_refused_experiment_names_the_user_and_the_experiment(monkeypatch):
    """403 (the member lacks permission on the experiment); the servers here grant READ to all, so
    the refusal is MLflow's own exception raised by a stand-in client."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    class Refusing:
        def __init__(self, uri: str) -> None:
            pass

        def get_experiment_by_name(self, name: str):
            raise MlflowException("Permission denied", error_code=PERMISSION_DENIED)

    monkeypatch.setattr(mlflow, "MlflowClient", Refusing)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    with pytest.raises(UserError, match=r"HTTP 403.*user bob may not use "
                       r"logger.experiment_name=shared.*EDIT permission"):
        store.open_store("http://127.0.0.1:9", "shared")
