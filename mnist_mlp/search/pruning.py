"""A trial's job reports its validation metric to the study each epoch and stops when Optuna prunes it.

optuna-integration's ``PyTorchLightningPruningCallback`` does the reporting too, but it stops a
pruned trial by raising ``TrialPruned`` inside ``fit``: Lightning then ends the MLflow run FAILED,
no test or report follows and the Hydra job fails with a traceback. Here a pruned trial stops as
``EarlyStopping`` stops a run (``trainer.should_stop``): the best checkpoint is tested, the report
written and the run ends FINISHED, tagged ``optuna.state=PRUNED`` by the sweeper, which tells the
study PRUNED because this callback left the epoch in the trial's user attributes.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import Callback

from mnist_mlp import ddp, epochs
from mnist_mlp.errors import UserError
from mnist_mlp.search.record import STUDY_TAG, TRIAL_TAG
from mnist_mlp.search.study import PRUNED_ATTR, open_storage, trial_of
from mnist_mlp.tracking.record import RUN_NAME_TAG

log = logging.getLogger(__name__)


def _mlflow(trainer: Any) -> Any | None:
    from lightning.pytorch.loggers import MLFlowLogger

    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


class OptunaPruning(Callback):
    """Reports ``monitor`` after every validation epoch to trial ``trial`` of the study, the step
    being the epoch as a person reads it (from 1, ``mnist_mlp.epochs``).

    ``trial=None`` (a run that is not a search trial): does nothing. Only rank 0 talks to the
    study; under DDP its decision is broadcast so that every rank stops at the same epoch.
    """

    def __init__(self, trial: int | None, study_name: str | None, storage: str, pruner: Any,
                 monitor: str) -> None:
        self.number = trial
        self.study_name = study_name
        self.storage_url = storage
        self.pruner = pruner
        self.monitor = monitor
        self.trial: Any = None
        self.pruned_at: int | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.number is None or not ddp.is_rank_zero():
            return
        self.trial = trial_of(open_storage(self.storage_url), self.study_name, self.number,
                              self.pruner)
        logger = _mlflow(trainer)
        if logger is not None:
            # The run's name too: train.py would name it after all of the job's overrides.
            for key, value in ((TRIAL_TAG, self.number), (STUDY_TAG, self.study_name),
                               (RUN_NAME_TAG, f"trial {self.number}")):
                logger.experiment.set_tag(logger.run_id, key, str(value))

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.number is None or trainer.sanity_checking:
            return
        prune = False
        if self.trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                raise UserError(
                    f"optimized_metric={self.monitor} was not logged in epoch {epochs.of(trainer)}, "
                    f"so the search cannot rank or prune this trial: set optimized_metric to one of "
                    f"{', '.join(sorted(trainer.callback_metrics))}.")
            epoch = epochs.number(trainer.current_epoch)
            self.trial.report(float(value), step=epoch)
            # After the last epoch nothing is left to save: the trial completes.
            last = 0 < (trainer.max_epochs or 0) <= epoch
            prune = not last and self.trial.should_prune()
        prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            self.pruned_at = epochs.number(trainer.current_epoch)
            if self.trial is not None:
                self.trial.set_user_attr(PRUNED_ATTR, self.pruned_at)
            log.info("Optuna's pruner stopped trial %s after epoch %d on its %s; the best "
                     "checkpoint is tested as in any run.", self.number, self.pruned_at,
                     self.monitor)
            trainer.should_stop = True
