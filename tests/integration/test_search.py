"""An Optuna search through joblib's worker pool (``python train.py -m hparams_search=optuna
hydra/launcher=joblib``): trials two at a time in worker processes, each recorded, and the study
in its parent run. The in-process searches: tests/unit/test_search.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.helpers.processes import run_train
from tests.helpers.runs import artifacts
from tests.helpers.search import STUDY_FILES


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
