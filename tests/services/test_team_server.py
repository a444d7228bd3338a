"""A team's tracking server: PostgreSQL behind ``mlflow server --app-name basic-auth`` (README "A team
tracking server").

train.py and evaluate.py run as subprocesses with the team member's credentials in the environment
only (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD); everything is read back over the
server's REST API. The servers come from the session fixture ``team_server`` (tests/conftest.py);
the eight-job sweep on it is tests/services/test_tracking_load.py. A member's refusals here.
"""

from __future__ import annotations

import pytest
import requests
from mlflow import MlflowClient

from mnist_mlp.tracking import record
from tests.helpers.configs import quiet, store_overrides
from tests.helpers.data import data_overrides
from tests.helpers.processes import assert_one_paragraph, run_script, run_train
from tests.helpers.servers import as_user

pytestmark = pytest.mark.slow


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
                 *store_overrides(tmp_path, team_server.uri, experiment=experiment)]
    as_user(monkeypatch, None)
    single = run_train("trainer.max_epochs=1", *overrides)
    assert_one_paragraph(single, f"logger.tracking_uri={team_server.uri} refused the request",
                         "HTTP 401", "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    as_user(monkeypatch, (user, password + "x"))
    sweep = run_train("-m", "model.lr=0.01,0.1", *overrides)  # a sweep stops before its first job
    assert_one_paragraph(sweep, "HTTP 401", f"MLFLOW_TRACKING_USERNAME={user} was not accepted")
    assert password not in sweep.stderr
    assert not [r for r in (single, sweep) if "Epoch 1" in r.stdout + r.stderr]
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
                 *store_overrides(tmp_path, team_server.uri, experiment=experiment)]
    refused = ("HTTP 403", "user reader may not use")
    for result in (run_train("trainer.max_epochs=1", *overrides),
                   run_train("-m", "model.lr=0.01,0.1", *overrides)):
        assert_one_paragraph(result, *refused, f"logger.experiment_name={experiment}. Ask the "
                             "server's admin for EDIT permission")
        assert "Epoch 1" not in result.stdout + result.stderr
    evaluation = run_script("evaluate.py", f"run_id={source}", f"hydra.run.dir={tmp_path}/evaluate",
                            *data_overrides(data_dir, md5s),
                            *store_overrides(tmp_path, team_server.uri, experiment=experiment)[:3])
    assert_one_paragraph(evaluation, *refused, f"experiment {experiment_id}, where the evaluation "
                         f"of run {source} is recorded")
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))
    assert [r.info.run_id for r in owner.search_runs([experiment_id])] == [source]
