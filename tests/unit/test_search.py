"""Optuna search through train.py (``-m hparams_search=optuna``) in this process (Hydra's basic
launcher runs each trial here): seeds and resuming, pruning, failed trials, a batch cut short, bad
search input (mnist_mlp/search). Through joblib's worker pool: tests/integration/test_search.py;
two searches on one PostgreSQL study: tests/services/test_search.py."""

from __future__ import annotations

import sys

import optuna
import pytest
from optuna.trial import TrialState

from mnist_mlp.search.sweeper import OptunaSearch, TrialFailed, TrialTask
from tests.helpers.configs import compose_config


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

    cfg = compose_config("hparams_search=optuna", "~logger", "hydra.sweeper.n_jobs=2",
                         f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db",
                         "hydra.sweeper.study_name=cut", f"hydra.sweep.dir={tmp_path}/sweep",
                         out=tmp_path / "run")
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
