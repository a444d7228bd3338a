"""Two Optuna searches at once on one study in PostgreSQL (the session's team server's
database), as two machines would run them."""

from __future__ import annotations

import subprocess
import time

import optuna
from optuna.trial import TrialState

from mnist_mlp.search.study import open_storage
from mnist_mlp.tracking.store import open_store
from tests.helpers.configs import ROOT
from tests.helpers.processes import command, script_env


def _wait_for_a_trial(url: str, name: str, other: subprocess.Popen, timeout: float = 240) -> None:
    storage, deadline = open_storage(url), time.monotonic() + timeout
    while name not in optuna.get_all_study_names(storage) or not optuna.load_study(
            study_name=name, storage=storage).trials:
        assert other.poll() is None, other.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the other search started no trial"
        time.sleep(0.5)


def test_two_searches_at_once_join_one_study_on_postgresql(search, tmp_path, monkeypatch,
                                                          team_server):
    """As two machines would: one search in a subprocess, one in this process, at the same time."""
    pg = team_server.postgres
    # The store and experiment once, not by both searches at once.
    open_store(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "mnist-mlp", f"{tmp_path}/mlruns/artifacts")
    pg.createdb("optuna")
    monkeypatch.setenv("PGPASSWORD", pg.password)  # not in the URL: it is recorded
    args = [f"hydra.sweeper.storage={pg.uri('optuna')}", "hydra.sweeper.study_name=shared",
            "hydra.sweeper.n_trials=1"]
    other = subprocess.Popen(command("train.py", *search.args(*args)), cwd=ROOT,
                             env=script_env({"PGPASSWORD": pg.password}),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_a_trial(pg.uri("optuna"), "shared", other)
        search.run(*args)  # joins the study while the other search runs (or has run) its trial
        _, err = other.communicate(timeout=300)
    finally:
        other.kill()
    assert other.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=pg.uri("optuna"))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    parents = search.parents()
    assert len(parents) == 2
    numbers = [sorted(search.trial_runs(p)) for p in parents]
    assert sorted(numbers[0] + numbers[1]) == [0, 1]  # one trial each, numbered by the study
    assert max(p.data.metrics["trials/total"] for p in parents) == 2  # the later one saw both
