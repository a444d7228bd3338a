"""The session's trained run and its evaluation (fixtures ``trained_run`` and ``evaluated_run`` in
tests/conftest.py): what they are made of, for the tests that read them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.helpers.data import data_overrides

TRAINED_EPOCHS, TRAINED_LR = 2, 0.002  # slow enough that the synthetic test set keeps a few mistakes


@dataclass(frozen=True)
class TrainedRun:
    """A finished training run: where its data and outputs are, and its MLflow record."""

    data_dir: Path
    md5s: dict[str, str]
    out: Path  # hydra.run.dir: checkpoints/, report/
    client: object  # MlflowClient of its store
    run: object  # mlflow.entities.Run, as read back after the run ended
    overrides: tuple[str, ...]

    @property
    def report(self) -> Path:
        return self.out / "report"

    @property
    def best_checkpoint(self) -> Path:
        return self.out / self.run.data.tags["best_checkpoint"]

    @property
    def data(self) -> list[str]:
        return data_overrides(self.data_dir, self.md5s)


@dataclass(frozen=True)
class EvaluatedRun:
    report: Path
    console: str  # stdout and stderr
