"""Optuna search through train.py (``-m hparams_search=optuna``) on the synthetic MNIST.

The searches run in-process (Hydra's basic launcher runs each trial in this process) where the
process itself does not matter; through a subprocess where the launcher is joblib's worker pool and
where two searches must run at once on one study.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import optuna
import pytest
from conftest import ROOT, data_overrides, store_overrides
from faults_helpers import quiet, run_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow import MlflowClient
from optuna.trial import TrialState
from tracking_helpers import artifacts, runs_in

from mnist_mlp.search.study import open_storage
from mnist_mlp.search.sweeper import OptunaSearch, TrialFailed, TrialTask
from mnist_mlp.tracking.store import open_store

STUDY_FILES = {"study/trials.csv", "study/study.md", "study/optimization_history.png",
               "study/param_importances.png", "study/intermediate_values.png"}


class Search:
    """One test's store, study storage and data; ``run`` is ``train.py -m hparams_search=optuna``."""

    def __init__(self, tmp_path: Path, data: tuple[Path, dict[str, str]]) -> None:
        self.tmp = tmp_path
        self.storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
        self.base = [*data_overrides(*data), *store_overrides(tmp_path), *quiet(),
                     "logger.system_metrics=false", f"hydra.sweeper.storage={self.storage}",
                     "trainer.max_epochs=1"]
        self.count = 0

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.tmp}/mlruns/mlflow.db")  # creates the store: not before

    def args(self, *overrides: str) -> list[str]:
        """``~logger`` among ``overrides``: no MLflow (the base's logger keys are left out)."""
        self.count += 1
        base = [o for o in self.base if "~logger" not in overrides or not o.startswith("logger.")]
        return ["-m", "hparams_search=optuna", *base,
                f"hydra.sweep.dir={self.tmp}/multirun/{self.count}", *overrides]

    def run(self, *overrides: str) -> None:
        """In this process, as ``python train.py -m ...``; SystemExit propagates (exit 2)."""
        import train

        GlobalHydra.instance().clear()
        # Imported, train.py's config_path would be looked up as a package: name the folder.
        argv = ["train.py", f"--config-path={ROOT / 'conf'}", *self.args(*overrides)]
        with mock.patch.object(sys, "argv", argv):
            train.main()

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage)

    def parents(self) -> list:
        return runs_in(self.client, "mnist-mlp", "sweep")

    def trial_runs(self, parent) -> dict[int, object]:
        exp = parent.info.experiment_id
        runs = self.client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        return {int(r.data.tags["optuna.trial"]): r for r in runs}


@pytest.fixture
def search(tmp_path, synthetic_mnist) -> Search:
    return Search(tmp_path, synthetic_mnist)


def test_a_search_through_joblib_records_its_trials_and_the_study(search, tmp_path):
    result = run_train(*search.args("hydra/launcher=joblib", "hydra.sweeper.n_trials=4",
                                    "hydra.sweeper.n_jobs=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    (parent,) = search.parents()
    name = parent.data.tags["optuna.study"]
    study = search.study(name)
    assert parent.info.status == "FINISHED" and parent.info.run_name == f"search {name}"
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4

    runs = search.trial_runs(parent)
    assert sorted(runs) == [0, 1, 2, 3]
    for trial in study.trials:
        run = runs[trial.number]
        assert run.info.status == "FINISHED" and run.info.run_name == f"trial {trial.number}"
        assert run.data.tags["optuna.state"] == "COMPLETE" and run.data.tags["optuna.study"] == name
        assert float(run.data.params["model.lr"]) == trial.params["model.lr"]
        assert int(run.data.params["data.batch_size"]) == trial.params["data.batch_size"]
        assert run.data.metrics["acc/val"] == pytest.approx(trial.value)
        assert "report/classification_report.json" in artifacts(search.client, run.info.run_id)
    # Two at a time: each batch's second trial started before its first ended.
    for first, second in ((0, 1), (2, 3)):
        assert runs[second].info.start_time < runs[first].info.end_time

    best = study.best_trial
    assert parent.data.metrics["best/acc/val"] == best.value
    assert {k.removeprefix("best."): v for k, v in parent.data.params.items()} == {
        k: str(v) for k, v in best.params.items()}
    assert parent.data.tags["optuna.best_trial"] == str(best.number)
    assert parent.data.tags["optuna.best_run"] == runs[best.number].info.run_id
    assert parent.data.metrics["trials/complete"] == 4 and parent.data.metrics["trials/pruned"] == 0
    logged = artifacts(search.client, parent.info.run_id)
    assert STUDY_FILES | {"comparison/comparison.csv"} <= logged
    table = search.client.download_artifacts(parent.info.run_id, "study/trials.csv", str(tmp_path))
    rows = Path(table).read_text().splitlines()
    assert len(rows) == 5 and "params_model.lr" in rows[0]


def _params(study: optuna.Study) -> list[dict]:
    return [t.params for t in study.trials]


def test_the_same_seed_gives_the_same_trials_and_a_resumed_study_adds_new_ones(search, capsys):
    # The second trial comes from TPE's model of the first; ~logger: only the study matters here.
    seeded = ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
              "hydra.sweeper.sampler.n_startup_trials=1", "~logger"]
    search.run(*seeded, "hydra.sweeper.sampler.seed=7", "hydra.sweeper.study_name=a")
    search.run(*seeded, "hydra.sweeper.sampler.seed=7", "hydra.sweeper.study_name=b")
    search.run(*seeded[1:], "hydra.sweeper.n_trials=1", "hydra.sweeper.sampler.seed=8",
               "hydra.sweeper.study_name=c")
    a, b, c = (_params(search.study(n)) for n in "abc")
    assert len(a) == 2 and a == b
    assert c[0] != a[0]

    search.run("hydra.sweeper.n_trials=1", "hydra.sweeper.sampler.seed=7",
               "hydra.sweeper.study_name=a")
    resumed = search.study("a")
    assert [t.number for t in resumed.trials] == [0, 1, 2]
    assert _params(resumed)[:2] == a
    assert _params(resumed)[2] not in a  # the seed moved on: no replay of the first trial
    (parent,) = search.parents()
    assert parent.data.tags["optuna.study"] == "a" and parent.data.metrics["trials/total"] == 3
    assert sorted(search.trial_runs(parent)) == [2]

    # A study cannot go on with other choices for a key, nor the other way round.
    for refused, needles in ((["model/scheduler=choice(none,cosine,plateau)"],
                              ["model/scheduler", "keep the study's choices"]),
                             (["hydra.sweeper.direction=minimize"], ["maximizes", "minimize"])):
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            search.run("hydra.sweeper.study_name=a", *refused)
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and all(n in err for n in needles), err[-2000:]
    assert len(search.study("a").trials) == 3 and len(search.parents()) == 1


def test_a_trial_with_a_hopeless_learning_rate_is_pruned_and_still_tested(search):
    search.run("~hydra.sweeper.params", "model.lr=choice(0.000001,0.2)",
               "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
               "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=0.5",
               "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1", "trainer.max_epochs=2",
               "hydra.sweeper.study_name=p")
    study = search.study("p")
    (parent,) = search.parents()
    runs = search.trial_runs(parent)
    lrs = {t.number: t.params["model.lr"] for t in study.trials}
    assert set(lrs.values()) == {0.000001, 0.2}, lrs  # the seed gives both
    for trial in study.trials:
        run, hopeless = runs[trial.number], lrs[trial.number] < 0.01
        epochs = len(search.client.get_metric_history(run.info.run_id, "acc/val"))
        assert trial.state == (TrialState.PRUNED if hopeless else TrialState.COMPLETE)
        assert run.data.tags["optuna.state"] == trial.state.name
        assert epochs == (1 if hopeless else 2)  # stopped after the first epoch
        assert trial.user_attrs.get("pruned_at_epoch") == (1 if hopeless else None)
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))  # epochs from 1
        assert run.info.status == "FINISHED" and "test/acc" in run.data.metrics
    assert parent.data.metrics["trials/pruned"] == 1

    # In its last epoch a trial completes: stopping it there would save nothing.
    search.run("~hydra.sweeper.params", "model.lr=choice(0.000001)",
               "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=0.5",
               "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=last", "~logger")
    (trial,) = search.study("last").trials
    assert trial.state == TrialState.COMPLETE and trial.value < 0.5


def test_a_failed_trial_is_told_fail_and_too_many_stop_the_search(search, capsys):
    # data.val_size=5000 passes the config checks but not the 600 synthetic training images.
    failing = ["~hydra.sweeper.params", "data.val_size=choice(5000)", "hydra.sweeper.n_jobs=1"]
    search.run(*failing, "hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=1.0",
               "hydra.sweeper.study_name=tolerated")
    assert [t.state for t in search.study("tolerated").trials] == [TrialState.FAIL] * 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        search.run(*failing, "hydra.sweeper.n_trials=3", "hydra.sweeper.study_name=stopped")
    assert stopped.value.code == 2
    assert [t.state for t in search.study("stopped").trials] == [TrialState.FAIL]  # not 3
    err = capsys.readouterr().err
    assert "data.val_size=5000 must be between 1 and" in err and "Traceback" not in err
    assert "error: 1 of the 1 trials run so far failed" in err
    assert "hydra.sweeper.max_failure_rate=0.5" in err.splitlines()[-1]


def test_exit_status_2_fails_the_trial_and_any_other_exit_stops_the_search():
    def exits(code):
        return TrialTask(lambda cfg: sys.exit(code))

    with pytest.raises(TrialFailed):
        exits(2)(None)
    for code in (1, 130, 143):  # Ctrl-C inside and outside fit, SIGTERM
        with pytest.raises(SystemExit):
            exits(code)(None)


def test_a_batch_cut_short_leaves_no_trial_running_in_the_study(tmp_path):
    """Ctrl-C (or a launcher that raises) while a batch runs: its trials are told FAIL."""

    class Interrupted:
        def launch(self, job_overrides, initial_job_idx):
            raise KeyboardInterrupt

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", ["hparams_search=optuna", "~logger", "hydra.sweeper.n_jobs=2",
                                f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db",
                                "hydra.sweeper.study_name=cut", f"hydra.sweep.dir={tmp_path}/sweep"],
                      return_hydra_config=True)
    with pytest.raises(KeyboardInterrupt):
        OptunaSearch(cfg, Interrupted())._sweep([])
    study = optuna.load_study(study_name="cut", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2


BAD_INPUT = [
    (["model.lrr=interval(0.01,0.3)"], ["model.lrr", "not a key of the training config"]),
    (["model/scheduler=choice(none,cosinex)"], ["model/scheduler", "cosinex", "Available options"]),
    (["model/optimizer=choice(sgd,adam)"],  # Adam has no momentum, which the default space searches
     ["model.optimizer.momentum is not a key", "model/optimizer=adam)"]),
    (["model.net=choice(1,2)"], ["model.net", "names a config node, not a value"]),
    (["model.lr=interval(0.3,0.01)"], ["model.lr", "low end 0.3 above its high end 0.01"]),
    (["model.lr=tag(log,interval(0,0.3))"], ["model.lr", "log scale", "both ends > 0"]),
    (["model.net.dropout1=interval(0,1.5)"], ["model.net.dropout1", "reaches 1.5", "[0, 1)"]),
    (["hydra.sweeper.sampler._target_=optuna.samplers.Nope"],
     ["hydra.sweeper.sampler._target_", "not an Optuna sampler", "hydra/sweeper/sampler="]),
    (["hydra/sweeper/pruner=threshold"], ["hydra.sweeper.pruner", "lower or upper"]),
    (["hydra.sweeper.storage=postgresql+psycopg2://me:secret@127.0.0.1/optuna"],
     ["hydra.sweeper.storage", "password", "PGPASSWORD"]),
]


@pytest.mark.parametrize(("overrides", "needles"), BAD_INPUT, ids=lambda v: str(v)[:40])
def test_bad_search_input_is_one_paragraph_before_anything_is_recorded(search, tmp_path, capsys,
                                                                       overrides, needles):
    with pytest.raises(SystemExit) as stopped:
        search.run(*overrides)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    paragraph = err[err.index("error: "):].strip()
    assert "\n" not in paragraph and "secret" not in paragraph
    for needle in needles:
        assert needle in paragraph, paragraph
    assert not (tmp_path / "mlruns").exists()  # no MLflow store, no study storage


def _wait_for_a_trial(url: str, name: str, other: subprocess.Popen, timeout: float = 240) -> None:
    storage, deadline = open_storage(url), time.monotonic() + timeout
    while name not in optuna.get_all_study_names(storage) or not optuna.load_study(
            study_name=name, storage=storage).trials:
        assert other.poll() is None, other.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the other search started no trial"
        time.sleep(0.5)


def test_two_searches_at_once_join_one_study_on_postgresql(search, tmp_path, monkeypatch):
    """As two machines would: one search in a subprocess, one in this process, at the same time."""
    import servers

    bin_dir = servers.postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed: `apt-get install postgresql` (.ci/run does)")
    # The store and experiment once, not by both searches at once.
    open_store(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "mnist-mlp", f"{tmp_path}/mlruns/artifacts")
    with servers.stopped_on_sigterm(), servers.postgres(bin_dir) as pg:
        pg.createdb("optuna")
        monkeypatch.setenv("PGPASSWORD", pg.password)  # not in the URL: it is recorded
        args = [f"hydra.sweeper.storage={pg.uri('optuna')}", "hydra.sweeper.study_name=shared",
                "hydra.sweeper.n_trials=1"]
        other = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *search.args(*args)],
                                 cwd=ROOT, env={**pg.client_env(), "MPLBACKEND": "Agg"},
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
