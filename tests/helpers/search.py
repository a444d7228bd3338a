"""Optuna searches for the tests: ``train.py -m hparams_search=optuna`` on the synthetic MNIST,
with its own store, study storage and sweep folders under a test's ``tmp_path`` (fixture
``search``), run in this process or given to a process as its arguments."""

from __future__ import annotations

from pathlib import Path

import optuna
from mlflow import MlflowClient

from tests.helpers.configs import quiet, store_overrides, train_main
from tests.helpers.data import data_overrides
from tests.helpers.runs import runs_in

STUDY_FILES = {"study/trials.csv", "study/study.md", "study/optimization_history.png",
               "study/param_importances.png", "study/intermediate_values.png"}


class Search:
    """One test's store, study storage and data; ``run`` is ``train.py -m hparams_search=optuna``."""

    def __init__(self, tmp_path: Path, data: tuple[Path, dict[str, str]]) -> None:
        self.tmp = tmp_path
        self.storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
        self.base = [*data_overrides(*data), *store_overrides(tmp_path, fresh=True), *quiet(),
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
        train_main(*self.args(*overrides))

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage)

    def parents(self) -> list:
        return runs_in(self.client, "mnist-mlp", "sweep")

    def trial_runs(self, parent) -> dict[int, object]:
        exp = parent.info.experiment_id
        runs = self.client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        return {int(r.data.tags["optuna.trial"]): r for r in runs}
