"""Fixtures of the whole-process tests: one train.py run whose console and store tests read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.configs import store_overrides
from tests.helpers.data import data_overrides
from tests.helpers.processes import run_train
from tests.helpers.runs import runs_in
from tests.helpers.trained import TRAINED_EPOCHS, TRAINED_LR


@dataclass(frozen=True)
class TrainProcess:
    tmp: Path  # outputs/ (hydra.run.dir), mlruns/
    log: str  # stdout and stderr, in the order a log file gets them
    client: object
    run: object
    data: list[str]


@pytest.fixture(scope="session")
def train_process(synthetic_mnist, tmp_path_factory) -> TrainProcess:
    """``python train.py`` as a user runs it (default callbacks and console; stdout and stderr to a
    pipe, as in CI or ``> train.log``): the settings of ``trained_run`` (its model registered too,
    system metrics at their default interval), as a process."""
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("train-process")
    data = data_overrides(*synthetic_mnist)
    proc = run_train(f"trainer.max_epochs={TRAINED_EPOCHS}", f"model.lr={TRAINED_LR}",
                     "logger.registered_model_name=mnist-mlp-test", *data, *store_overrides(tmp),
                     merge_stderr=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    client = MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")
    (run,) = runs_in(client, "mnist-mlp", "train")
    return TrainProcess(tmp, proc.stdout, client, run, data)
